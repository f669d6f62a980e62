"""Intervals and paired comparisons for benchmark numbers, over evaluation windows (perplexity) or items
(zero-shot accuracy), and over calibration seeds when a cell has several.

What varies, and how it is covered:

- Windows / items. A perplexity is exp(mean of per-window mean NLLs) over a few hundred windows of
  one text; an accuracy is a mean over a task's items. With one calibration seed a cell's interval is
  the percentile bootstrap over them (2000 resamples, a fixed seed so a report is reproducible).
- Calibration seeds. Every seed is scored on the same windows (items): seeds and windows are crossed,
  not nested. With several seeds a cell's interval, and every comparison, is a t interval whose
  variance has a seed, a window and a residual component (two-way random-effects mean squares,
  Welch-Satterthwaite degrees of freedom): `mean_interval`, `mean_difference_interval`. A bootstrap
  over three seeds has 10 distinct seed resamples and understates their variance by (S - 1) / S; the
  t interval holds its coverage with three seeds (tests/test_statistics_coverage.py).
- Pairing. Every method is evaluated on the same windows and items, so a comparison works on the
  per-window (per-item) differences: window difficulty, which moves both methods together, cancels.
  A perplexity ratio is exp of the mean log-perplexity difference (`log_ratio_interval`); an accuracy
  difference the mean correctness difference. `same_seeds=True` says both methods were calibrated on
  the same seeds (the same calibration sets, in the same order), which pairs the seeds too.
- Marks. A comparison is significant when its interval excludes no difference (1 for a ratio, 0 for
  a difference) and it rests on at least three calibration seeds (`Comparison.enough_seeds`).
- Several tasks. A mean accuracy over tasks averages per-task accuracies, so every task keeps its
  weight; tasks are independent strata (their variances add, divided by the number of tasks squared;
  one seed: items resampled within each task).
- One task, one seed, 0/1 correctness: the Wilson score interval (closed form, and not empty when
  every item is right or every item is wrong, where a bootstrap collapses to a point).

Inputs with non-finite values (a diverged run) give non-finite or NaN ends; callers show such cells
as diverged rather than asking for their interval.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..api.tables import Comparison

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
# Elements gathered at once (seeds x resamples x items); bounds memory for tasks with 10k items.
_CHUNK_ELEMENTS = 1 << 22

# One run (items) or several calibration seeds (seeds x items).
Runs = Sequence[float] | Sequence[Sequence[float]] | torch.Tensor


@dataclass(frozen=True)
class Estimate:
    """A cell's value (mean over seeds), its interval, and the std over seeds (None for one seed)."""

    value: float
    low: float
    high: float
    std: float | None = None
    seeds: int = 1


def perplexity_estimate(window_nlls: Runs, *, resamples: int = RESAMPLES, seed: int = SEED,
                        level: float = LEVEL) -> Estimate:
    """Perplexity with its interval from per-window mean NLLs: 1-D (one run: the percentile bootstrap over
    windows) or seeds x windows (the value is the mean of the seeds' perplexities; the interval is exp of the
    crossed seeds x windows t interval of the mean NLL, `mean_interval`, whose coverage holds with three seeds)."""
    runs = _runs(window_nlls)
    if runs.shape[0] > 1:
        _, low, high = mean_interval([runs], level=level)
        return _seeds_estimate([runs], torch.exp, math.exp(low), math.exp(high))
    [statistic] = _bootstrap([[runs]], resamples, seed, torch.exp)
    return _estimate([runs], torch.exp, statistic, level)


def perplexity_ratio(reference_nlls: Runs, method_nlls: Runs, *, same_seeds: bool = False, resamples: int = RESAMPLES,
                     seed: int = SEED, level: float = LEVEL) -> Comparison:
    """Method perplexity / reference perplexity on the same windows: exp of the mean over seeds of the
    per-seed log-perplexity difference, with the crossed seeds x windows t interval of
    `log_ratio_interval` (its coverage holds with three seeds; a bootstrap over three seeds does not).
    `same_seeds` pairs the two methods' seeds. `resamples` and `seed` are unused (no resampling)."""
    reference, method = _runs(reference_nlls), _runs(method_nlls)
    _same_items([reference], [method], same_seeds)
    mean, low, high = log_ratio_interval(reference, method, same_seeds=same_seeds, level=level)
    return Comparison(math.exp(mean), math.exp(low), math.exp(high), null=1.0,
                      seeds=max(reference.shape[0], method.shape[0]))


