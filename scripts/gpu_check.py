"""GPU check: Wanda and SparseGPT pruned on CUDA against the same pruning on the CPU.

Loads the model once in float32 on the CPU, prunes a copy on the CPU (the reference) and a copy per
dtype on the device under test (layer at a time, the model held on the CPU, as `prune` always does),
and reports per method and dtype: mask agreement with the CPU masks, perplexity next to the CPU's,
pruning seconds (total and per decoder layer), peak device memory against the model's size, and
where the weights were afterwards. Writes OUT/gpu-check.json and OUT/README.md with the command.

    python scripts/gpu_check.py --model smollm2-135m --out results/gpu-check

`--device cpu` runs the same comparison CPU against CPU (every agreement 1): the machinery's own check,
not a GPU result.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import sys
import time
from pathlib import Path


def prune_and_measure(model, tokenizer, method: str, sparsity: str, calibration, eval_ids, device, dtype,
                      eval_seqlen: int, eval_windows: int) -> dict:
    """Prune a copy of `model` in `dtype` on `device`; its masks (on the CPU), perplexity and costs."""
    from prunebench import decoder_layers, module_bytes, on_device, perplexity, prune

    twin = copy.deepcopy(model).to(dtype)
    begin = time.perf_counter()
    report = prune(twin, method, sparsity, calibration, device=device, progress=False)
    seconds = time.perf_counter() - begin
    homes = sorted({str(p.device) for p in twin.parameters()})
    masks = linear_masks(twin)
    with on_device(twin, device):
        result = perplexity(twin, eval_ids, eval_seqlen, eval_windows, device=device)
    return {"method": method, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "masks": masks, "perplexity": result.perplexity, "prune_seconds": seconds,
            "seconds_per_layer": seconds / len(decoder_layers(twin)), "timings": report.timings,
            "peak_memory_bytes": report.peak_memory_bytes, "memory_before_bytes": report.memory_before_bytes,
            "model_bytes": module_bytes(twin), "weights_after_pruning_on": homes,
            "overall_sparsity": report.overall_sparsity}


def linear_masks(model) -> dict:
    """Every prunable linear's pruned weights (True = zero) on the CPU, keyed "layer index.name"."""
    from prunebench import decoder_layers, prunable_linears

    return {f"{index}.{name}": (linear.weight == 0).cpu()
            for index, layer in enumerate(decoder_layers(model)) for name, linear in prunable_linears(layer).items()}


def agreement(masks: dict, reference: dict) -> float:
    """Fraction of weights whose pruned/kept decision equals the reference's."""
    same = sum(int((masks[k] == reference[k]).sum()) for k in reference)
    return same / sum(reference[k].numel() for k in reference)


def layer_agreement(masks: dict, reference: dict) -> list[float]:
    """`agreement` per decoder layer (keys "index.name"): where along the depth the masks part."""
    layers = sorted({int(k.split(".")[0]) for k in reference})
    return [agreement({k: v for k, v in masks.items() if k.split(".")[0] == str(i)},
                      {k: v for k, v in reference.items() if k.split(".")[0] == str(i)}) for i in layers]


def run_check(args) -> dict:
    import torch
    from prunebench import calibration_windows, evaluation_text, load_model, parse_dtype, tokenize_text

    device = torch.device(args.device)
    model, tokenizer = load_model(args.model, "float32")
    calibration = calibration_windows(tokenizer, args.calib_dataset, args.nsamples, args.seqlen, 0, args.data_dir)
    eval_ids = tokenize_text(tokenizer, evaluation_text(args.eval_dataset, args.data_dir))
    rows = []
    for method in args.methods.split(","):
        reference = prune_and_measure(model, tokenizer, method, args.sparsity, calibration, eval_ids,
                                      torch.device("cpu"), torch.float32, args.eval_seqlen, args.eval_windows)
        for dtype in args.dtypes.split(","):
            tested = prune_and_measure(model, tokenizer, method, args.sparsity, calibration, eval_ids, device,
                                       parse_dtype(dtype), args.eval_seqlen, args.eval_windows)
            tested.update(mask_agreement=agreement(tested["masks"], reference["masks"]),
                          layer_agreement=layer_agreement(tested["masks"], reference["masks"]),
                          cpu_perplexity=reference["perplexity"], cpu_prune_seconds=reference["prune_seconds"])
            rows.append(tested)
    for row in rows:
        del row["masks"]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]), "model": args.model,
            "sparsity": args.sparsity, "calibration": f"{args.calib_dataset} {args.nsamples}x{args.seqlen}",
            "evaluation": f"{args.eval_dataset} {args.eval_windows}x{args.eval_seqlen}", "device": str(device),
            "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "rows": rows}


def markdown(check: dict) -> str:
    from tabulate import tabulate

    def weakest(r):
        layers = r.get("layer_agreement") or [r["mask_agreement"]]
        index = min(range(len(layers)), key=layers.__getitem__)
        return f"{layers[index]:.4f} (layer {index})"

    header = ["method", "device", "dtype", "mask agreement", "lowest layer's", "ppl", "CPU ppl", "prune s", "s/layer",
              "CPU prune s", "peak MiB", "model MiB", "weights after"]
    table = [[r["method"], r["device"], r["dtype"], f"{r['mask_agreement']:.6f}", weakest(r), f"{r['perplexity']:.4f}",
              f"{r['cpu_perplexity']:.4f}", f"{r['prune_seconds']:.2f}", f"{r['seconds_per_layer']:.3f}",
              f"{r['cpu_prune_seconds']:.2f}", f"{r['peak_memory_bytes'] / 2**20:.1f}",
              f"{r['model_bytes'] / 2**20:.1f}", ",".join(r["weights_after_pruning_on"])] for r in check["rows"]]
    return (f"# GPU check: {check['model']} at {check['sparsity']} on {check['gpu'] or check['device']}\n\n"
            f"Command: `{check['command']}`\n\ntorch {check['torch']}, CUDA {check['cuda']}; calibration "
            f"{check['calibration']}; perplexity on {check['evaluation']}. Peak memory is the device's "
            "(the CUDA allocator's peak, or the process's resident peak on the CPU) during pruning.\n\n"
            + tabulate(table, headers=header, tablefmt="github") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llama", help="alias, local directory, .gguf file or hub id")
    parser.add_argument("--methods", default="wanda,sparsegpt")
    parser.add_argument("--sparsity", default="0.5")
    parser.add_argument("--dtypes", default="float32,float16", help="dtypes to prune in on the device")
    parser.add_argument("--device", default="cuda", help="device under test (cpu: the machinery's self-check)")
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--calib-dataset", default="pydoc")
    parser.add_argument("--eval-dataset", default="pydoc")
    parser.add_argument("--eval-seqlen", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="write gpu-check.json and README.md here")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible; run it on a GPU machine (or --device cpu for the self-check)",
              file=sys.stderr)
        return 2
    check = run_check(args)
    text = markdown(check)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu-check.json").write_text(json.dumps(check, indent=1))
        (out / "README.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
