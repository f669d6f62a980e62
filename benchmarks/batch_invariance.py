"""Batch-size invariance on a real model: for every registered unstructured method, prune SmolLM2-135M
(all 30 layers) with calibration batch sizes 1, 4 and 8 on the same windows and compare the masks.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/batch_invariance.py [--sparsity 2:4 0.5] [--nsamples 32]

Prints, per method and sparsity, whether the masks of batch sizes 4 and 8 equal those of batch size 1,
the first linear that differs and the share of weights that agree."""
from __future__ import annotations

import argparse
import copy
import datetime

import torch

import prunebench

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--calib", default="pydoc")
parser.add_argument("--nsamples", type=int, default=32)
parser.add_argument("--seqlen", type=int, default=128)
parser.add_argument("--sparsity", nargs="+", default=["2:4", "0.5"])
parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
parser.add_argument("--methods", nargs="*", help="default: every registered unstructured method")
parser.add_argument("--data-dir", default="../shared/data")
args = parser.parse_args()


def masks(model) -> dict[str, torch.Tensor]:
    return {f"{i}.{name}": linear.weight == 0 for i, layer in enumerate(prunebench.decoder_layers(model))
            for name, linear in prunebench.prunable_linears(layer).items()}


def main() -> None:
    torch.set_num_threads(1)  # the thread count is held fixed: this script varies the batch size only
    dense, tokenizer = prunebench.load_model(args.model)
    calibration = prunebench.calibration_windows(tokenizer, args.calib, args.nsamples, args.seqlen, 0,
                                                 data_dir=args.data_dir)
    methods = args.methods or list(prunebench.registry.registered("register_methods"))
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} {args.model}, {args.calib} "
          f"{args.nsamples}x{args.seqlen} seed 0, batch sizes {args.batch_sizes}, one thread")
    for method in methods:
        for sparsity in args.sparsity:
            found = {}
            for batch_size in args.batch_sizes:
                pruned = copy.deepcopy(dense)
                prunebench.prune(pruned, method, sparsity, calibration, batch_size=batch_size, device="cpu",
                                 progress=False)
                found[batch_size] = masks(pruned)
            reference = found[args.batch_sizes[0]]
            for batch_size in args.batch_sizes[1:]:
                differing = [n for n, m in reference.items() if not torch.equal(m, found[batch_size][n])]
                agree = sum(int((m == found[batch_size][n]).sum()) for n, m in reference.items())
                total = sum(m.numel() for m in reference.values())
                print(f"{method:11s} {sparsity:4s} batch {batch_size} vs {args.batch_sizes[0]}: "
                      f"identical {not differing}" + (f", first differs in {differing[0]}, {len(differing)} linears, "
                                                      f"{agree / total:.6%} of weights agree" if differing else ""),
                      flush=True)


if __name__ == "__main__":
    main()
