"""A results directory of hand-made records with per-window NLLs and per-item correctness, so that the
HTML report and datasette tests see intervals, bold and dagger marks, published columns and a failure."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from prunebench.store import ResultsStore

LABEL = "wikitext2-512x40"
MODEL = "llama-2-7b"  # its source matches the published numbers in report.PUBLISHED
SOURCE = "meta-llama/Llama-2-7b-hf"
# Mean NLL shift from 90 per method: wanda and ria are tied at L=16 (same shift), sparsegpt is clearly worse.
SHIFTS = {"wanda": 0.0, "ria": 0.0, "sparsegpt": 0.3, "magnitude": 0.9}
SPARSITIES = ("0.5", "2:4")
LENGTHS = (16, 128)


def window_nlls(shift: float, seed: int, count: int = 40) -> list[float]:
    """Shared window difficulty plus a method's own small noise, centred: perplexity exactly 90 e^shift."""
    difficulty = 0.4 * torch.randn(count, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    own = 0.03 * torch.randn(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (math.log(90) + shift + difficulty - difficulty.mean() + own - own.mean()).tolist()


def _record(method: str, sparsity: str | None, seqlen: int | None, index: int) -> dict:
    dense = method == "dense"
    shift = -1.0 if dense else SHIFTS[method] + (0.4 if sparsity == "2:4" else 0.0) - (0.05 if seqlen == 128 else 0.0)
    shift += 0.15 if method == "ria" and seqlen == 128 else 0.0  # at L=128 wanda is significantly best: bold
    nlls = window_nlls(shift, seed=index)
    name = f"model={MODEL},method={method}" + ("" if dense else f",sparsity={sparsity.replace(':', '-')},"
                                                               f"calib=pydoc-16x{seqlen},seed=0")
    correct = [int((i * 7 + index) % 10 < (7 if dense else 6 - SHIFTS[method] * 3)) for i in range(200)]
    record = {
        "name": name, "hash": f"{index:016x}", "status": "ok",
        "cell": {"suite": "synthetic", "model": MODEL, "model_source": SOURCE, "method": method,
                 "arguments": {} if dense else {"group": "row"}, "allocation": None if dense else "uniform",
                 "sparsity": sparsity, "calibration_dataset": None if dense else "pydoc", "nsamples": None if dense else 16,
                 "seqlen": seqlen, "seed": None if dense else 0, "propagate": "pruned", "dtype": "float32"},
        "environment": {"prunebench": "0.1.0", "torch": "2.13.0+cpu", "device": "cpu", "git_revision": "0" * 40},
        "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00", "wall_seconds": 60.0,
        "perplexity": {LABEL: {"perplexity": math.exp(sum(nlls) / len(nlls)), "windows": len(nlls),
                               "window_length": 512, "tokens": 512 * len(nlls), "seconds": 12.5,
                               "dataset": "wikitext2", "window_nlls": nlls}},
        "tasks": {"lastword": {"acc": sum(correct) / len(correct), "samples": len(correct), "correct": {"acc": correct}},
                  "mean_acc": sum(correct) / len(correct)},
        "measured_sparsity": {"overall": 0.0 if dense else 0.5, "per_layer": [0.0 if dense else 0.5 - 0.01 * i + 0.015
                                                                              for i in range(4)]},
        "notes": [],
    }
    if not dense:
        total = {"magnitude": 0.5, "wanda": 2.0, "ria": 2.2, "sparsegpt": 9.0}[method] * (seqlen / 16) ** 0.5
        record["timings"] = {"calibration_forward": total * 0.6, "score_mask": total * 0.3, "weight_update": total * 0.05,
                             "total": total}
        record["layer_targets"] = [0.5] * 4
    return record


def records() -> list[dict]:
    made = [_record("dense", None, None, 0)]
    for sparsity in SPARSITIES:
        for seqlen in LENGTHS:
            for method in sorted(SHIFTS):
                made.append(_record(method, sparsity, seqlen, len(made)))
    failed = _record("wanda", "0.5", 1024, len(made))
    failed.update(status="failed", error="RuntimeError: out of memory", traceback="Traceback ...\nRuntimeError")
    for key in ("perplexity", "tasks", "timings", "measured_sparsity", "layer_targets"):
        failed.pop(key, None)
    return made + [failed]


def write_results(root: Path, keep: int | None = None) -> Path:
    """A results directory (records and leaderboard.sqlite) at `root`; `keep`: only the first records."""
    store = ResultsStore(root)
    for record in records()[:keep]:
        store.write(record)
    return root
