"""Per-layer pruning cost on decoder layers shaped like LLaMA-2-7B's and 70B's, for an estimate of
pruning the whole models on one GPU.

A LlamaForCausalLM with the shape of the named model (hidden and MLP widths, heads, key-value heads,
vocabulary) but only `--layers` decoder layers and random weights is held on the CPU in `--dtype`;
each method prunes a fresh copy of it exactly as `prunebench prune` does (layer at a time on
`--device`, the model on the CPU) on `--nsamples` x `--seqlen` random token ids (128 x 2048 is the
calibration of the Wanda and SparseGPT papers). Random weights leave the cost unchanged: every
method's arithmetic depends on the shapes alone. Per method it records the seconds before the first
layer and after the last (the embeddings' forward that captures the layer inputs; the last layer's
move back), each layer's seconds (PruneReport.layer_seconds, CUDA synchronised) and the CUDA
allocator's peak, and estimates the whole model as outside + first layer + (depth - 1) x the mean of
the later layers (printed as an estimate with that arithmetic).

    python scripts/gpu_layer_cost.py --shape llama-2-7b --out results/gpu-check/layer-cost-7b.json

`--shape tiny --device cpu` checks the machinery on the CPU in seconds (tests/test_gpu_path.py).
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

# Published configurations (the checkpoints' config.json); `depth` is the real number of decoder layers.
SHAPES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                       vocab_size=32000, depth=32),
    "llama-2-13b": dict(hidden_size=5120, intermediate_size=13824, num_attention_heads=40, num_key_value_heads=40,
                        vocab_size=32000, depth=40),
    "llama-2-70b": dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8,
                        vocab_size=32000, depth=80),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=512, depth=2),
}


def shaped_model(shape: str, layers: int, dtype, build_device):
    """A random LLaMA of the shape's widths with `layers` decoder layers, on the CPU in `dtype`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    widths = {k: v for k, v in SHAPES[shape].items() if k != "depth"}
    config = LlamaConfig(**widths, num_hidden_layers=layers, max_position_embeddings=4096, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(build_device):  # initialising billions of weights is quicker on the GPU
        model = LlamaForCausalLM(config)
    return model.to(dtype).to("cpu").eval()


def time_method(base, method: str, sparsity: str, calibration, device, batch_size: int) -> dict:
    import torch
    from prunebench import prune

    model = copy.deepcopy(base)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    begin = time.perf_counter()
    report = prune(model, method, sparsity, calibration, device=device, batch_size=batch_size, progress=False)
    total = time.perf_counter() - begin
    layers = report.layer_seconds
    return {"method": method, "total_seconds": total, "outside_layers_seconds": total - sum(layers),
            "layer_seconds": layers,
            "peak_memory_bytes": report.peak_memory_bytes, "memory_before_bytes": report.memory_before_bytes,
            "overall_sparsity": report.overall_sparsity, "timings": report.timings}


def later_layer_seconds(row: dict) -> float:
    """Seconds of a layer after the first: each also moves the previous layer back to the CPU."""
    layers = row["layer_seconds"]
    return statistics.fmean(layers[1:]) if len(layers) > 1 else layers[0]


def outside_layers_seconds(row: dict) -> float:
    # results/gpu-check/h200-2026-11-27 was written when the key was named before_layers_seconds.
    return row["outside_layers_seconds"] if "outside_layers_seconds" in row else row["before_layers_seconds"]


def estimate(row: dict, depth: int) -> float:
    """Whole-model seconds: the time outside the layer steps (the embeddings' capture before them,
    the last layer's move back after them), the first layer, then depth - 1 later layers."""
    return outside_layers_seconds(row) + row["layer_seconds"][0] + (depth - 1) * later_layer_seconds(row)


def markdown(result: dict) -> str:
    from tabulate import tabulate

    depth = result["depth"]
    rows = []
    for r in result["rows"]:
        outside, first, later = outside_layers_seconds(r), r["layer_seconds"][0], later_layer_seconds(r)
        rows.append([r["method"], f"{outside:.2f}", f"{first:.3f}", f"{later:.3f}",
                     f"{min(r['layer_seconds'][1:] or [first]):.3f}-{max(r['layer_seconds'][1:] or [first]):.3f}",
                     f"{r['peak_memory_bytes'] / 2**30:.2f}",
                     f"{outside:.1f} + {first:.2f} + {depth - 1} x {later:.2f} = {estimate(r, depth) / 60:.1f} min"])
    header = ["method", "outside layers s", "first layer s", "later layers s (mean)", "later range s", "peak GiB",
              f"estimate, {depth} layers (outside + first + {depth - 1} x later)"]
    return (f"## {result['shape']}-shaped layers on {result['gpu'] or result['device']}\n\n"
            f"Command: `{result['command']}`\n\n{result['layers']} random decoder layers of {result['shape']}'s "
            f"widths in {result['dtype']}, held on the CPU; calibration {result['nsamples']} x {result['seqlen']} "
            f"random tokens, batch {result['batch_size']}, sparsity {result['sparsity']}; torch {result['torch']}. "
            "A later layer's seconds include moving the previous layer back to the CPU; the last column is an "
            "estimate, not a measurement of the whole model.\n\n"
            + tabulate(rows, headers=header, tablefmt="github") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-2-7b", choices=sorted(SHAPES))
    parser.add_argument("--layers", type=int, default=3, help="decoder layers built and pruned (the first warms up)")
    parser.add_argument("--methods", default=None, help="comma-separated; default: every unstructured method")
    parser.add_argument("--sparsity", default="0.5")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=None, help="write the result as JSON here (rewritten after each method)")
    parser.add_argument("--markdown", default=None, metavar="JSON", help="only print the table of an earlier --out")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    import torch
    from prunebench import parse_dtype, registry

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_layer_cost: no CUDA device is visible; run it on a GPU machine (or --shape tiny --device cpu)",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    methods = args.methods.split(",") if args.methods else sorted(registry.registered("register_methods"))
    base = shaped_model(args.shape, args.layers, parse_dtype(args.dtype), device)
    generator = torch.Generator().manual_seed(0)
    calibration = torch.randint(0, SHAPES[args.shape]["vocab_size"], (args.nsamples, args.seqlen), generator=generator)
    result = {"command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]), "shape": args.shape,
              "depth": SHAPES[args.shape]["depth"], "layers": args.layers, "dtype": args.dtype, "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "torch": torch.__version__,
              "nsamples": args.nsamples, "seqlen": args.seqlen, "batch_size": args.batch_size,
              "sparsity": args.sparsity, "rows": []}
    # One untimed run first: CUDA's and the libraries' start-up costs land there, not on a method.
    time_method(base, methods[0], args.sparsity, calibration[:2], device, args.batch_size)
    for method in methods:
        result["rows"].append(time_method(base, method, args.sparsity, calibration, device, args.batch_size))
        print(f"{method}: {result['rows'][-1]['layer_seconds']}", flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
