"""Bootstrap intervals and paired comparisons: known answers, a slow reference loop on the same
random draws, a planted difference found, identical methods tied, seed spread widening intervals."""
import math

import pytest
import torch
from prunebench.api.tables import BEST, TIED, Cell, mark_best
from prunebench.metrics.uncertainty import (
    accuracy_difference,
    accuracy_estimate,
    perplexity_estimate,
    perplexity_ratio,
    wilson_interval,
)


def windows(count: int, seed: int, spread: float = 0.5) -> torch.Tensor:
    """Per-window mean NLLs around log(90), windows of differing difficulty."""
    return math.log(90) + spread * torch.randn(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_two_windows_give_the_enumerable_interval():
    # Resampling [1, 3] gives means 1, 2, 3 with chances 1/4, 1/2, 1/4: the 2.5% and 97.5%
    # percentiles fall inside the blocks of e^1 and e^3, whatever the seed.
    for seed in (0, 1, 7):
        estimate = perplexity_estimate([1.0, 3.0], seed=seed)
        assert estimate.value == pytest.approx(math.e ** 2)
        assert (estimate.low, estimate.high) == pytest.approx((math.e, math.e ** 3))
        assert estimate.std is None and estimate.seeds == 1
    constant = perplexity_estimate([2.0] * 5)
    assert constant.low == pytest.approx(constant.high) == pytest.approx(math.e ** 2)


def test_the_vectorised_bootstrap_equals_a_slow_loop_on_the_same_draws():
    nlls = windows(7, seed=3)
    resamples, level = 200, 0.9
    generator = torch.Generator().manual_seed(11)
    indices = torch.randint(0, 7, (resamples, 7), generator=generator)
    statistics = sorted(math.exp(sum(nlls[i].item() for i in row) / 7) for row in indices.tolist())

    def percentile(q):  # numpy's default: linear between the neighbouring order statistics
        position = q * (resamples - 1)
        below = math.floor(position)
        return statistics[below] + (position - below) * (statistics[min(below + 1, resamples - 1)] - statistics[below])

    estimate = perplexity_estimate(nlls, resamples=resamples, seed=11, level=level)
    assert estimate.low == pytest.approx(percentile(0.05), rel=1e-12)
    assert estimate.high == pytest.approx(percentile(0.95), rel=1e-12)
    assert estimate.value == pytest.approx(math.exp(nlls.mean().item()))


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    nlls = windows(50, seed=0)
    assert perplexity_estimate(nlls, seed=5) == perplexity_estimate(nlls, seed=5)
    assert perplexity_estimate(nlls, seed=5).low != perplexity_estimate(nlls, seed=6).low


def test_the_paired_comparison_finds_a_planted_difference_that_separate_intervals_miss():
    reference = windows(200, seed=1)
    noise = 0.02 * torch.randn(200, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    method = reference + 0.05 + noise
    comparison = perplexity_ratio(reference, method)
    # One calibration seed: the interval excludes 1 but cannot speak for calibration noise, so no mark.
    assert comparison.low > 1 and comparison.seeds == 1 and not comparison.significant
    assert comparison.low < math.exp(0.05) < comparison.high
    seeded = perplexity_ratio(reference.expand(3, -1), torch.stack([method, method + 1e-3, method - 1e-3]))
    assert seeded.significant and seeded.seeds == 3
    assert comparison.value == pytest.approx(math.exp((method - reference).mean().item()))
    # Window difficulty dominates each method's own interval: they overlap, though the difference is real.
    alone_reference, alone_method = perplexity_estimate(reference), perplexity_estimate(method)
    assert alone_method.low < alone_reference.high


def test_identical_methods_are_tied_and_never_bold():
    nlls = windows(100, seed=4).tolist()
    comparison = perplexity_ratio(nlls, nlls)
    assert (comparison.value, comparison.low, comparison.high) == (1.0, 1.0, 1.0) and not comparison.significant
    runs = [nlls, nlls, nlls]
    first, second = Cell(90.0, data=runs, seeds=(0, 1, 2)), Cell(90.0, data=runs, seeds=(0, 1, 2))
    mark_best([first, second], True, lambda a, b: perplexity_ratio(a.data, b.data))
    assert first.mark == second.mark == TIED


def test_a_significantly_better_method_is_bold_and_the_rest_unmarked():
    good = windows(100, seed=5)
    three = lambda shift: [(good + shift + jitter).tolist() for jitter in (0.0, 0.01, -0.01)]  # noqa: E731
    cells = [Cell(math.exp((good + shift).mean().item()), data=three(shift), seeds=(0, 1, 2)) for shift in (0.0, 0.3, 0.6)]
    mark_best(cells, True, lambda a, b: perplexity_ratio(a.data, b.data))
    assert [c.mark for c in cells] == [BEST, "", ""]
    # The same data with one seed each: nothing is marked (too few seeds to call anything best).
    single = [Cell(c.value, data=c.data[:1], seeds=(0,)) for c in cells]
    mark_best(single, True, lambda a, b: perplexity_ratio(a.data, b.data))
    assert [c.mark for c in single] == ["", "", ""]
    # Without per-window data nothing can be bold: the best is only marked as possibly tied.
    plain = [Cell(10.0), Cell(20.0)]
    mark_best(plain, True, lambda a, b: None)
    assert [c.mark for c in plain] == [TIED, ""]


def test_the_seed_level_widens_the_interval_with_the_seed_spread():
    base = windows(100, seed=6)
    offsets = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64).unsqueeze(1)
    narrow = perplexity_estimate(base + 0.01 * offsets)
    wide = perplexity_estimate(base + 0.2 * offsets)
    assert narrow.seeds == wide.seeds == 5
    assert wide.std > 10 * narrow.std
    assert (wide.high - wide.low) > 1.5 * (narrow.high - narrow.low)
    # One seed: the window bootstrap alone.
    assert perplexity_estimate(base[None, :]) == perplexity_estimate(base)


def test_pairing_the_seeds_removes_what_a_seed_does_to_both_methods():
    base = windows(100, seed=7)
    seeds = 0.2 * torch.randn(4, 1, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    reference, method = base + seeds, base + seeds + 0.05
    independent = perplexity_ratio(reference, method)
    paired = perplexity_ratio(reference, method, same_seeds=True)
    assert paired.significant and not independent.significant
    assert paired.value == pytest.approx(independent.value)
    with pytest.raises(ValueError, match="same number of seeds"):
        perplexity_ratio(reference, method[:3], same_seeds=True)
    with pytest.raises(ValueError, match="same windows"):
        perplexity_ratio(reference, method[:, :50])


def test_wilson_interval_known_values():
    assert wilson_interval(0, 100) == pytest.approx((0.0, 0.036994), abs=1e-5)
    assert wilson_interval(50, 100) == pytest.approx((0.403832, 0.596168), abs=1e-5)
    single = accuracy_estimate([[1] * 30 + [0] * 70])
    assert (single.value, single.low, single.high) == pytest.approx((0.3, *wilson_interval(30, 100)))


def test_accuracy_differences_on_the_same_items():
    generator = torch.Generator().manual_seed(9)
    reference = (torch.rand(1000, generator=generator) < 0.5).double()
    method = reference.clone()
    method[(reference == 0).nonzero()[:80]] = 1.0  # 8 points better, on the same items
    comparison = accuracy_difference([reference], [method])
    # One seed each: the paired t interval over items; the differences are 80 ones and 920 zeros.
    from scipy.stats import t
    half = t.ppf(0.975, 999) * math.sqrt(0.08 * 0.92 * 1000 / 999) / math.sqrt(1000)
    assert (comparison.value, comparison.low, comparison.high) == pytest.approx((0.08, 0.08 - half, 0.08 + half))
    assert comparison.seeds == 1 and not comparison.significant  # one calibration seed marks nothing
    three = accuracy_difference([reference.repeat(3, 1)], [method.repeat(3, 1)], same_seeds=True)
    assert three.significant and three.low > 0
    assert not accuracy_difference([reference.repeat(3, 1)], [reference.repeat(3, 1)], same_seeds=True).significant


def test_accuracy_difference_over_tasks_averages_their_differences_and_adds_their_variances():
    from scipy.stats import t
    generator = torch.Generator().manual_seed(10)
    tasks = [(torch.rand(n, generator=generator) < 0.6).double() for n in (200, 500)]
    methods = [(torch.rand(n, generator=generator) < 0.5).double() for n in (200, 500)]
    comparison = accuracy_difference(tasks, methods)
    d = [m - r for r, m in zip(tasks, methods)]
    parts = [x.var().item() / x.numel() / 4 for x in d]
    df = sum(parts) ** 2 / sum(p * p / (x.numel() - 1) for p, x in zip(parts, d))
    half = t.ppf(0.975, df) * math.sqrt(sum(parts))
    value = sum(x.mean().item() for x in d) / 2
    assert (comparison.value, comparison.low, comparison.high) == pytest.approx((value, value - half, value + half))


def test_mean_accuracy_weights_tasks_equally_and_resamples_within_each():
    small, large = [1.0] * 10, [0.0] * 1000
    estimate = accuracy_estimate([small, large])
    # Each task keeps its weight in every resample, and neither varies: the interval is a point.
    assert estimate.value == estimate.low == estimate.high == pytest.approx(0.5)
    seeds = accuracy_estimate([[[1, 0, 1, 1], [0, 0, 1, 0]]])
    assert seeds.seeds == 2 and seeds.value == pytest.approx(0.5) and seeds.std == pytest.approx(math.sqrt(0.125))
