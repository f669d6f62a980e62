"""DSnoT parity: prunebench's `dsnot` (base wanda) against the authors' own `prune_DSnoT`, on the same
model and calibration tokens, on CPU: the share of every linear's weights whose pruned/kept state agrees.

The authors' code is imported from a checkout of github.com/zyxxmu/DSnoT (`--authors DIR`, the folder
holding lib/prune.py) and run as it is with main.py's defaults (max_cycle_time 50, update_threshold 0.1,
pow_of_var_regrowing 1, skip_layer mlp, without_same_sign True). Adapters that leave their arithmetic
alone: their `get_loaders` returns our calibration windows, `model.seqlen` and an empty `hf_device_map`
are set, and decoder layers compute their rotary embeddings (benchmarks/authors_code.py).

    git clone https://github.com/zyxxmu/DSnoT /tmp/dsnot-authors
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dsnot_parity.py --authors /tmp/dsnot-authors \
        [--sparsity 0.6] [--nsamples 16] [--seqlen 128] [--statistics theirs|ours|both]

Prints, for each way of accumulating our statistics, the linears whose masks differ and the overall
agreement. With the authors' float32 running means the masks are the parity's test of the algorithm;
with our default statistics (batch-size invariant) the remaining differences are their rounding only."""
from __future__ import annotations

import argparse
import copy
import datetime
from types import SimpleNamespace

import torch
from authors_code import import_authors, with_position_embeddings

import prunebench

parser = argparse.ArgumentParser()
parser.add_argument("--authors", required=True, help="a checkout of github.com/zyxxmu/DSnoT")
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--calib", default="pydoc")
parser.add_argument("--nsamples", type=int, default=16)
parser.add_argument("--seqlen", type=int, default=128)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--sparsity", type=float, default=0.6)
parser.add_argument("--data-dir", default="../shared/data")
parser.add_argument("--statistics", choices=("theirs", "ours", "both"), default="both",
                    help="how our run accumulates its three statistics: 'theirs' as their WrappedGPT does (float32 "
                         "running means, one sequence at a time), 'ours' as prunebench does by default (float32 per "
                         "window, float64 sum: batch-size invariant); 'both' runs each against the one authors' run")
args = parser.parse_args()


class TheirRunningMeans(prunebench.Accumulator):
    """The authors' LW:37-60 updates in float32: scaler_row and sum_metric_row rescaled per sequence, var
    a token-weighted running mean of the per-sequence population variance."""

    def __init__(self, kind: str, width: int):
        self.kind, self.value, self.n, self.tokens = kind, torch.zeros(width), 0, 0

    def add(self, inputs, outputs, nsequences):
        for window in inputs.reshape(nsequences, -1, inputs.shape[-1]).float():
            x = window.t()
            if self.kind == "input_var":
                var = torch.var(x, dim=1, unbiased=False)
                self.value = var if self.tokens == 0 else (self.value * self.tokens + var * x.shape[1]) / (self.tokens + x.shape[1])
                self.tokens += x.shape[1]
                continue
            self.value *= self.n / (self.n + 1)
            self.n += 1
            self.value += (torch.norm(x, p=2, dim=1) ** 2 if self.kind == "input_sq_norm" else x.sum(dim=1)) / self.n

    def result(self):
        return self.value


def their_rounding() -> dict:
    """Swap our three statistics' accumulators for TheirRunningMeans; returns the originals."""
    originals = {}
    for name in ("input_sq_norm", "input_sum", "input_var"):
        statistic = prunebench.registry.get_statistic(name)
        originals[name] = statistic.accumulator
        statistic.accumulator = lambda linear, device, arguments, _name=name: TheirRunningMeans(_name, linear.in_features)
    return originals


def restore(originals: dict) -> None:
    for name, accumulator in originals.items():
        prunebench.registry.get_statistic(name).accumulator = accumulator


def authors_dsnot(model, calibration: torch.Tensor) -> None:
    prune = import_authors(args.authors, "lib.prune")
    prune.get_loaders = lambda *a, **k: ([(window.unsqueeze(0), None) for window in calibration], None)
    model.seqlen = calibration.shape[1]
    model.hf_device_map = {}
    with_position_embeddings(model)
    settings = SimpleNamespace(nsamples=calibration.shape[0], seed=args.seed, initial_method="wanda",
                               sparsity_ratio=args.sparsity, max_cycle_time=50, update_threshold=0.1,
                               pow_of_var_regrowing=1, pow_of_var_pruning=1, skip_layer="mlp",
                               skip_sub_layer="no_skip", without_DSnoT=False, without_same_sign=True,
                               get_time_overhead=False, output_results_file=None)
    prune.prune_DSnoT(settings, model, None, device=torch.device("cpu"))


def compare(ours, theirs, label: str) -> None:
    agree = total = 0
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} {args.model}, {args.calib} "
          f"{args.nsamples}x{args.seqlen} seed {args.seed}, wanda + DSnoT at {args.sparsity}, our statistics "
          f"accumulated {label}")
    for index, (a, b) in enumerate(zip(prunebench.decoder_layers(ours), prunebench.decoder_layers(theirs))):
        for name, linear in prunebench.prunable_linears(a).items():
            same = (linear.weight == 0) == (prunebench.prunable_linears(b)[name].weight == 0)
            agree, total = agree + int(same.sum()), total + same.numel()
            if not same.all():
                print(f"layer {index} {name}: {int((~same).sum())} of {same.numel()} weights differ")
    print(f"masks agree on {agree}/{total} weights ({agree / total:.6%}); identical: {agree == total}", flush=True)


def main() -> None:
    dense, tokenizer = prunebench.load_model(args.model)
    dense.eval()
    calibration = prunebench.calibration_windows(tokenizer, args.calib, args.nsamples, args.seqlen, args.seed,
                                                 data_dir=args.data_dir)
    theirs = copy.deepcopy(dense)
    with torch.no_grad():
        authors_dsnot(theirs, calibration)
    labels = {"theirs": "as their WrappedGPT does (float32 running means)",
              "ours": "as prunebench does (float32 per window, float64 sum)"}
    for mode in ("theirs", "ours") if args.statistics == "both" else (args.statistics,):
        ours = copy.deepcopy(dense)
        originals = their_rounding() if mode == "theirs" else {}
        try:
            prunebench.prune(ours, "dsnot", args.sparsity, calibration, batch_size=1, device="cpu", base="wanda",
                             progress=False)
        finally:
            restore(originals)
        compare(ours, theirs, labels[mode])


if __name__ == "__main__":
    main()