def log_ratio_interval(reference: torch.Tensor, method: torch.Tensor, *, same_seeds: bool = False,
                       level: float = LEVEL) -> tuple[float, float, float]:
    """(D, low, high): D = mean(method NLLs) - mean(reference NLLs), both (seeds, windows) on the same
    windows, and its t interval from the crossed random-effects variance (seeds and windows crossed,
    since every seed is scored on the same windows):

        one matrix X = method - reference, S x W (seeds paired: the same calibration sets, or one
        side a single run):
            MS_seed = W var(row means), MS_window = S var(column means), MS_error = residual mean square,
            Var(D) = max(MS_seed + MS_window - MS_error, MS_seed, MS_window) / (S W);
        two sides with independent seeds, several each (windows still shared):
            Var(D) = var_w(column-mean differences) / W + sum over sides of (MS_seed - MS_error) / (S W),
            at least the first term;

    degrees of freedom by Welch-Satterthwaite over the mean squares. With one seed on both sides it is
    the paired t interval over windows alone (df W - 1)."""
    return mean_difference_interval([reference], [method], same_seeds=same_seeds, level=level)


def mean_difference_interval(reference: Sequence[torch.Tensor], method: Sequence[torch.Tensor], *,
                             same_seeds: bool = False, level: float = LEVEL) -> tuple[float, float, float]:
    """(D, low, high) for D = mean over strata (tasks) of mean(method) - mean(reference), each stratum a
    (seeds, items) pair on the same items: each stratum's variance as in `log_ratio_interval`, the strata
    independent (Var(D) = sum of their variances / T^2), one t interval with Satterthwaite's df over all
    their mean squares. A perplexity ratio is the one-stratum case on log scale."""
    count = len(reference)
    mean, variance, parts = 0.0, 0.0, []
    for r, m in zip(reference, method):
        stratum_mean, stratum_variance, stratum_parts = _difference_variance(r.to(torch.float64), m.to(torch.float64),
                                                                             same_seeds)
        mean += stratum_mean / count
        variance += stratum_variance / count ** 2
        parts += [(value / count ** 2, df) for value, df in stratum_parts]
    if not math.isfinite(variance) or not math.isfinite(mean):
        return mean, math.nan, math.nan
    half = _t_half_width(variance, parts, level)
    return mean, mean - half, mean + half


