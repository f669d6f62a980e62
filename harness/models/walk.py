"""One walk through a causal LM's decoder layers, one layer on the compute device at a time.

Every pass that runs calibration data layer by layer (pruning, OWL's dense statistics, the bench's
plain forward) is this walk with different work at each layer, so per-layer arguments and device
placement live here only. The model itself stays on the CPU; a whole model visits the GPU only to
be evaluated, and one larger than the GPU's free memory is evaluated through accelerate's offload
(`device_map="auto"`) instead of being moved.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..api.errors import UsageError


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_device(name: "str | torch.device | None", asked: str, fix: str) -> torch.device:
    """The torch.device `name` gives (None or "auto": CUDA when present, else the CPU), or a one-line
    error when it names CUDA and no GPU is visible: `asked` says who asked, `fix` what to do instead."""
    if name is None or str(name) == "auto":
        return default_device()
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{asked} asks for CUDA, but no GPU is visible; {fix}.")
    return device


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


# A whole model may take this share of a GPU's free memory; the rest is for activations (an
# evaluation window's logits alone are window length x vocabulary floats).
FIT_FRACTION = 0.8


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))


def free_gpu_bytes(device: torch.device) -> int:
    return torch.cuda.mem_get_info(device)[0]


@contextmanager
def on_device(module: nn.Module, device: "torch.device | str") -> Iterator[nn.Module]:
    """`module` moved to `device` for the block, then back where its parameters were.

    A module on the CPU that does not fit in FIT_FRACTION of a GPU's free memory is not moved: it
    runs dispatched (`dispatched`), whole decoder layers on the GPU as far as they fit and the rest
    brought there block by block as the forward reaches it.
    """
    device = torch.device(device)
    home = next(module.parameters()).device
    if device.type == "cuda" and home.type == "cpu":
        budget = int(FIT_FRACTION * free_gpu_bytes(device))
        if module_bytes(module) > budget:
            with dispatched(module, offload_device_map(module, device, budget), device):
                yield module
            return
    module.to(device)
    try:
        yield module
    finally:
        module.to(home)


def offload_device_map(model: nn.Module, device: torch.device, gpu_bytes: int) -> dict:
    """accelerate's `device_map="auto"` for `model` with `gpu_bytes` on `device` and the rest on the CPU;
    a decoder layer is never split between the two."""
    from accelerate import infer_auto_device_map

    index = device.index if device.index is not None else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
    no_split = set(getattr(model, "_no_split_modules", None) or []) | {type(decoder_layers(model)[0]).__name__}
    return infer_auto_device_map(model, max_memory={index: gpu_bytes, "cpu": 2**62}, no_split_module_classes=sorted(no_split))


@contextmanager
def dispatched(model: nn.Module, device_map: dict, main_device: "torch.device | str",
               offload_dir: str | None = None) -> Iterator[nn.Module]:
    """`model` run through accelerate's hooks with `device_map` for the block (inputs go to
    `main_device`), then exactly as it was: no hooks, and the very parameter and buffer objects.

    accelerate places weights by replacing parameter objects; whatever holds the old ones (the
    runner's dense copies, a pruning method) would write to weights the model no longer uses, so the
    originals, whose values evaluation never changes, are put back.
    """
    from accelerate import dispatch_model
    from accelerate.hooks import remove_hook_from_module

    originals = [(owner, table, name, tensor, tensor.data) for owner in model.modules()
                 for table in ("_parameters", "_buffers") for name, tensor in getattr(owner, table).items()
                 if tensor is not None]
    # force_hooks: a map with the CPU alone (nothing fits on the GPU) still runs there, block by block.
    dispatch_model(model, device_map=device_map, main_device=str(main_device), offload_dir=offload_dir,
                   force_hooks=True)
    try:
        yield model
    finally:
        remove_hook_from_module(model, recurse=True)
        for owner, table, name, tensor, data in originals:
            tensor.data = data
            getattr(owner, table)[name] = tensor
        if "hf_device_map" in vars(model):
            del model.hf_device_map


@dataclass
class LayerCall:
    """What the model's own forward passes one decoder layer besides the hidden states, per batch."""

    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class CapturedInputs:
    """Decoder layer 0's hidden states per calibration batch, and every layer's other arguments."""

    hidden: list[torch.Tensor]
    calls: list[list[LayerCall]]  # [layer][batch]


@dataclass
class LayerInputs:
    """Inputs of one decoder layer for all calibration batches."""

    hidden: list[torch.Tensor]
    calls: list[LayerCall]

    @property
    def sequences(self) -> list[int]:
        """Number of sequences in each batch (the running means count sequences, not tokens)."""
        return [h.shape[0] for h in self.hidden]

    def run(self, layer: nn.Module) -> list[torch.Tensor]:
        """The layer's output hidden states for every batch."""
        return [layer_output(layer(h, *c.args, **c.kwargs)) for h, c in zip(self.hidden, self.calls)]


def layer_output(output: Any) -> torch.Tensor:
    """The hidden states in a decoder layer's output (a tensor, or a tuple that starts with it)."""
    return output[0] if isinstance(output, (tuple, list)) else output


class _Captured(Exception):
    """Raised by the last layer's stand-in: every argument is captured, the rest is unused."""


@torch.no_grad()
def capture_inputs(model: nn.Module, calibration: torch.Tensor, batch_size: int, device: torch.device,
                   progress: bool = False) -> CapturedInputs:
    """Run the model's own forward with each decoder layer replaced by a stand-in that records its call.

    The stand-ins pass the hidden states through unchanged, so the forward costs the embeddings
    only, yet each layer receives exactly the arguments the model gives it: families whose layers
    differ (sliding-window and global attention, local and global rotary tables) get theirs.
    """
    layers = decoder_layers(model)
    layer_tensors = {id(p) for p in layers.parameters()} | {id(b) for b in layers.buffers()}
    # Only the non-layer parts (embeddings, rotary tables) visit the compute device.
    moved = []
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in layer_tensors and tensor.device != device:
            moved.append((tensor, tensor.data))
            tensor.data = tensor.data.to(device)
    captured = CapturedInputs(hidden=[], calls=[[] for _ in layers])
    output_form: list[Any] = []  # the real layer 0 output of the first batch: its structure is copied

    def stand_in(index: int, layer: nn.Module):
        real_forward = layer.forward

        def forward(*args, **kwargs):
            hidden = args[0] if args else kwargs.pop("hidden_states")
            call = LayerCall(args=tuple(args[1:]), kwargs={k: v for k, v in kwargs.items() if k != "hidden_states"})
            captured.calls[index].append(call)
            if index == 0:
                captured.hidden.append(hidden)
                if not output_form:
                    with on_device(layer, device):  # the layer is where the model is held (the CPU)
                        output_form.append(real_forward(hidden, *call.args, **call.kwargs))
            if index == len(layers) - 1:
                raise _Captured
            form = output_form[0]
            return (hidden, *form[1:]) if isinstance(form, tuple) else hidden

        return forward

    for index, layer in enumerate(layers):
        layer.forward = stand_in(index, layer)
    try:
        for batch in tqdm(torch.split(calibration, batch_size), desc="calibration", disable=not progress, leave=False):
            try:
                model(input_ids=batch.to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        for layer in layers:
            del layer.forward  # the class's forward again
        for tensor, original in moved:
            tensor.data = original
    if any(len(calls) != len(captured.hidden) for calls in captured.calls):
        raise UsageError(f"{type(model).__name__} does not call each decoder layer once per forward; "
                         "the layer-by-layer engine cannot prune this model family.")
    return captured


@dataclass
class LayerStep:
    """One decoder layer of the walk, on the compute device, with its calibration inputs (if any)."""

    index: int
    layer: nn.Module
    inputs: LayerInputs | None
    next_hidden: list[torch.Tensor] | None = None

    def forward(self) -> list[torch.Tensor]:
        """This layer's outputs on its inputs, with its current weights."""
        return self.inputs.run(self.layer)

    def propagate(self, hidden: list[torch.Tensor]) -> None:
        """Feed `hidden` to the next layer (by default the walk feeds it this layer's `forward()`)."""
        self.next_hidden = hidden


def walk_layers(model: nn.Module, captured: CapturedInputs | None, device: torch.device, *,
                progress: bool = False, desc: str = "layers") -> Iterator[LayerStep]:
    """Yield each decoder layer in order, moved to `device`, with its inputs from `captured`.

    After the caller's work on a step the layer goes back where it was, and what the caller
    propagated (else the layer's own outputs at that point) becomes the next layer's hidden states.
    With `captured=None` the steps carry no inputs (methods that need no calibration forward).
    """
    hidden = captured.hidden if captured is not None else None
    for index, layer in enumerate(tqdm(decoder_layers(model), desc=desc, disable=not progress, leave=False)):
        with on_device(layer, device):
            inputs = LayerInputs(hidden, captured.calls[index]) if captured is not None else None
            step = LayerStep(index, layer, inputs)
            yield step
            if captured is not None:
                hidden = step.next_hidden if step.next_hidden is not None else step.forward()


def dense_twin(model: nn.Module, dense_weights: list) -> nn.Module:
    """A copy of a pruned model with its prunable weights set back to `dense_weights` (in the order of
    decoder layers, then their prunable linears): the dense model that metrics compare against."""
    import copy

    twin = copy.deepcopy(model)
    twin_weights = [linear.weight for layer in decoder_layers(twin) for linear in prunable_linears(layer).values()]
    with torch.no_grad():
        for weight, dense in zip(twin_weights, dense_weights):
            weight.copy_(dense)
    return twin
