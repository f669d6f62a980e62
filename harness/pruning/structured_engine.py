"""The structured pruning pass: refuse an impossible budget from the layer layout alone, score coupled
structures on one calibration walk, allocate the budget over layers, and remove the chosen heads, FFN
channels or decoder layers physically.

Propagation: by default ("dense") every layer is scored on the dense model's activations, then the
allocation sees all scores. With "pruned", each layer loses its structures as soon as it is scored and
the next layer is scored on the pruned layer's outputs (as unstructured pruning); that needs removal
counts known before scoring (an allocation with `needs_scores=False`, such as uniform) and a method
that scores layer by layer from its inputs (not from whole-model gradients, not a model-wide
`finalize`, not layer removal).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .. import registry
from ..api.allocation import LayerAllocation, needs_scores
from ..api.errors import UsageError
from ..api.options import PROPAGATIONS
from ..api.sparsity import SparsityTarget, parse_sparsity
from ..api.structured import LayerEvidence, LayerScores, StructuredMethod
from ..models.structure import (
    LayerStructure,
    keep_channels,
    keep_heads,
    keep_layers,
    prunable_parameters,
    read_structures,
)
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
from .structured_allocation import LayerBudget, Plan


@dataclass
class StructuredReport:
    """What one structured pruning run did: the budget asked for and the parameters actually removed."""

    method: str
    arguments: dict[str, Any]
    sparsity: str
    kinds: list[str]
    allocation: str
    nsamples: int
    seqlen: int
    device: str
    propagate: str = "dense"  # with the reason when it does not apply (gradient methods)
    parameters_before: int = 0
    parameters_after: int = 0
    prunable_before: int = 0
    prunable_after: int = 0
    removed_fraction: float = 0.0  # of the prunable parameters, as measured after removal
    layer_importance: list[float | None] = field(default_factory=list)
    kept: list[dict[str, int]] = field(default_factory=list)  # per remaining layer: heads, channels
    removed_layers: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    memory_before_bytes: int = 0
    peak_memory_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_structured(method: "str | StructuredMethod") -> StructuredMethod:
    return registry.get_structured_method(method) if isinstance(method, str) else method


def check_target(method: StructuredMethod, sparsity: "float | str | SparsityTarget") -> SparsityTarget:
    """A ratio target; N:M is a pattern inside dense matrices, which structured removal cannot give."""
    target = parse_sparsity(sparsity)
    if target.is_n_m:
        raise UsageError(f"Structured method '{method.name}' removes whole structures and takes a ratio of the "
                         f"prunable parameters (e.g. 0.3), not N:M sparsity {target}.")
    return target


def accumulate_gradients(model: nn.Module, calibration: torch.Tensor, batch_size: int, device: torch.device,
                         checkpointing: bool = False) -> float:
    """Gradients of the mean next-token loss over `calibration` in every decoder linear's `weight.grad`.

    Memory: one whole-model backward per batch (activations of one batch), gradients kept only for
    decoder-layer linear weights (embeddings and head frozen); `checkpointing` trades compute for
    activation memory on larger models. Returns the mean loss.
    """
    linear_weights = {id(linear.weight) for layer in decoder_layers(model) for linear in prunable_linears(layer).values()}
    flags = {p: p.requires_grad for p in model.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in linear_weights)
        parameter.grad = None
    if checkpointing:
        model.gradient_checkpointing_enable()
    total = 0.0
    try:
        with torch.enable_grad():
            for batch in torch.split(calibration, batch_size):
                batch = batch.to(device)
                loss = model(input_ids=batch, labels=batch, use_cache=False).loss
                (loss * batch.shape[0] / calibration.shape[0]).backward()
                total += float(loss.detach()) * batch.shape[0] / calibration.shape[0]
    finally:
        for parameter, flag in flags.items():
            parameter.requires_grad_(flag)
        if checkpointing:
            model.gradient_checkpointing_disable()
    return total


def structured_allocation(method: StructuredMethod, arguments: Mapping[str, Any]) -> LayerAllocation:
    """The registered allocation the method's `allocation` argument names; it must serve structured pruning."""
    return allocation_for(arguments["allocation"], "structured", f"structured method '{method.name}'")


