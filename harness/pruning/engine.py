"""The sequential layer-by-layer pruning engine (Wanda's and SparseGPT's layer-wise
protocol: calibrate a layer, prune it, feed its outputs to the next): orchestration only.

The layer walk is `prunebench.models.walk`, statistics collection `prunebench.pruning.accumulate`, layer-wise
allocation a registered `prunebench.LayerAllocation` (uniform, OWL in `prunebench.pruning.owl`, or a
plugin's); this module ties them to a method and measures the run.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .. import registry
from ..api.allocation import LayerAllocation, allocation_label, resolve_settings
from ..api.errors import UsageError
from ..api.method import LinearContext, PruningMethod
from ..api.options import PROPAGATIONS
from ..api.sparsity import SparsityTarget, parse_sparsity
from ..models.walk import (
    capture_inputs,
    decoder_layers,
    default_device,
    prunable_linears,
    walk_layers,
)
from ..registry import allocation_for
from .accumulate import collect_statistics
from .measure import Stopwatch, measure_peak_memory


@dataclass
class PruneReport:
    """What one pruning run did, measured."""

    method: str
    arguments: dict[str, Any]
    sparsity: str
    propagate: str
    nsamples: int
    seqlen: int
    device: str
    batch_size: int = 8
    allocation: str = "uniform"
    layer_targets: list[float] = field(default_factory=list)
    layer_sparsity: list[float] = field(default_factory=list)
    linear_sparsity: dict[str, float] = field(default_factory=dict)
    overall_sparsity: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    memory_before_bytes: int = 0
    peak_memory_bytes: int = 0
    # Wall seconds of each decoder layer's step: its move to the device, statistics, scores, masks,
    # updates and propagation (on CUDA, synchronised): what a per-layer cost estimate starts from.
    layer_seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Run-wide tallies a method records (LinearContext.count): name -> {"count", "total", "fraction"}.
    diagnostics: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_method(method: "str | PruningMethod") -> PruningMethod:
    return registry.get_method(method) if isinstance(method, str) else method


def check_n_m_fits(model: nn.Module, target: SparsityTarget) -> None:
    """Refuse an N:M target whose M does not divide every prunable input width."""
    if not target.is_n_m:
        return
    for index, layer in enumerate(decoder_layers(model)):
        for name, linear in prunable_linears(layer).items():
            if linear.in_features % target.m:
                raise UsageError(
                    f"N:M sparsity {target} needs M={target.m} to divide the input width {linear.in_features} "
                    f"of layer {index} {name}; pick an M that divides it (e.g. 2:4)."
                )


def allocated_targets(allocation: LayerAllocation, model: nn.Module, calibration: torch.Tensor,
                      target: SparsityTarget, settings: Mapping[str, Any], **run: Any) -> list[SparsityTarget]:
    """Each decoder layer's target from an unstructured allocation, checked: one per layer, a ratio
    in [0, 1) (pruned as an exact count per matrix) or a SparsityTarget as it is."""
    layers = len(decoder_layers(model))
    given = allocation.layer_sparsities(model, calibration, target, settings, **run)
    if len(given) != layers:
        raise UsageError(f"Allocation '{allocation.name}' gave {len(given)} layer sparsities for {layers} decoder "
                         "layers; fix the plugin to return one per decoder layer.")
    targets = []
    for index, value in enumerate(given):
        if isinstance(value, SparsityTarget):
            targets.append(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1:
            targets.append(target.with_ratio(float(value)))
        else:
            raise UsageError(f"Allocation '{allocation.name}' gave layer {index} the sparsity {value!r}; "
                             "fix the plugin to return ratios in [0, 1).")
    return targets


@torch.no_grad()
def prune(
    model: nn.Module,
    method: "str | PruningMethod",
    sparsity: "float | str | SparsityTarget",
    calibration: torch.Tensor,
    *,
    batch_size: int = 8,
    device: "str | torch.device | None" = None,
    propagate: str = "pruned",
    progress: bool = True,
    allocation: str = "uniform",
    allocation_settings: "Mapping[str, Any] | None" = None,
    **method_args: Any,
) -> PruneReport:
    """Prune `model` in place, decoder layer by decoder layer, and return a PruneReport.

    `calibration` is a LongTensor of token ids (nsamples, L). `propagate` chooses what feeds the
    next layer: the pruned layer's outputs (default, as Wanda and SparseGPT) or the dense ones.
    `allocation` names a registered unstructured allocation with its `allocation_settings`:
    "uniform" keeps every layer at the target, "owl" (settings m and lambda) gives each decoder
    layer its own sparsity by OWL, keeping the mean at the target.
    """
    method = resolve_method(method)
    arguments = method.resolve_arguments(method_args)
    target = parse_sparsity(sparsity)
    if propagate not in PROPAGATIONS:
        raise UsageError(f"Bad propagate '{propagate}': use one of {', '.join(PROPAGATIONS)}.")
    if calibration.dim() != 2 or calibration.dtype != torch.long:
        raise UsageError("calibration must be a LongTensor of token ids shaped (nsamples, L).")
    check_n_m_fits(model, target)
    registered_statistics = registry.registered("register_statistics")
    needed = method.required_statistics(arguments)
    missing = [s for s in needed if s not in registered_statistics]
    if missing:
        raise UsageError(f"Method '{method.name}' needs unregistered statistic(s) {', '.join(missing)}; install the plugin that provides them.")
    statistics = [registered_statistics[s].item for s in needed]
    device = torch.device(device) if device is not None else default_device()
    report = PruneReport(
        method=method.name, arguments=arguments, sparsity=str(target), propagate=propagate,
        nsamples=calibration.shape[0], seqlen=calibration.shape[1], device=str(device), batch_size=batch_size,
    )
    layer_allocation = allocation_for(allocation, "unstructured", f"method '{method.name}'")
    settings = resolve_settings(layer_allocation, allocation_settings or {})
    if target.is_n_m and layer_allocation.name != "uniform":  # an N:M pattern is the same in every layer
        raise UsageError(f"Allocation '{layer_allocation.name}' gives each layer its own ratio, which needs an "
                         f"unstructured sparsity ratio, not N:M {target}; give a ratio such as 0.5 or allocation uniform.")
    report.allocation = allocation_label(layer_allocation, settings)
    watch = Stopwatch(device, ("calibration_forward", "score_mask", "weight_update"))
    counts: dict[str, list[int]] = {}
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with measure_peak_memory(device) as memory:
        with watch.time("calibration_forward"):
            layer_targets = allocated_targets(layer_allocation, model, calibration, target, settings,
                                              batch_size=batch_size, device=device, progress=progress)
        report.layer_targets = [t.ratio for t in layer_targets]
        # A method with no statistics (magnitude) needs no calibration forward at all.
        captured = None
        if statistics:
            with watch.time("calibration_forward"):
                captured = capture_inputs(model, calibration, batch_size, device, progress)
        total_zeros = total_numel = 0
        layer_start = time.perf_counter()
        for step in walk_layers(model, captured, device, progress=progress, desc=f"{method.name} layers"):
            linears = prunable_linears(step.layer)
            stats = {name: {} for name in linears}
            if captured is not None:
                with watch.time("calibration_forward"):
                    stats, dense_outputs = collect_statistics(step.layer, step.inputs, linears, statistics, device,
                                                              arguments, keep_outputs=propagate == "dense")
            zeros = numel = 0
            for name, linear in linears.items():
                weight = linear.weight.data
                context = LinearContext(layer_targets[step.index], registry.make_mask, step.index, name, report.notes,
                                        counts)
                method.diagnose(weight, stats[name], context, **arguments)
                with watch.time("score_mask"):
                    mask = method.select(weight, stats[name], context, **arguments)
                with watch.time("weight_update"):
                    method.update(weight, mask, stats[name], context, **arguments)
                linear_zeros = int((weight == 0).sum())
                report.linear_sparsity[f"{step.index}.{name}"] = linear_zeros / weight.numel()
                zeros, numel = zeros + linear_zeros, numel + weight.numel()
            report.layer_sparsity.append(zeros / numel if numel else 0.0)
            total_zeros, total_numel = total_zeros + zeros, total_numel + numel
            del stats
            if captured is not None:
                with watch.time("calibration_forward"):
                    step.propagate(step.forward() if propagate == "pruned" else dense_outputs)
            watch.sync()
            report.layer_seconds.append(time.perf_counter() - layer_start)
            layer_start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    report.timings = dict(watch.totals, total=time.perf_counter() - start)
    report.memory_before_bytes, report.peak_memory_bytes = memory.before_bytes, memory.peak_bytes
    report.overall_sparsity = total_zeros / total_numel if total_numel else 0.0
    report.diagnostics = {name: {"count": hits, "total": total, "fraction": hits / total if total else 0.0}
                          for name, (hits, total) in counts.items()}
    model.train(was_training)
    return report
