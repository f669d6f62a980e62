"""OWL (Yin et al. 2024), a plugin: outlier-weighted layer sparsities for unstructured pruning,
registered through the allocation hook."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import registry
from ..api.allocation import LayerAllocation
from ..api.errors import UsageError
from ..api.hookspecs import hookimpl

if TYPE_CHECKING:  # torch loads with the first tensor, not with the plugin (fast `validate`)
    import torch

    from ..api.sparsity import SparsityTarget


def outlier_share(scores: torch.Tensor, m: float) -> float:
    """Share (in %) of `scores` above m times their mean (OWL's check_outlier_mean)."""
    return float((scores > scores.mean() * m).sum()) / scores.numel() * 100


def owl_sparsities(outlier_shares: list[float], sparsity: float, lam: float, floor: float = 0.01) -> list[float]:
    """Per-layer sparsities: keep ratios spread over [0, 2 lambda] by outlier share, mean 1 - s.

    A layer that would fall below `floor` is held at it and the other layers move down together,
    so that the mean stays s (OWL's code raises such a layer without compensating).
    """
    import torch

    shares = torch.tensor(outlier_shares, dtype=torch.float64)
    spread = shares.max() - shares.min()
    keep = (shares - shares.min()) / spread * 2 * lam if spread > 0 else torch.zeros_like(shares)
    raw = 1 - (keep - keep.mean() + (1 - sparsity))
    floored = torch.zeros_like(raw, dtype=torch.bool)
    while True:
        free = ~floored
        if not free.any():
            break
        shift = (sparsity * raw.numel() - floor * int(floored.sum()) - float(raw[free].sum())) / int(free.sum())
        newly = free & (raw + shift < floor)
        if not newly.any():
            break
        floored |= newly
    return [floor if f else float(r + shift) for r, f in zip(raw, floored)]


def owl_layer_targets(model, calibration, target: SparsityTarget, *, m: float = 5.0, lam: float = 0.08,
                      batch_size: int = 8, device=None, progress: bool = False) -> list[SparsityTarget]:
    """OWL's allocation from Wanda scores on the dense model (dense propagation, as OWL's code)."""
    import torch

    from ..models.walk import (
        capture_inputs,
        default_device,
        prunable_linears,
        walk_layers,
    )
    from .accumulate import collect_statistics

    if target.is_n_m:
        raise UsageError("OWL allocation needs an unstructured sparsity ratio, not N:M.")
    if m <= 0 or not 0 <= lam < 0.5:
        raise UsageError(f"Bad OWL settings M={m}, lambda={lam}: need M > 0 and 0 <= lambda < 0.5.")
    device = torch.device(device) if device is not None else default_device()
    statistic = registry.get_statistic("input_sq_norm")
    captured = capture_inputs(model, calibration, batch_size, device, progress)
    shares = []
    for step in walk_layers(model, captured, device, progress=progress, desc="OWL statistics"):
        linears = prunable_linears(step.layer)
        stats, outputs = collect_statistics(step.layer, step.inputs, linears, [statistic], device, {}, keep_outputs=True)
        scores = [
            (linear.weight.abs() * stats[name]["input_sq_norm"].sqrt().reshape(1, -1)).flatten()
            for name, linear in linears.items()
        ]
        shares.append(outlier_share(torch.cat(scores), m))
        step.propagate(outputs)  # dense propagation, as OWL's code
    return [target.with_ratio(s) for s in owl_sparsities(shares, target.ratio, lam)]


class OWL(LayerAllocation):
    name = "owl"
    description = ("OWL: a layer's sparsity falls with its share of Wanda scores above m x their mean, spread "
                   "2 lambda, mean kept at the target")
    tracks = ("unstructured",)
    settings = {"m": 5.0, "lambda": 0.08}

    def layer_sparsities(self, model, calibration, target, settings, *, batch_size, device, progress):
        return owl_layer_targets(model, calibration, target, m=settings["m"], lam=settings["lambda"],
                                 batch_size=batch_size, device=device, progress=progress)


@hookimpl
def register_allocations(register):
    register(OWL())
