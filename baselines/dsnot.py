"""DSnoT (Zhang et al., ICLR 2024; github.com/zyxxmu/DSnoT): a training-free prune-and-grow pass on top
of another method's mask, as the authors' lib/prune.py (`prune_DSnoT`, HEAD 4c029df) runs it.

Per output row r of a linear with weights W and calibration inputs x, D_rj = W_rj S_j with S_j the mean
over calibration sequences of sum_t x_tj, and the row's reconstruction error e_r = sum over its pruned j
of D_rj (the dense output minus the sparse one, summed over tokens). Each cycle swaps, in every row
still active, one pruned weight back in and one kept weight out, so that e moves towards 0:
- regrow: the pruned j with the largest D_rj / var_j when e_r > 0, the smallest when e_r <= 0 (var_j:
  the within-sequence variance of x_j averaged over sequences, to the power `pow_of_var_regrowing`;
  a list sorted once, walked by one pointer from each end);
- prune (unstructured): among kept weights ordered as the authors order them (D < 0 by ascending
  Wanda score, then D > 0 by descending Wanda score, whatever the base method; see _prune_order), the
  next from the front when e_r >= 0, from the back when e_r < 0; (N:M) the kept weight with the smallest base score
  in the regrown weight's own block of M, so the N:M pattern holds;
- a row stops for good once |e_r| <= `update_threshold` before a swap (N:M also stops a row whose swap
  would flip the sign of e_r against its initial sign; the unstructured branch runs without that check,
  the authors' default `--without_same_sign`); at most `max_cycle_time` cycles.
Kept weights keep their dense values (DSnoT changes the mask only). Linears whose first name part is
`skip_layer` (authors' default "mlp": the MLP projections) keep the base mask.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from prunebench import PruningMethod, RunningMean, Statistic, UsageError, hookimpl, registry

if TYPE_CHECKING:
    import torch

REQUIRED = ("input_sq_norm", "input_sum", "input_var")  # Wanda's scaler_row, DSnoT's sum_metric_row and var


class DSnoT(PruningMethod):
    name = "dsnot"
    description = ("DSnoT prune-and-grow on another method's mask (base=wanda|magnitude|ria|...): swaps pruned and "
                   "kept weights per row to drive the summed output error to 0; authors' defaults (50 cycles, "
                   "threshold 0.1, MLP skipped)")
    arguments = {"base": "wanda", "max_cycle_time": 50, "update_threshold": 0.1, "pow_of_var_regrowing": 1.0,
                 "skip_layer": "mlp", "group": "row"}

    def base(self, arguments) -> tuple[PruningMethod, dict]:
        name = arguments["base"]
        if name == self.name:
            raise UsageError("dsnot.base cannot be dsnot: name the method whose mask DSnoT starts from (e.g. wanda).")
        method = registry.get_method(name)
        if type(method).update is not PruningMethod.update:
            raise UsageError(f"dsnot cannot start from '{name}': it changes the kept weights, and DSnoT keeps their "
                             f"dense values; use base=wanda, magnitude or ria.")
        return method, method.resolve_arguments({"group": arguments["group"]} if "group" in method.arguments else {})

    def resolve_arguments(self, given):
        resolved = super().resolve_arguments(given)
        if resolved["max_cycle_time"] < 0 or resolved["update_threshold"] < 0:
            raise UsageError("Bad dsnot.max_cycle_time / update_threshold: both must be >= 0.")
        self.base(resolved)  # an unknown base is refused before any model loads
        return resolved

    def required_statistics(self, arguments):
        method, base_args = self.base(arguments)
        return tuple(dict.fromkeys(method.required_statistics(base_args) + REQUIRED))

    def select(self, weight, stats, context, **args):
        method, base_args = self.base(args)
        initial = method.select(weight, stats, context, **base_args)
        if context.linear_name.split(".")[0] == args["skip_layer"]:
            return initial
        w = weight.float()
        metric = w * stats["input_sum"].float().reshape(1, -1)
        variance = stats["input_var"].float().reshape(1, -1) ** args["pow_of_var_regrowing"] \
            if args["pow_of_var_regrowing"] else None
        if context.target.is_n_m:
            base_score = method.score(weight, stats, **base_args).float()
            return grow_and_prune_n_m(initial, metric, variance, base_score, context.target.m,
                                      args["max_cycle_time"], args["update_threshold"])
        wanda = w.abs() * stats["input_sq_norm"].float().sqrt().reshape(1, -1)
        return grow_and_prune(initial, metric, variance, wanda, args["max_cycle_time"], args["update_threshold"])


def _regrow_order(mask: torch.Tensor, metric: torch.Tensor, variance: torch.Tensor | None) -> torch.Tensor:
    """Every column of each row by ascending D / var over the pruned weights (kept ones count 0), stable."""
    import torch

    candidate = metric * mask
    if variance is not None:
        candidate = candidate / variance
    return torch.sort(candidate, dim=1, stable=True).indices


def _ends(last: torch.Tensor) -> torch.Tensor:
    """Each row's two list pointers, (rows, 2): the front at 0, the back at `last`."""
    import torch

    return torch.stack([torch.zeros_like(last), last], dim=1)