def check_propagation(method: StructuredMethod, allocation: LayerAllocation, propagate: str) -> str:
    """What `propagate` means for this method and allocation (the report's wording), or a one-line refusal."""
    if propagate not in PROPAGATIONS:
        raise UsageError(f"Bad propagate '{propagate}': use one of {', '.join(PROPAGATIONS)}.")
    if method.needs_gradients:
        if propagate != "dense":
            raise UsageError(f"Method '{method.name}' scores every layer from whole-model gradients of the dense model, "
                             "so propagate does not apply; leave it out (dense).")
        return "not applicable (scores from whole-model gradients of the dense model)"
    if propagate == "dense":
        return "dense (every layer scored on the dense model's activations)"
    if "layers" in method.kinds:
        raise UsageError(f"Method '{method.name}' ranks every layer before removing any, so it cannot score on "
                         "pruned outputs; use propagate dense.")
    if type(method).finalize is not StructuredMethod.finalize:
        raise UsageError(f"Method '{method.name}' adjusts its scores once every layer is scored, so it cannot prune "
                         "layer by layer; use propagate dense.")
    if needs_scores(allocation):
        raise UsageError(f"Allocation '{allocation.name}' needs every layer's scores before any layer is pruned, so "
                         "propagate pruned cannot apply; use allocation=uniform or propagate dense.")
    return "pruned (each layer scored on the outputs of the layers pruned before it)"


def layers_to_remove(target: SparsityTarget, count: int) -> int:
    """How many of `count` decoder layers a layer-removal method takes out (rounded half up); never all."""
    removed = math.floor(target.ratio * count + 0.5)
    if removed >= count:
        raise UsageError(f"Sparsity {target} would remove all {count} decoder layers; lower the sparsity.")
    return removed


def counts_before_scoring(method: StructuredMethod, target: SparsityTarget, structures: list[LayerStructure],
                          allocation: LayerAllocation, arguments: Mapping[str, Any]) -> list[dict[str, int]] | None:
    """What the layer layout settles before any forward: a budget no allocation can meet is refused, and an
    allocation that needs no scores gives its counts now (refusing one that would empty a layer)."""
    plan = _plan(method, target, structures, [], arguments)
    plan.check_reachable()
    return None if needs_scores(allocation) else allocation.allocate(plan, **arguments)


def check_budget(model: nn.Module, method: "str | StructuredMethod", sparsity: "float | str | SparsityTarget",
                 arguments: Mapping[str, Any]) -> None:
    """Refuse, from the model's layout alone, a budget that would empty a layer or the model: what
    `prunebench prune` checks right after loading, before calibration data and evaluation."""
    method = resolve_structured(method)
    target = check_target(method, sparsity)
    if "layers" in method.kinds:
        layers_to_remove(target, len(decoder_layers(model)))
    else:
        counts_before_scoring(method, target, read_structures(model), structured_allocation(method, arguments), arguments)


def _score_all(model, method, arguments, calibration, batch_size, device, structures, watch,
               prune_now: list[dict[str, int]] | None = None) -> list[LayerScores]:
    """Every layer's scores, on one walk. With `prune_now` (propagate pruned) each layer loses its
    structures right after it is scored and the next layer sees its pruned outputs; else the dense ones."""
    statistics = [registry.get_statistic(name) for name in method.statistics]
    needs_forward = bool(statistics) or method.needs_hidden
    captured = None
    if needs_forward:
        with watch.time("calibration_forward"):
            captured = capture_inputs(model, calibration, batch_size, device)
    scores = []
    for step in walk_layers(model, captured, device, desc=f"{method.name} scores"):
        evidence = LayerEvidence(step.index, step.layer, structures[step.index] if structures else None)
        if captured is not None:
            with watch.time("calibration_forward"):
                # Statistics keyed by the short names the structure uses (q_proj, down_proj, ...).
                linears = evidence.structure.linears if evidence.structure else prunable_linears(step.layer)
                keep_outputs = prune_now is None or method.needs_hidden  # pruned: the layer reruns after removal
                evidence.stats, outputs = collect_statistics(step.layer, step.inputs, linears, statistics, device,
                                                             arguments, keep_outputs=keep_outputs)
                evidence.hidden_in, evidence.hidden_out = step.inputs.hidden, outputs
        with watch.time("score"):
            scores.append(method.score_layer(evidence, **arguments))
        if prune_now is not None:
            with watch.time("removal"):
                _remove_lowest(method, structures[step.index], scores[-1], prune_now[step.index], arguments)
        if captured is not None:
            with watch.time("calibration_forward"):
                step.propagate(step.forward() if prune_now is not None else outputs)
    return scores


def _plan(method, target, structures, scores, arguments) -> Plan:
    kinds = tuple(k for k in method.kinds if k != "layers")
    layers = [LayerBudget({k: s.count(k) for k in ("heads", "channels")},
                          {k: s.unit_parameters(k) for k in ("heads", "channels")}, s.parameters()) for s in structures]
    return Plan(target.ratio, kinds, layers, scores, arguments["round_to"])


def _remove_layers(model, removed: int, scores, report) -> None:
    count = len(scores)
    importance = [s.importance for s in scores]
    order = sorted(range(count), key=lambda i: (importance[i], i))
    report.removed_layers = sorted(order[:removed])
    keep_layers(model, [i for i in range(count) if i not in report.removed_layers])


