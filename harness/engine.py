"""The sequential layer-by-layer pruning engine (REFERENCE.md section 2)."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from prunebench import registry
from prunebench.errors import UsageError
from prunebench.memory import measure_peak_memory
from prunebench.method import LinearContext, PruningMethod
from prunebench.sparsity import SparsityTarget, parse_sparsity

PROPAGATIONS = ("pruned", "dense")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers: the ModuleList as long as config.num_hidden_layers."""
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    matching = [m for m in lists if len(m) == expected] or lists
    if not matching:
        raise UsageError(f"Cannot find decoder layers in {type(model).__name__}; it needs an nn.ModuleList of layers.")
    return max(matching, key=lambda m: sum(p.numel() for p in m.parameters()))


def prunable_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside one decoder layer, by its name relative to the layer."""
    return {name: module for name, module in layer.named_modules() if isinstance(module, nn.Linear)}


class _Captured(Exception):
    """Raised by the layer-0 hook to stop the forward once the layer's inputs are captured."""


@dataclass
class LayerInputs:
    """Inputs of one decoder layer for all calibration batches."""

    hidden: list[torch.Tensor]
    kwargs: list[dict[str, Any]]


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _batches(calibration: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(torch.split(calibration, batch_size, dim=0))


@torch.no_grad()
def capture_layer_inputs(
    model: nn.Module, calibration: torch.Tensor, batch_size: int, device: torch.device, progress: bool = False
) -> LayerInputs:
    """Run the embeddings and capture decoder layer 0's hidden states and keyword arguments."""
    layers = decoder_layers(model)
    layer_ids = {id(p) for p in layers.parameters()} | {id(b) for b in layers.buffers()}
    # Only the non-layer parts (embeddings, rotary tables) visit the compute device.
    moved = []
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in layer_ids and tensor.device != device:
            moved.append((tensor, tensor.data))
            tensor.data = tensor.data.to(device)
    captured = LayerInputs(hidden=[], kwargs=[])

    def grab(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.hidden.append(hidden)
        captured.kwargs.append({k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _Captured

    handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for batch in tqdm(_batches(calibration, batch_size), desc="calibration", disable=not progress, leave=False):
            try:
                model(input_ids=batch.to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
        for tensor, original in moved:
            tensor.data = original
    return captured


def _layer_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def run_layer(layer: nn.Module, inputs: LayerInputs) -> list[torch.Tensor]:
    """The layer's outputs for every calibration batch."""
    return [_layer_output(layer(h, **kw)) for h, kw in zip(inputs.hidden, inputs.kwargs)]


class _LayerDone(Exception):
    """Raised inside a statistics pass once the last linear has been seen: the rest is unused."""


class _StatisticHooks:
    """Hooks that feed each linear's inputs (and outputs) to its accumulators.

    Two savings, neither changing a number. Linears that read the very same input tensor (q/k/v,
    gate/up) share one accumulator per input-only statistic after the first batch has shown which
    they are. With `stop_early`, the layer's outputs are not needed (pruned propagation re-runs the
    layer), so later batches stop once the last linear's statistics are in: for LLaMA this skips
    the down projection, a quarter of the layer's FLOPs.
    """

    def __init__(self, linears: Mapping[str, nn.Linear], statistics: list, device: torch.device,
                 arguments: Mapping[str, Any], stop_early: bool):
        self.accumulators = {
            name: {s.name: s.accumulator(linear, device, arguments) for s in statistics}
            for name, linear in linears.items()
        }
        self.input_only = {s.name for s in statistics if not s.needs_output}
        self.needs_output = len(self.input_only) < len(statistics)
        self.stop_early = stop_early
        self.first_batch = True
        self.first_inputs: dict[str, torch.Tensor] = {}  # held during batch 1 so identities stay unique
        self.call_order: list[str] = []
        self.shared: set[tuple[str, str]] = set()  # (linear, statistic) fed through another linear
        self.handles = []
        for name, linear in linears.items():
            if self.needs_output:
                self.handles.append(linear.register_forward_hook(self._hook(name)))
            else:
                self.handles.append(linear.register_forward_pre_hook(lambda m, args, name=name: self._hook(name)(m, args, None)))

    def _hook(self, name: str) -> Callable:
        def hook(module, args, output):
            x = args[0]
            nsequences = x.shape[0] if x.dim() == 3 else 1
            flat_in = x.reshape(-1, x.shape[-1]).float()
            flat_out = output.reshape(-1, output.shape[-1]).float() if output is not None else None
            for stat_name, accumulator in self.accumulators[name].items():
                if (name, stat_name) not in self.shared:
                    accumulator.add(flat_in, flat_out, nsequences)
            if self.first_batch:
                self.call_order.append(name)
                self.first_inputs[name] = x
            elif self.stop_early and name == self.call_order[-1]:
                raise _LayerDone

        return hook

    def _share_accumulators(self) -> None:
        leaders: list[str] = []
        for name in self.call_order:
            leader = next((l for l in leaders if self.first_inputs[l] is self.first_inputs[name]), None)
            if leader is None:
                leaders.append(name)
                continue
            for stat_name in self.input_only:  # identical state so far: alias it
                self.accumulators[name][stat_name] = self.accumulators[leader][stat_name]
                self.shared.add((name, stat_name))
        self.first_inputs.clear()
        self.first_batch = False

    def run(self, layer: nn.Module, inputs: LayerInputs) -> list[torch.Tensor] | None:
        """Run every batch through `layer` collecting statistics; the outputs unless stopping early."""
        outputs = []
        for hidden, kwargs in zip(inputs.hidden, inputs.kwargs):
            try:
                outputs.append(_layer_output(layer(hidden, **kwargs)))
            except _LayerDone:
                pass
            if self.first_batch:
                self._share_accumulators()
        return None if self.stop_early else outputs

    def remove(self) -> dict[str, dict[str, torch.Tensor]]:
        for handle in self.handles:
            handle.remove()
        return {name: {k: acc.result() for k, acc in accs.items()} for name, accs in self.accumulators.items()}


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
    allocation: str = "uniform"
    layer_targets: list[float] = field(default_factory=list)
    layer_sparsity: list[float] = field(default_factory=list)
    linear_sparsity: dict[str, float] = field(default_factory=dict)
    overall_sparsity: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    memory_before_bytes: int = 0
    peak_memory_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stopwatch:
    def __init__(self, device: torch.device):
        self.device = device
        self.totals = {"calibration_forward": 0.0, "score_mask": 0.0, "weight_update": 0.0}

    def time(self, section: str):
        watch = self

        class _Section:
            def __enter__(self):
                watch._sync()
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                watch._sync()
                watch.totals[section] += time.perf_counter() - self.start

        return _Section()

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


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
    owl_m: float = 5.0,
    owl_lambda: float = 0.08,
    **method_args: Any,
) -> PruneReport:
    """Prune `model` in place, decoder layer by decoder layer, and return a PruneReport.

    `calibration` is a LongTensor of token ids (nsamples, L). `propagate` chooses what feeds the
    next layer: the pruned layer's outputs (default, as Wanda and SparseGPT) or the dense ones.
    `allocation="owl"` gives each decoder layer its own sparsity by OWL (M=`owl_m`,
    lambda=`owl_lambda`), keeping the mean at the target.
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
        nsamples=calibration.shape[0], seqlen=calibration.shape[1], device=str(device),
    )
    if allocation not in ("uniform", "owl"):
        raise UsageError(f"Bad allocation '{allocation}': use uniform or owl.")
    if allocation == "owl" and target.is_n_m:
        raise UsageError("OWL allocation needs an unstructured sparsity ratio, not N:M.")
    report.allocation = allocation if allocation == "uniform" else f"owl(M={owl_m:g}, lambda={owl_lambda:g})"
    watch = _Stopwatch(device)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with measure_peak_memory(device) as memory:
        layer_targets = [target] * len(decoder_layers(model))
        if allocation == "owl":
            from prunebench.allocation import owl_layer_targets

            with watch.time("calibration_forward"):
                layer_targets = owl_layer_targets(model, calibration, target, m=owl_m, lam=owl_lambda,
                                                  batch_size=batch_size, device=device, progress=progress)
        report.layer_targets = [t.ratio for t in layer_targets]
        # A method with no statistics (magnitude) needs no calibration forward at all.
        needs_forward = bool(statistics)
        if needs_forward:
            with watch.time("calibration_forward"):
                inputs = capture_layer_inputs(model, calibration, batch_size, device, progress)
        layers = decoder_layers(model)
        total_zeros = total_numel = 0
        for index, layer in enumerate(tqdm(layers, desc=f"{method.name} layers", disable=not progress, leave=False)):
            home = next(layer.parameters()).device
            layer.to(device)
            linears = prunable_linears(layer)
            stats = {name: {} for name in linears}
            if needs_forward:
                with watch.time("calibration_forward"):
                    hooks = _StatisticHooks(linears, statistics, device, arguments, stop_early=propagate == "pruned")
                    try:
                        dense_outputs = hooks.run(layer, inputs)
                    finally:
                        stats = hooks.remove()
            layer_target = layer_targets[index]
            zeros = numel = 0
            for name, linear in linears.items():
                weight = linear.weight.data
                context = LinearContext(layer_target, registry.make_mask, index, name, report.notes)
                with watch.time("score_mask"):
                    mask = method.select(weight, stats[name], context, **arguments)
                with watch.time("weight_update"):
                    method.update(weight, mask, stats[name], context, **arguments)
                linear_zeros = int((weight == 0).sum())
                report.linear_sparsity[f"{index}.{name}"] = linear_zeros / weight.numel()
                zeros, numel = zeros + linear_zeros, numel + weight.numel()
            report.layer_sparsity.append(zeros / numel if numel else 0.0)
            total_zeros, total_numel = total_zeros + zeros, total_numel + numel
            del stats
            if needs_forward and propagate == "pruned":
                with watch.time("calibration_forward"):
                    inputs = LayerInputs(hidden=run_layer(layer, inputs), kwargs=inputs.kwargs)
            elif needs_forward:
                inputs = LayerInputs(hidden=dense_outputs, kwargs=inputs.kwargs)
            layer.to(home)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    report.timings = dict(watch.totals, total=time.perf_counter() - start)
    report.memory_before_bytes, report.peak_memory_bytes = memory.before_bytes, memory.peak_bytes
    report.overall_sparsity = total_zeros / total_numel if total_numel else 0.0
    model.train(was_training)
    return report


def zero_fraction(linears) -> float:
    """Fraction of zero weights over the given linears."""
    zeros = total = 0
    for linear in linears:
        zeros += int((linear.weight == 0).sum())
        total += linear.weight.numel()
    return zeros / total if total else 0.0


@torch.no_grad()
def dense_layer_statistics(model: nn.Module, calibration: torch.Tensor, statistic_names: tuple[str, ...], *,
                           batch_size: int = 8, device: "str | torch.device | None" = None, progress: bool = False):
    """Yield (linears, statistics) per decoder layer of the unpruned model, dense propagation."""
    registered = registry.registered("register_statistics")
    statistics = [registered[name].item for name in statistic_names]
    device = torch.device(device) if device is not None else default_device()
    inputs = capture_layer_inputs(model, calibration, batch_size, device, progress)
    for layer in tqdm(decoder_layers(model), desc="statistics", disable=not progress, leave=False):
        home = next(layer.parameters()).device
        layer.to(device)
        linears = prunable_linears(layer)
        hooks = _StatisticHooks(linears, statistics, device, {}, stop_early=False)
        try:
            outputs = hooks.run(layer, inputs)
        finally:
            stats = hooks.remove()
        yield linears, stats
        inputs = LayerInputs(hidden=outputs, kwargs=inputs.kwargs)
        layer.to(home)


@torch.no_grad()
def forward_through_layers(model: nn.Module, calibration: torch.Tensor, *, batch_size: int = 8,
                           device: "str | torch.device | None" = None) -> float:
    """Seconds for one plain forward of `calibration` through the decoder layers (the benchmark's unit)."""
    device = torch.device(device) if device is not None else default_device()
    start = time.perf_counter()
    inputs = capture_layer_inputs(model, calibration, batch_size, device)
    for layer in decoder_layers(model):
        home = next(layer.parameters()).device
        layer.to(device)
        inputs = LayerInputs(hidden=run_layer(layer, inputs), kwargs=inputs.kwargs)
        layer.to(home)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
