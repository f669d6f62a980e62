"""How many evaluation windows does a leaderboard need? A pilot for choosing `max_windows`.

Prunes one model with two methods (same calibration) and keeps every window's mean NLL on the
evaluation split; then, for growing window counts, prints the paired 95% interval of the perplexity
ratio (prunebench.metrics.uncertainty.perplexity_ratio, the same statistic the report uses) and the seconds
evaluation costs per window. Choose the smallest count whose half-width is within the target.
Records go to OUT/pilot.json (rerun with --table-only to reprint).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tabulate import tabulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default="wanda,ria", help="two methods, comma-separated")
    parser.add_argument("--sparsity", default="0.5")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=128, help="calibration length L")
    parser.add_argument("--calib-dataset", default="pydoc")
    parser.add_argument("--eval-dataset", default="wikitext2")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--eval-seqlen", type=int, default=512)
    parser.add_argument("--windows", type=int, default=256, help="windows to evaluate (the pilot's maximum)")
    parser.add_argument("--out", default="results/window-budget")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.table_only:
        out.mkdir(parents=True, exist_ok=True)
        (out / "pilot.json").write_text(json.dumps(run_pilot(args), indent=1))
    print_table(json.loads((out / "pilot.json").read_text()))


def run_pilot(args) -> dict:
    import prunebench
    import torch
    from prunebench import (
        calibration_documents,
        decoder_layers,
        evaluation_text,
        load_model,
        perplexity,
        prunable_linears,
        sample_calibration,
        tokenize_text,
    )

    model, tokenizer = load_model(args.model)
    weights = [linear.weight for layer in decoder_layers(model) for linear in prunable_linears(layer).values()]
    dense = [w.detach().clone() for w in weights]
    calibration = sample_calibration(tokenizer, calibration_documents(args.calib_dataset, args.data_dir),
                                     args.nsamples, args.seqlen)
    tokens = tokenize_text(tokenizer, evaluation_text(args.eval_dataset, args.data_dir))
    pilot = {"command": vars(args), "methods": {}}
    for method in args.methods.split(","):
        with torch.no_grad():
            for weight, original in zip(weights, dense):
                weight.copy_(original)
        prunebench.prune(model, method, args.sparsity, calibration, progress=False)
        start = time.perf_counter()
        result = perplexity(model, tokens, args.eval_seqlen, args.windows, progress=True)
        pilot["methods"][method] = {"window_nlls": list(result.window_nlls),
                                    "seconds_per_window": (time.perf_counter() - start) / result.windows}
    return pilot


def print_table(pilot: dict) -> None:
    from prunebench import perplexity_ratio

    (reference, a), (method, b) = pilot["methods"].items()
    available = min(len(a["window_nlls"]), len(b["window_nlls"]))
    rows = []
    for count in [c for c in (16, 32, 64, 96, 128, 192, 256, 384, 512, 1024) if c <= available] + [available]:
        ratio = perplexity_ratio(a["window_nlls"][:count], b["window_nlls"][:count])
        half = max(ratio.value - ratio.low, ratio.high - ratio.value) / ratio.value
        rows.append([count, f"{ratio.value:.4f}", f"[{ratio.low:.4f}, {ratio.high:.4f}]", f"±{100 * half:.2f}%"])
    seconds = max(a["seconds_per_window"], b["seconds_per_window"])
    print(f"{method} / {reference} perplexity ratio, paired 95% bootstrap interval over the first N windows "
          f"(evaluation costs {seconds:.2f} s per window here)")
    print(tabulate(sorted({tuple(r) for r in rows}, key=lambda r: r[0]),
                   headers=["windows", "ratio", "95% interval", "half-width"], tablefmt="github"))


if __name__ == "__main__":
    main()
