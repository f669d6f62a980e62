"""The structured pruning pass: score coupled structures on one dense calibration walk, allocate the
budget over layers, and remove the chosen heads, FFN channels or decoder layers physically."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench import registry
from prunebench.accumulate import collect_statistics
from prunebench.errors import UsageError
from prunebench.memory import measure_peak_memory
from prunebench.sparsity import SparsityTarget, parse_sparsity
from prunebench.structure import keep_channels, keep_heads, keep_layers, prunable_parameters, read_structures
from prunebench.structured_allocation import LayerBudget, Plan
from prunebench.structured_method import LayerEvidence, LayerScores, StructuredMethod
from prunebench.walk import capture_inputs, decoder_layers, default_device, prunable_linears, walk_layers


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
    propagate: str = "dense (scores of every layer from one forward of the dense model)"
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


def _score_all(model, method, arguments, calibration, batch_size, device, structures, watch) -> list[LayerScores]:
    statistics = [registry.get_statistic(name) for name in method.statistics]
    needs_forward = bool(statistics) or method.needs_hidden
    captured = None
    if needs_forward:
        with watch("calibration_forward"):
            captured = capture_inputs(model, calibration, batch_size, device)
    scores = []
    for step in walk_layers(model, captured, device, desc=f"{method.name} scores"):
        evidence = LayerEvidence(step.index, step.layer, structures[step.index] if structures else None)
        if captured is not None:
            with watch("calibration_forward"):
                # Statistics keyed by the short names the structure uses (q_proj, down_proj, ...).
                linears = evidence.structure.linears if evidence.structure else prunable_linears(step.layer)
                evidence.stats, outputs = collect_statistics(step.layer, step.inputs, linears, statistics, device,
                                                             arguments, keep_outputs=True)
                evidence.hidden_in, evidence.hidden_out = step.inputs.hidden, outputs
                step.propagate(outputs)  # dense: every layer is scored before any is pruned
        with watch("score"):
            scores.append(method.score_layer(evidence, **arguments))
    return scores


def _plan(method, target, structures, scores, arguments) -> Plan:
    kinds = tuple(k for k in method.kinds if k != "layers")
    layers = [LayerBudget({k: s.count(k) for k in ("heads", "channels")},
                          {k: s.unit_parameters(k) for k in ("heads", "channels")}, s.parameters()) for s in structures]
    return Plan(target.ratio, kinds, layers, scores, arguments["round_to"])


def _remove_layers(model, target, scores, report) -> None:
    count = len(scores)
    importance = [s.importance for s in scores]
    removed = math.floor(target.ratio * count + 0.5)
    if removed >= count:
        raise UsageError(f"Sparsity {target} would remove all {count} decoder layers; lower the sparsity.")
    order = sorted(range(count), key=lambda i: (importance[i], i))
    report.removed_layers = sorted(order[:removed])
    keep_layers(model, [i for i in range(count) if i not in report.removed_layers])


@torch.no_grad()
def structured_prune(model: nn.Module, method: "str | StructuredMethod", sparsity: "float | str | SparsityTarget",
                     calibration: torch.Tensor, *, batch_size: int = 8, device: "str | torch.device | None" = None,
                     progress: bool = False, **method_args: Any) -> StructuredReport:
    """Remove structures from `model` in place so that about `sparsity` of its prunable parameters go.

    Sparsity is the fraction of decoder-layer linear parameters removed; the report gives the
    fraction actually removed (heads, channel rounding and layers are coarse). The model's config
    is updated by `prunebench.pruned_models.save_structured` when saving.
    """
    method = resolve_structured(method)
    arguments = method.resolve_arguments(method_args)
    target = check_target(method, sparsity)
    allocation = registry.get_allocation(arguments["allocation"])
    if calibration.dim() != 2 or calibration.dtype != torch.long:
        raise UsageError("calibration must be a LongTensor of token ids shaped (nsamples, L).")
    structures = read_structures(model) if set(method.kinds) - {"layers"} else None
    device = torch.device(device) if device is not None else default_device()
    report = StructuredReport(method.name, arguments, str(target), list(method.kinds), allocation.name,
                              calibration.shape[0], calibration.shape[1], str(device))
    report.parameters_before = sum(p.numel() for p in model.parameters())
    report.prunable_before = prunable_parameters(model)
    totals: dict[str, float] = {}

    class watch:  # noqa: N801 - a tiny timing context: watch("section")
        def __init__(self, section):
            self.section = section

        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            totals[self.section] = totals.get(self.section, 0.0) + time.perf_counter() - self.start

    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with measure_peak_memory(device) as memory:
        if method.needs_gradients:
            with watch("gradients"):
                loss = accumulate_gradients(model, calibration, batch_size, device, arguments.get("checkpointing", False))
            report.notes.append(f"calibration loss {loss:.4f} (gradients of every decoder linear, whole-model backward)")
        try:
            scores = _score_all(model, method, arguments, calibration, batch_size, device, structures, watch)
            with watch("score"):
                scores = method.finalize(scores, **arguments)
        finally:
            if method.needs_gradients:
                for parameter in model.parameters():
                    parameter.grad = None
        report.layer_importance = [s.importance for s in scores]
        with watch("removal"):
            if "layers" in method.kinds:
                _remove_layers(model, target, scores, report)
            else:
                with watch("allocation"):
                    counts = allocation.allocate(_plan(method, target, structures, scores, arguments), **arguments)
                for structure, layer_scores, removed in zip(structures, scores, counts):
                    _remove_lowest(method, structure, layer_scores, removed, arguments)
    # Recovery (SAAP's LoRA step) is timed apart from the pruning total and outside its memory peak.
    recovery_start = time.perf_counter()
    recovered = method.recover(model, calibration, device, **arguments)
    if recovered is not None:
        report.notes.append(f"recovery: {recovered}")
        totals["recovery"] = time.perf_counter() - recovery_start
    report.timings = dict(totals, total=recovery_start - start)
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
