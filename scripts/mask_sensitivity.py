"""How much a method's masks move under float32 summation order alone, on the CPU.

Prunes the same model twice on the CPU in float32, once with torch on `--threads-a` threads and once
on `--threads-b` (a different split of the matrix products' sums, nothing else changes), and prints
the overall and per-decoder-layer mask agreement and both perplexities. A GPU against CPU difference
(results/gpu-check/) no larger than this is summation order, not a GPU-path error.

    python scripts/mask_sensitivity.py --model smollm2-135m --method sparsegpt --out results/mask-sensitivity
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import agreement, layer_agreement, linear_masks  # noqa: E402


def pruned_masks(model, method: str, sparsity: str, calibration, eval_ids, threads: int, eval_seqlen: int,
                 eval_windows: int) -> tuple[dict, float]:
    import torch
    from prunebench import perplexity, prune

    torch.set_num_threads(threads)
    twin = copy.deepcopy(model)
    prune(twin, method, sparsity, calibration, device="cpu", progress=False)
    return linear_masks(twin), perplexity(twin, eval_ids, eval_seqlen, eval_windows, device="cpu").perplexity


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--methods", default="wanda,sparsegpt")
    parser.add_argument("--sparsity", default="0.5")
    parser.add_argument("--threads-a", type=int, default=1)
    parser.add_argument("--threads-b", type=int, default=2)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--dataset", default="pydoc", help="calibration and evaluation text (as gpu_check.py)")
    parser.add_argument("--eval-seqlen", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--out", default=None, help="write mask-sensitivity.json here")
    args = parser.parse_args()

    from prunebench import calibration_windows, evaluation_text, load_model, tokenize_text

    model, tokenizer = load_model(args.model, "float32")
    calibration = calibration_windows(tokenizer, args.dataset, args.nsamples, args.seqlen, 0, None)
    eval_ids = tokenize_text(tokenizer, evaluation_text(args.dataset))
    rows = []
    for method in args.methods.split(","):
        a, ppl_a = pruned_masks(model, method, args.sparsity, calibration, eval_ids, args.threads_a,
                                args.eval_seqlen, args.eval_windows)
        b, ppl_b = pruned_masks(model, method, args.sparsity, calibration, eval_ids, args.threads_b,
                                args.eval_seqlen, args.eval_windows)
        rows.append({"method": method, "mask_agreement": agreement(b, a), "layer_agreement": layer_agreement(b, a),
                     f"perplexity_{args.threads_a}_threads": ppl_a, f"perplexity_{args.threads_b}_threads": ppl_b})
        layers = rows[-1]["layer_agreement"]
        print(f"{method}: agreement {rows[-1]['mask_agreement']:.6f}; perplexity {ppl_a:.4f} ({args.threads_a} threads) "
              f"vs {ppl_b:.4f} ({args.threads_b}); per layer {', '.join(f'{x:.4f}' for x in layers)}", flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
        (out / "mask-sensitivity.json").write_text(json.dumps({"command": command, "model": args.model,
                                                               "calibration": f"{args.dataset} {args.nsamples}x{args.seqlen}",
                                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
