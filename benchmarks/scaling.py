"""How the pruning pass grows: seconds and peak memory growth against calibration tokens (16, 64, 256
windows of 128) and against model size (SmolLM2-135M, Gemma 3 270M), with the fitted growth exponent
(the slope of log seconds on log tokens: 1.0 is linear).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scaling.py [--method wanda] [--out results/scaling]

Writes scaling.json and scaling.png under --out and prints a table. Time it on a quiet machine."""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import prunebench
from prunebench.cli.bench import forward_through_layers, model_bytes

parser = argparse.ArgumentParser()
parser.add_argument("--method", default="wanda")
parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
parser.add_argument("--windows", default="16,64,256")
parser.add_argument("--seqlen", type=int, default=128)
parser.add_argument("--out", default="results/scaling")
parser.add_argument("--plot-only", action="store_true", help="redraw scaling.png from --out's scaling.json")
args = parser.parse_args()
windows = [int(n) for n in args.windows.split(",")]


def slope(xs, ys):
    """Least-squares slope of log y on log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


rows = json.loads((Path(args.out) / "scaling.json").read_text())["rows"] if args.plot_only else []
for name in [] if args.plot_only else args.models.split(","):
    model, tokenizer = prunebench.load_model(name)
    dense = [p.detach().clone() for p in model.parameters()]
    parameters = sum(p.numel() for p in model.parameters())
    documents = prunebench.calibration_documents("pydoc")
    model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=False)  # warm-up
    for n in windows:
        with torch.no_grad():
            for p, d in zip(model.parameters(), dense):
                p.copy_(d)
        calibration = prunebench.sample_calibration(tokenizer, documents, n, args.seqlen)
        forward = forward_through_layers(model, calibration)
        start = time.perf_counter()
        report = prunebench.prune(model, args.method, 0.5, calibration, progress=False)
        seconds = time.perf_counter() - start
        growth = max(0, report.peak_memory_bytes - report.memory_before_bytes)
        rows.append({"model": name, "parameters": parameters, "windows": n, "tokens": n * args.seqlen,
                     "prune_seconds": seconds, "forward_seconds": forward, "ratio": seconds / forward,
                     "memory_growth_bytes": growth, "growth_per_model_bytes": growth / model_bytes(model)})
        print(json.dumps(rows[-1]), flush=True)
    del model, dense

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
fits = {}
for name in args.models.split(","):
    mine = [r for r in rows if r["model"] == name]
    fits[name] = {"seconds_vs_tokens": slope([r["tokens"] for r in mine], [r["prune_seconds"] for r in mine]),
                  "memory_vs_tokens": slope([r["tokens"] for r in mine], [max(r["memory_growth_bytes"], 1) for r in mine])}
names = args.models.split(",")
if len(names) > 1:  # seconds against parameters, at each token count
    fits["seconds_vs_parameters"] = {n: slope([r["parameters"] for r in rows if r["windows"] == n],
                                              [r["prune_seconds"] for r in rows if r["windows"] == n]) for n in windows}
(out / "scaling.json").write_text(json.dumps({"method": args.method, "threads": torch.get_num_threads(),
                                              "rows": rows, "fits": fits}, indent=1))
print(f"\n{args.method}, {torch.get_num_threads()} threads")
print("| model | windows x 128 | prune s | plain forward s | ratio | memory growth MiB | growth / model bytes |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['model']} | {r['windows']} | {r['prune_seconds']:.1f} | {r['forward_seconds']:.1f} | {r['ratio']:.2f} | "
          f"{r['memory_growth_bytes'] / 2**20:.0f} | {r['growth_per_model_bytes']:.3f} |")
for name, fit in fits.items():
    print(f"{name}: {fit}")

import matplotlib  # noqa: E402  (only for the figure)
import matplotlib.ticker  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
for name in names:
    mine = [r for r in rows if r["model"] == name]
    tokens = [r["tokens"] for r in mine]
    left.loglog(tokens, [r["prune_seconds"] for r in mine], "o-",
                label=f"{name} (slope {fits[name]['seconds_vs_tokens']:.2f})")
    right.loglog(tokens, [max(r["memory_growth_bytes"], 1) / 2**20 for r in mine], "o-",
                 label=f"{name} (slope {fits[name]['memory_vs_tokens']:.2f})")
left.set(xlabel="calibration tokens", ylabel="pruning seconds", title=f"{args.method}: time")
right.set(xlabel="calibration tokens", ylabel="peak memory growth (MiB)", title=f"{args.method}: memory")
for axis in (left, right):
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decade labels only
    axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)
figure.tight_layout()
figure.savefig(out / "scaling.png", dpi=120)