def mean_interval(strata: Sequence[torch.Tensor], *, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of the mean over strata of each (seeds, items) stratum's grand mean, by the crossed
    random-effects t interval (seed, item and residual variance): a cell's own interval over several seeds."""
    return mean_difference_interval([torch.zeros_like(s) for s in strata], list(strata), same_seeds=True, level=level)


def _difference_variance(reference: torch.Tensor, method: torch.Tensor,
                         same_seeds: bool) -> tuple[float, float, list[tuple[float, int]]]:
    """mean(method) - mean(reference) of one stratum, Var of it, and its (component, df) parts."""
    windows = method.shape[1]
    if same_seeds or reference.shape[0] == 1 or method.shape[0] == 1:
        variance, parts = _crossed_variance(method - reference)
    else:
        difference = method.mean(dim=0) - reference.mean(dim=0)
        window_part = difference.var().item() / windows
        parts = [(window_part, windows - 1)]
        for side in (method, reference):
            seeds = side.shape[0]
            ms_seed, ms_error = _mean_squares(side)[::2]
            parts += [(ms_seed / (seeds * windows), seeds - 1), (-ms_error / (seeds * windows), (seeds - 1) * (windows - 1))]
        variance = sum(value for value, _ in parts)
        if variance < window_part:  # the seed terms estimated below zero: the windows' part alone
            variance, parts = window_part, parts[:1]
    return (method.mean() - reference.mean()).item(), variance, parts


def _mean_squares(x: torch.Tensor) -> tuple[float, float, float]:
    """(MS_seed, MS_window, MS_error) of a seeds x windows table (two-way, one value per cell)."""
    seeds, windows = x.shape
    rows, columns, grand = x.mean(dim=1), x.mean(dim=0), x.mean()
    residual = x - rows[:, None] - columns[None, :] + grand
    return (windows * rows.var().item(), seeds * columns.var().item(),
            residual.pow(2).sum().item() / ((seeds - 1) * (windows - 1)))


def _crossed_variance(x: torch.Tensor) -> tuple[float, list[tuple[float, int]]]:
    """Var(mean of x) for seeds x windows x with crossed random effects, and its (component, df) parts."""
    seeds, windows = x.shape
    if seeds == 1:
        part = x.var().item() / windows
        return part, [(part, windows - 1)]
    ms_seed, ms_window, ms_error = _mean_squares(x)
    cells = seeds * windows
    combined = ms_seed + ms_window - ms_error
    if combined >= max(ms_seed, ms_window):
        return combined / cells, [(ms_seed / cells, seeds - 1), (ms_window / cells, windows - 1),
                                  (-ms_error / cells, (seeds - 1) * (windows - 1))]
    if ms_seed >= ms_window:
        return ms_seed / cells, [(ms_seed / cells, seeds - 1)]
    return ms_window / cells, [(ms_window / cells, windows - 1)]


def _t_half_width(variance: float, parts: list[tuple[float, int]], level: float) -> float:
    """Half-width of a t interval of a mean with `variance`, df by Welch-Satterthwaite over its `parts`."""
    from scipy.stats import t as student

    return float(student.ppf(1 - (1 - level) / 2, _satterthwaite(parts))) * math.sqrt(max(variance, 0.0))


def _satterthwaite(parts: list[tuple[float, int]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of mean-square components."""
    denominator = sum(value * value / df for value, df in parts if df > 0)
    total = sum(value for value, _ in parts)
    return max(total * total / denominator, 1.0) if denominator > 0 else 1.0


def seconds_ratio(method_seconds: Sequence[float], reference_seconds: Sequence[float], *,
                  level: float = LEVEL) -> tuple[float, float, float]:
    """(ratio, low, high) of two sets of timings, one a calibration seed: exp of the difference of mean
    log seconds with Welch's t interval (the sides independent; NaN ends with fewer than two a side)."""
    a = torch.as_tensor(method_seconds, dtype=torch.float64).log()
    b = torch.as_tensor(reference_seconds, dtype=torch.float64).log()
    mean = (a.mean() - b.mean()).item()
    if a.numel() < 2 or b.numel() < 2:
        return math.exp(mean), math.nan, math.nan
    parts = [(a.var().item() / a.numel(), a.numel() - 1), (b.var().item() / b.numel(), b.numel() - 1)]
    half = _t_half_width(sum(v for v, _ in parts), parts, level)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def accuracy_estimate(tasks: Sequence[Runs], *, resamples: int = RESAMPLES, seed: int = SEED,
                      level: float = LEVEL) -> Estimate:
    """Mean accuracy over tasks from per-item correctness (each task: items, or seeds x items), with its interval:
    the Wilson interval for one task and one seed, the stratified bootstrap over items for several tasks and one
    seed, and the crossed seeds x items t interval (`mean_interval`) for several seeds."""
    strata = [_runs(task) for task in tasks]
    if not strata:
        raise ValueError("accuracy_estimate needs at least one task")
    if max(s.shape[0] for s in strata) > 1:
        _, low, high = mean_interval(strata, level=level)
        return _seeds_estimate(strata, _identity, low, high)
    if len(strata) == 1 and strata[0].shape[0] == 1 and _binary(strata[0]):
        low, high = wilson_interval(int(strata[0].sum().item()), strata[0].shape[1], level)
        return Estimate(_point(strata, _identity), low, high)
    [statistic] = _bootstrap([strata], resamples, seed, _identity)
    return _estimate(strata, _identity, statistic, level)


def accuracy_difference(reference_tasks: Sequence[Runs], method_tasks: Sequence[Runs], *, same_seeds: bool = False,
                        resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Comparison:
    """Method accuracy - reference accuracy (mean over tasks) on the same items, with the paired t interval of
    `mean_difference_interval` (per task: seeds x items crossed, as a perplexity ratio's; one seed each: the
    paired t interval over items). With several seeds the difference is of the means over seeds; `same_seeds`
    pairs the seeds too. `resamples` and `seed` are unused (no resampling)."""
    reference, method = [_runs(t) for t in reference_tasks], [_runs(t) for t in method_tasks]
    _same_items(reference, method, same_seeds)
    _, low, high = mean_difference_interval(reference, method, same_seeds=same_seeds, level=level)
    value = _point(method, _identity) - _point(reference, _identity)
    seeds = max(max(s.shape[0] for s in reference), max(s.shape[0] for s in method))
    return Comparison(value, low, high, null=0.0, seeds=seeds)


def wilson_interval(correct: int, total: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion correct / total."""
    if total < 1:
        raise ValueError("wilson_interval needs at least one item")
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


# -- the bootstrap -----------------------------------------------------------------------------


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _runs(values: Runs) -> torch.Tensor:
    """(seeds, items) float64 from one run (1-D) or several (2-D)."""
    runs = torch.as_tensor(values, dtype=torch.float64)
    if runs.ndim == 1:
        runs = runs.unsqueeze(0)
    if runs.ndim != 2 or runs.shape[0] < 1 or runs.shape[1] < 1:
        raise ValueError(f"expected items or seeds x items with at least one of each, got shape {tuple(runs.shape)}")
    return runs


def _binary(runs: torch.Tensor) -> bool:
    return bool(((runs == 0) | (runs == 1)).all())


def _same_items(reference: list[torch.Tensor], method: list[torch.Tensor], same_seeds: bool) -> None:
    # Pairing is only meaningful on the same windows (items), in the same order.
    if [r.shape[1] for r in reference] != [m.shape[1] for m in method]:
        raise ValueError("a paired comparison needs both methods evaluated on the same windows (items)")
    if same_seeds and {r.shape[0] for r in reference} != {m.shape[0] for m in method}:
        raise ValueError("same_seeds=True needs both methods run with the same number of seeds")


def _per_seed(strata: list[torch.Tensor], transform: Callable) -> torch.Tensor:
    """Each seed's statistic: transform(mean over strata of the stratum's mean)."""
    return transform(torch.stack([s.mean(dim=1) for s in strata]).mean(dim=0))


def _point(strata: list[torch.Tensor], transform: Callable) -> float:
    return _per_seed(strata, transform).mean().item()


def _estimate(strata: list[torch.Tensor], transform: Callable, statistic: torch.Tensor, level: float) -> Estimate:
    return _seeds_estimate(strata, transform, *_percentiles(statistic, level))


def _seeds_estimate(strata: list[torch.Tensor], transform: Callable, low: float, high: float) -> Estimate:
    """The mean over seeds of each seed's statistic, the given interval, and the std over seeds (if several)."""
    per_seed = _per_seed(strata, transform)
    std = per_seed.std().item() if per_seed.numel() > 1 else None
    return Estimate(per_seed.mean().item(), low, high, std=std, seeds=per_seed.numel())


def _percentiles(statistic: torch.Tensor, level: float) -> tuple[float, float]:
    """Percentile interval (linear interpolation, as numpy.percentile's default)."""
    tail = (1 - level) / 2
    low, high = torch.quantile(statistic, torch.tensor([tail, 1 - tail], dtype=statistic.dtype)).tolist()
    return low, high


def _bootstrap(groups: list[list[torch.Tensor]], resamples: int, seed: int, transform: Callable,
               same_seeds: bool = False) -> list[torch.Tensor]:
    """One (resamples,) tensor of the cell statistic per group (method), resampled together.

    Each group is a list of strata (tasks; one for perplexity), each a (seeds, items) tensor; the
    groups share item counts. In each resample the item indices of each stratum are drawn once and
    used by every seed of every group; each group's seeds are then drawn on their own, or once for
    all groups when `same_seeds`.
    """
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    generator = torch.Generator().manual_seed(seed)
    sizes = [s.shape[1] for s in groups[0]]
    widest = max(s.shape[0] for group in groups for s in group)
    chunk = max(1, min(resamples, _CHUNK_ELEMENTS // (widest * sum(sizes))))
    results: list[list[torch.Tensor]] = [[] for _ in groups]
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        # Items first, so one run with one stratum draws exactly randint(0, n, (count, n)).
        draws = [torch.randint(0, n, (count, n), generator=generator) for n in sizes]
        shared = None
        for group, out in zip(groups, results):
            # (seeds, count): each seed's stratum means under this chunk's shared item draws.
            stratum_means = torch.stack([stratum[:, index].mean(dim=2) for stratum, index in zip(group, draws)])
            per_seed = transform(stratum_means.mean(dim=0))
            seeds = per_seed.shape[0]
            if seeds > 1:
                chosen = shared if shared is not None else torch.randint(0, seeds, (count, seeds), generator=generator)
                shared = chosen if same_seeds else None
                per_seed = per_seed.gather(0, chosen.T)
            out.append(per_seed.mean(dim=0))
    return [torch.cat(out) for out in results]


__all__ = ["Comparison", "Estimate", "LEVEL", "RESAMPLES", "SEED", "accuracy_difference", "accuracy_estimate",
           "log_ratio_interval", "mean_difference_interval", "mean_interval", "perplexity_estimate", "seconds_ratio", "perplexity_ratio", "wilson_interval"]
