"""The authors' CFSP allocation against the calibration token count: FFN channels kept per layer of
SmolLM2-135M at 30% for 16 x 128 and 128 x 1024 calibration tokens (their importance is a token SUM
divided by a fixed 1e4, so more tokens sharpen the allocation).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/cfsp_temperature.py [--out results/cfsp-temperature]

Calibration: random windows of WikiText-2 test read as one document (the train split is not offline
here; only the allocation is shown, no perplexity). Writes keep.json and keep.png."""
import argparse
import json
from pathlib import Path

import prunebench

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="results/cfsp-temperature")
parser.add_argument("--corpus", default="../shared/data/wikitext-2-raw/wiki.test.raw")
parser.add_argument("--sparsity", type=float, default=0.3)
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
found = {}
for nsamples, seqlen in ((16, 128), (128, 1024)):
    model, tokenizer = prunebench.load_model("smollm2-135m")
    calibration = prunebench.calibration_windows(tokenizer, f"text:{args.corpus}", nsamples, seqlen, 0)
    report = prunebench.structured_prune(model, "cfsp", args.sparsity, calibration, batch_size=4, device="cpu")
    width = model.config.intermediate_size
    found[f"{nsamples}x{seqlen}"] = {"kept": [k["channels"] for k in report.kept], "width": width,
                                    "importance": report.layer_importance, "seconds": report.timings}
    kept = found[f"{nsamples}x{seqlen}"]["kept"]
    print(f"{nsamples} x {seqlen}: kept {min(kept)}..{max(kept)} of {width} per layer", flush=True)
(out / "keep.json").write_text(json.dumps(found, indent=1))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

figure, axis = plt.subplots(figsize=(7, 3.4))
for label, entry in found.items():
    axis.plot([k / entry["width"] for k in entry["kept"]], "o-", markersize=3, label=f"{label} tokens")
axis.axhline(1 - args.sparsity, color="grey", linewidth=0.8, linestyle=":")
axis.set(xlabel="decoder layer", ylabel="FFN channels kept (fraction)",
         title=f"authors' CFSP on SmolLM2-135M at {args.sparsity:.0%}: keep ratio by layer")
axis.legend(fontsize=8)
figure.tight_layout()
figure.savefig(out / "keep.png", dpi=120)