def _take(order: torch.Tensor, pointers: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """order[r, pointers[r, side[r]]] per row, (rows, 1); then that pointer moves inwards (+1 front, -1 back)."""
    import torch

    at = pointers.gather(1, side)
    picked = order.gather(1, at.clamp(0, order.shape[1] - 1))  # clamped only where a tiny row runs out
    pointers.scatter_(1, side, at + torch.where(side == 0, 1, -1))
    return picked


def grow_and_prune(mask: torch.Tensor, metric: torch.Tensor, variance: torch.Tensor | None, wanda: torch.Tensor,
                   cycles: int, threshold: float) -> torch.Tensor:
    """The unstructured branch (the authors' lib/prune.py, lines 667-852): the final mask, True = pruned."""
    import torch

    mask = mask.clone()
    rows = mask.shape[0]
    error = (metric * mask).sum(dim=1, keepdim=True)
    regrow = _regrow_order(mask, metric, variance)
    regrow_pointers = _ends(torch.full((rows,), mask.shape[1] - 1, dtype=torch.long))
    prune = _prune_order(mask, metric, wanda)
    prune_pointers = _ends(mask.logical_not().sum(dim=1) - 1)
    active = torch.ones(rows, 1, dtype=torch.bool)
    for _ in range(cycles):
        if not active.any():
            break
        grown = _take(regrow, regrow_pointers, (error > 0).long())
        pruned = _take(prune, prune_pointers, (error < 0).long())
        grown_metric, pruned_metric = metric.gather(1, grown), metric.gather(1, pruned)
        active &= error.abs() > threshold
        _swap(mask, grown, pruned, active, error, grown_metric, pruned_metric)
    return mask


def _prune_order(mask: torch.Tensor, metric: torch.Tensor, wanda: torch.Tensor) -> torch.Tensor:
    """The authors' list of kept weights to prune (lines 711-722 and return_reorder_indice, lines 109-149):
    kept weights by ascending Wanda score (stable); those with D < 0 in that order, then those with D > 0
    in reverse (ties too: the last-indexed first); a place that holds a D == 0 weight holds the row's
    lowest-score kept weight instead, as their index arithmetic fills it with 0. Pruned weights follow,
    never reached: the back pointer starts at the row's last kept one."""
    import torch

    columns = mask.shape[1]
    kept = mask.logical_not()
    ascending = torch.sort(torch.where(kept, wanda, float("inf")), dim=1, stable=True).indices
    position = torch.arange(columns).expand_as(mask)
    d, is_kept = metric.gather(1, ascending), kept.gather(1, ascending)
    key = torch.where(d < 0, position, torch.where(d > 0, 3 * columns - position, columns + position))
    key = torch.where(is_kept, key, 3 * columns + position)
    order = torch.sort(key, dim=1, stable=True).indices
    listed = ascending.gather(1, order)
    zero = (d.gather(1, order) == 0) & is_kept.gather(1, order)
    return torch.where(zero, ascending[:, :1], listed)


def _swap(mask, grown, pruned, active, error, grown_metric, pruned_metric) -> None:
    """In the active rows, regrow `grown` and prune `pruned`, moving the error by the difference; a row whose
    picks are not a pruned and a kept weight (its list pointer ran into the other kind) skips this cycle."""
    import torch

    was_pruned, was_kept = mask.gather(1, grown), mask.gather(1, pruned).logical_not()
    swap = active & was_pruned & was_kept
    mask.scatter_(1, pruned, swap | was_kept.logical_not())
    mask.scatter_(1, grown, was_pruned & swap.logical_not())
    # Two steps, as the authors' lines 842-851 do: (e + p) - g rounds differently from e + (p - g).
    error += torch.where(swap, pruned_metric, 0.0)
    error -= torch.where(swap, grown_metric, 0.0)


def grow_and_prune_n_m(mask: torch.Tensor, metric: torch.Tensor, variance: torch.Tensor | None,
                       score: torch.Tensor, m: int, cycles: int, threshold: float) -> torch.Tensor:
    """The N:M branch (lines 520-665): each swap stays inside the regrown weight's block of m columns."""
    import torch

    mask = mask.clone()
    rows = mask.shape[0]
    error = (metric * mask).sum(dim=1, keepdim=True)
    initial_sign = error.sign()
    regrow = _regrow_order(mask, metric, variance)
    regrow_pointers = _ends(torch.full((rows,), mask.shape[1] - 1, dtype=torch.long))
    score = score.masked_fill(mask, float("inf"))  # pruned weights are never the one pruned
    offsets = torch.arange(m).reshape(1, -1)
    active = torch.ones(rows, 1, dtype=torch.bool)
    for _ in range(cycles):
        if not active.any():
            break
        grown = _take(regrow, regrow_pointers, (error > 0).long())
        block = grown - grown % m + offsets
        pruned = block.gather(1, score.gather(1, block).argmin(dim=1, keepdim=True))
        grown_metric, pruned_metric = metric.gather(1, grown), metric.gather(1, pruned)
        after = error + pruned_metric - grown_metric
        valid = mask.gather(1, grown) & mask.gather(1, pruned).logical_not()
        active &= (valid.logical_not() | (initial_sign == after.sign())) & (error.abs() > threshold)
        score.scatter_(1, pruned, float("inf"))
        _swap(mask, grown, pruned, active, error, grown_metric, pruned_metric)
    return mask


class _InputSum(RunningMean):
    def fold(self, inputs, outputs):
        for window in self.windows(inputs):
            self.total += window.sum(dim=0).double()


class _InputVariance(RunningMean):
    def fold(self, inputs, outputs):
        for window in self.windows(inputs):
            self.total += window.var(dim=0, unbiased=False).double()


class InputSum(Statistic):
    name = "input_sum"
    description = "per input feature j: mean over sequences of sum_t x_tj (DSnoT's sum_metric_row)"

    def accumulator(self, linear, device, arguments):
        return _InputSum((linear.in_features,), device)


class InputVariance(Statistic):
    name = "input_var"
    description = "per input feature j: mean over sequences of the within-sequence variance of x_j (DSnoT's var)"

    def accumulator(self, linear, device, arguments):
        return _InputVariance((linear.in_features,), device)


@hookimpl
def register_methods(register):
    register(DSnoT())


@hookimpl
def register_statistics(register):
    register(InputSum())
    register(InputVariance())