@torch.no_grad()
def structured_prune(model: nn.Module, method: "str | StructuredMethod", sparsity: "float | str | SparsityTarget",
                     calibration: torch.Tensor, *, batch_size: int = 8, device: "str | torch.device | None" = None,
                     propagate: str = "dense", progress: bool = False, **method_args: Any) -> StructuredReport:
    """Remove structures from `model` in place so that about `sparsity` of its prunable parameters go.

    Sparsity is the fraction of decoder-layer linear parameters removed; the report gives the
    fraction actually removed (heads, channel rounding and layers are coarse). `propagate` "dense"
    scores every layer on the dense model's activations; "pruned" prunes each layer before the next
    is scored (see the module's docstring for where it applies). The model's config is updated by
    `prunebench.models.checkpoints.save_structured` when saving.
    """
    method = resolve_structured(method)
    arguments = method.resolve_arguments(method_args)
    target = check_target(method, sparsity)
    allocation = structured_allocation(method, arguments)
    propagation = check_propagation(method, allocation, propagate)
    if calibration.dim() != 2 or calibration.dtype != torch.long:
        raise UsageError("calibration must be a LongTensor of token ids shaped (nsamples, L).")
    removes_layers = "layers" in method.kinds
    structures = read_structures(model) if set(method.kinds) - {"layers"} else None
    device = torch.device(device) if device is not None else default_device()
    watch = Stopwatch(device)

    # The budget is checked (and uniform counts computed) before any forward or backward pass.
    start = time.perf_counter()
    counts = None
    if removes_layers:
        layers_removed = layers_to_remove(target, len(decoder_layers(model)))
    else:
        with watch.time("allocation"):
            counts = counts_before_scoring(method, target, structures, allocation, arguments)
    report = StructuredReport(method.name, arguments, str(target), list(method.kinds), allocation.name,
                              calibration.shape[0], calibration.shape[1], str(device), propagation)
    report.parameters_before = sum(p.numel() for p in model.parameters())
    report.prunable_before = prunable_parameters(model)
    pruned_while_scoring = propagate == "pruned"
    was_training = model.training
    model.eval()
    with measure_peak_memory(device) as memory:
        if method.needs_gradients:
            with watch.time("gradients"):
                loss = accumulate_gradients(model, calibration, batch_size, device, arguments.get("checkpointing", False))
            report.notes.append(f"calibration loss {loss:.4f} (gradients of every decoder linear, whole-model backward)")
        try:
            scores = _score_all(model, method, arguments, calibration, batch_size, device, structures, watch,
                                prune_now=counts if pruned_while_scoring else None)
            with watch.time("score"):
                scores = method.finalize(scores, **arguments)
        finally:
            if method.needs_gradients:
                for parameter in model.parameters():
                    parameter.grad = None
        report.layer_importance = [s.importance for s in scores]
        with watch.time("removal"):
            if removes_layers:
                _remove_layers(model, layers_removed, scores, report)
            elif not pruned_while_scoring:
                if counts is None:
                    with watch.time("allocation"):
                        counts = allocation.allocate(_plan(method, target, structures, scores, arguments), **arguments)
                for structure, layer_scores, removed in zip(structures, scores, counts):
                    _remove_lowest(method, structure, layer_scores, removed, arguments)
    # Recovery (SAAP's LoRA step) is timed apart from the pruning total and outside its memory peak.
    recovery_start = time.perf_counter()
    recovered = method.recover(model, calibration, device, layer_importance=report.layer_importance, **arguments)
    if recovered is not None:
        report.notes.append(f"recovery: {recovered}")
        watch.totals["recovery"] = time.perf_counter() - recovery_start
    report.timings = dict(watch.totals, total=recovery_start - start)
    report.memory_before_bytes, report.peak_memory_bytes = memory.before_bytes, memory.peak_bytes
    report.parameters_after = sum(p.numel() for p in model.parameters())
    report.prunable_after = prunable_parameters(model)
    report.removed_fraction = 1 - report.prunable_after / report.prunable_before
    if set(method.kinds) - {"layers"}:
        report.kept = [{k: s.count(k) for k in ("heads", "channels")} for s in read_structures(model)]
    model.train(was_training)
    return report


def _remove_lowest(method: StructuredMethod, structure, layer_scores: LayerScores, removed: Mapping[str, int],
                   arguments: Mapping[str, Any]) -> None:
    """Remove the `removed[kind]` lowest-scored structures of each kind (ties: the lower index goes)."""
    chosen = {}
    for kind, count in removed.items():
        if count <= 0:
            continue
        order = torch.sort(layer_scores.scores[kind].double().cpu(), stable=True).indices
        chosen[kind] = order[:count]
    if not chosen:
        return
    method.compensate(structure, chosen, layer_scores, **arguments)
    for kind, gone in chosen.items():
        total = structure.count(kind)
        kept = torch.tensor(sorted(set(range(total)) - set(gone.tolist())), dtype=torch.long)
        (keep_heads if kind == "heads" else keep_channels)(structure, kept)
