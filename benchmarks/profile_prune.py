"""Where the pruning pass spends its time: torch.profiler over one `prune` call, against one plain
forward through the decoder layers on the same calibration windows.

    .venv/bin/python benchmarks/profile_prune.py [--method wanda] [--nsamples 32] [--seqlen 128]

Prints the pass's phases (the engine's Stopwatch), the plain forward, their ratio, and the top
operators by self CPU time (profiled in a second, separate run so the profiler's overhead does not
enter the timed figures)."""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import prunebench
from prunebench.cli.bench import forward_through_layers

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--method", default="wanda")
parser.add_argument("--nsamples", type=int, default=32)
parser.add_argument("--seqlen", type=int, default=128)
parser.add_argument("--top", type=int, default=15, help="operators to list; 0: no profiled run")
args = parser.parse_args()

model, tokenizer = prunebench.load_model(args.model)
calibration = prunebench.sample_calibration(tokenizer, prunebench.calibration_documents("pydoc"), args.nsamples,
                                            args.seqlen)
weights = [p.detach().clone() for p in model.parameters()]


def restore():
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)


model(input_ids=calibration[:1, :16], use_cache=False)  # warm-up
forward = min(forward_through_layers(model, calibration) for _ in range(2))
start = time.perf_counter()
report = prunebench.prune(model, args.method, 0.5, calibration, progress=False)
total = time.perf_counter() - start
print(f"{args.model}, {args.method} 0.5, {args.nsamples} x {args.seqlen}, {torch.get_num_threads()} threads")
print(f"plain forward through layers {forward:.2f} s; pruning {total:.2f} s = {total / forward:.2f}x")
print("phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings.items()))
if args.top == 0:
    raise SystemExit
restore()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    prunebench.prune(model, args.method, 0.5, calibration, progress=False)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
