"""Empirical coverage of prunebench's 95% intervals on synthetic data with a known truth: the cases of
tests/test_statistics_coverage.py (which asserts their bounds), printed with their rates.

    .venv/bin/python benchmarks/statistics_coverage.py [--trials 2000] > results/statistics-coverage/coverage.txt
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_statistics_coverage import (MIXES, TRUE_LOG_RATIO, accuracy_coverage, binary_runs,  # noqa: E402
                                      coverage, ours, synthetic, true_accuracy_difference)

from prunebench.metrics.uncertainty import accuracy_difference, accuracy_estimate, perplexity_estimate  # noqa: E402


def cell_coverage(seeds: int, mix: tuple, trials: int) -> float:
    generator = torch.Generator().manual_seed(3)
    truth = math.exp(3.0 + TRUE_LOG_RATIO)
    hits = 0
    for _ in range(trials):
        _, method = synthetic(generator, seeds, *mix, False)
        estimate = perplexity_estimate(method)
        hits += estimate.low <= truth <= estimate.high
    return hits / trials


def accuracy_cell_coverage(seeds: int, seed_sd: float, trials: int) -> float:
    """A cell's own accuracy interval over seeds (the reference side of binary_runs)."""
    generator = torch.Generator().manual_seed(4)
    draws = torch.Generator().manual_seed(123)
    difficulty = 1.5 * torch.randn(2_000_000, generator=draws, dtype=torch.float64)
    effect = seed_sd * torch.randn(2_000_000, generator=draws, dtype=torch.float64)
    truth = torch.sigmoid(difficulty + effect).mean().item()
    hits = 0
    for _ in range(trials):
        reference, _ = binary_runs(generator, seeds, seed_sd, False)
        estimate = accuracy_estimate([reference])
        hits += estimate.low <= truth <= estimate.high
    return hits / trials


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=2000)
    trials = parser.parse_args().trials
    print(f"nominal 0.95; {trials} trials per case")
    print("\nperplexity ratio (log_ratio_interval); mix = (seed sd, window sd, residual sd)")
    for same in (False, True):
        for mix in MIXES:
            for seeds in (3, 5):
                print(f"  same_seeds={same!s:5} mix={mix} S={seeds}: {coverage(ours, seeds, mix, same, trials):.4f}")
    print("\na cell's perplexity over seeds (perplexity_estimate)")
    for mix in MIXES:
        for seeds in (3, 5):
            print(f"  mix={mix} S={seeds}: {cell_coverage(seeds, mix, trials):.4f}")

    def difference(reference, method, same):
        comparison = accuracy_difference([reference], [method], same_seeds=same)
        return comparison.low, comparison.high

    print("\naccuracy difference (mean_difference_interval), 0/1 items; seed sd on the logit")
    for same in (False, True):
        for seed_sd in (0.0, 0.3):
            for seeds in (3, 5):
                rate = accuracy_coverage(difference, seeds, seed_sd, same, trials)
                print(f"  same_seeds={same!s:5} seed sd={seed_sd} S={seeds}: {rate:.4f}")
    print("\na cell's accuracy over seeds (accuracy_estimate); seed sd on the logit")
    for seed_sd in (0.0, 0.3):
        for seeds in (3, 5):
            print(f"  seed sd={seed_sd} S={seeds}: {accuracy_cell_coverage(seeds, seed_sd, trials):.4f}")
    print(f"\n(true accuracy differences: seed sd 0 {true_accuracy_difference(0.0):.4f}, "
          f"0.3 {true_accuracy_difference(0.3):.4f})")


if __name__ == "__main__":
    main()
