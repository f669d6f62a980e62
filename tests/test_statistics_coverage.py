"""The perplexity-ratio interval holds its coverage at the seed level: synthetic per-window NLLs with a
known true ratio, seed effects and window effects in several mixes, three and five seeds."""
import math

import pytest
import torch
from prunebench.metrics.uncertainty import perplexity_ratio

WINDOWS = 64
TRUE_LOG_RATIO = 0.05
# (seed sd, window sd of the method-reference difference, residual sd): seed-dominated, window-dominated,
# residual-dominated and balanced.
MIXES = [(0.04, 0.005, 0.02), (0.002, 0.03, 0.02), (0.0, 0.0, 0.1), (0.02, 0.02, 0.05)]


def synthetic(generator, seeds, seed_sd, window_sd, residual_sd, same_seeds):
    """Reference and method NLLs (seeds x windows) on shared windows of random difficulty."""
    difficulty = 3.0 + 0.5 * torch.randn(WINDOWS, generator=generator, dtype=torch.float64)
    window_effect = window_sd * torch.randn(WINDOWS, generator=generator, dtype=torch.float64)

    def runs(offset, seed_effect):
        noise = residual_sd * torch.randn(seeds, WINDOWS, generator=generator, dtype=torch.float64)
        return difficulty + offset + seed_effect[:, None] + noise

    reference_seeds = seed_sd * torch.randn(seeds, generator=generator, dtype=torch.float64)
    method_seeds = seed_sd * torch.randn(seeds, generator=generator, dtype=torch.float64)
    reference = runs(0.0, reference_seeds)
    method = runs(TRUE_LOG_RATIO, method_seeds) + window_effect
    return reference, method


def coverage(estimator, seeds, mix, same_seeds, trials, seed=0):
    generator = torch.Generator().manual_seed(seed)
    truth = math.exp(TRUE_LOG_RATIO)
    hits = 0
    for _ in range(trials):
        reference, method = synthetic(generator, seeds, *mix, same_seeds)
        comparison = estimator(reference, method, same_seeds)
        hits += comparison.low <= truth <= comparison.high
    return hits / trials


def ours(reference, method, same_seeds):
    return perplexity_ratio(reference, method, same_seeds=same_seeds)


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("same_seeds", [False, True])
def test_the_ratio_interval_covers_the_truth_at_its_level(seeds, mix, same_seeds):
    rate = coverage(ours, seeds, mix, same_seeds, trials=2000)
    assert 0.93 <= rate <= 0.975, f"coverage {rate:.3f} at nominal 0.95"


def test_the_previous_crossed_bootstrap_undercovers_with_three_seeds():
    """The estimator this replaced (a percentile bootstrap over seeds and windows) is too narrow when the
    seeds carry the noise: the test above would fail with it."""
    from prunebench.metrics.uncertainty import _bootstrap, _percentiles, _point

    def bootstrap(reference, method, same_seeds):
        ref_stat, method_stat = _bootstrap([[reference], [method]], 400, 0, torch.exp, same_seeds)
        value = _point([method], torch.exp) / _point([reference], torch.exp)
        return type("C", (), {"low": _percentiles(method_stat / ref_stat, 0.95)[0],
                              "high": _percentiles(method_stat / ref_stat, 0.95)[1], "value": value})

    rate = coverage(bootstrap, 3, MIXES[0], False, trials=300)
    assert rate < 0.93, f"the old bootstrap covered {rate:.3f}"


def test_fewer_than_three_seeds_give_no_significance_mark():
    generator = torch.Generator().manual_seed(1)
    reference, method = synthetic(generator, 2, 0.0, 0.0, 0.01, True)
    comparison = perplexity_ratio(reference, method + 0.5, same_seeds=True)
    assert comparison.low > 1 and comparison.seeds == 2 and not comparison.significant
    three = perplexity_ratio(torch.cat([reference, reference[:1]]), torch.cat([method, method[:1]]) + 0.5, same_seeds=True)
    assert three.significant


def test_one_seed_each_is_the_paired_t_interval_over_windows():
    from scipy.stats import t

    generator = torch.Generator().manual_seed(2)
    reference, method = synthetic(generator, 1, 0.0, 0.02, 0.05, True)
    d = (method - reference)[0]
    half = t.ppf(0.975, WINDOWS - 1) * d.std().item() / math.sqrt(WINDOWS)
    comparison = perplexity_ratio(reference[0], method[0])
    assert comparison.value == pytest.approx(math.exp(d.mean().item()), rel=1e-12)
    assert comparison.low == pytest.approx(math.exp(d.mean().item() - half), rel=1e-12)
    assert comparison.high == pytest.approx(math.exp(d.mean().item() + half), rel=1e-12)
