"""Base classes a structured-pruning plugin subclasses: a method that scores coupled structures, and a
layer allocation that turns scores and a budget into how many structures each layer loses (defined
with the allocation hook's other track in `prunebench.api.allocation`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .allocation import LayerAllocation  # noqa: F401 - a structured plugin's base class too
from .errors import UsageError
from .method import coerce_like

if TYPE_CHECKING:
    import torch
    from torch import nn


ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_NAMES = ("gate_proj", "up_proj", "down_proj")


@dataclass
class LayerStructure:
    """The coupled linears of one LLaMA-shaped decoder layer and its head layout."""

    index: int
    layer: nn.Module
    attention: nn.Module
    mlp: nn.Module
    head_dim: int
    groups: int  # query heads per key/value head

    @property
    def linears(self) -> dict[str, nn.Linear]:
        return {n: getattr(self.attention, n) for n in ATTENTION_NAMES} | {n: getattr(self.mlp, n) for n in MLP_NAMES}

    @property
    def kv_heads(self) -> int:
        return self.attention.k_proj.out_features // self.head_dim

    @property
    def channels(self) -> int:
        return self.mlp.down_proj.in_features

    def count(self, kind: str) -> int:
        """How many structures of `kind` the layer has now."""
        return self.kv_heads if kind == "heads" else self.channels

    def unit_parameters(self, kind: str) -> int:
        """Parameters (weights and biases) removed with one structure of `kind`."""
        if kind == "heads":
            q, k, v, o = (getattr(self.attention, n) for n in ATTENTION_NAMES)
            return sum(linear.weight.numel() + _bias_numel(linear) for linear in (q, k, v)) // self.kv_heads \
                + o.weight.numel() // self.kv_heads
        gate, up, down = (getattr(self.mlp, n) for n in MLP_NAMES)
        return (gate.weight.numel() + _bias_numel(gate) + up.weight.numel() + _bias_numel(up)
                + down.weight.numel()) // self.channels

    def parameters(self) -> int:
        return sum(linear.weight.numel() + _bias_numel(linear) for linear in self.linears.values())

    def shape(self) -> dict:
        """What a config must say to rebuild this layer."""
        return {"num_attention_heads": self.kv_heads * self.groups, "num_key_value_heads": self.kv_heads,
                "intermediate_size": self.channels, "o_proj_bias": self.attention.o_proj.bias is not None,
                "down_proj_bias": self.mlp.down_proj.bias is not None}

    def head_rows(self, kv_head: int, which: str) -> slice:
        """Rows of q_proj ("q") or k/v_proj ("kv") (= columns of o_proj for "q") of one key/value group."""
        width = self.head_dim * (self.groups if which == "q" else 1)
        return slice(kv_head * width, (kv_head + 1) * width)


def _bias_numel(linear: nn.Linear) -> int:
    return 0 if linear.bias is None else linear.bias.numel()


HOST_ARGUMENTS = {"allocation": "uniform", "round_to": 1}  # every structured method takes these


@dataclass
class LayerEvidence:
    """What a structured method sees of one decoder layer during the calibration walk."""

    index: int
    layer: nn.Module
    structure: LayerStructure | None  # None for layer-removal methods on families without a head layout
    stats: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # linear name -> statistic -> value
    hidden_in: list[torch.Tensor] | None = None  # the layer's input hidden states, per batch
    hidden_out: list[torch.Tensor] | None = None  # its (dense) outputs


@dataclass
class LayerScores:
    """One score per structure of each kind (the lowest are removed), a layer importance, extras."""

    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    importance: float | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. FLAP's input means


class StructuredMethod:
    """A structured pruning method: scores heads, FFN channels or whole decoder layers.

    `kinds` names what it removes ("heads", "channels", "layers"); `statistics` are registered
    per-linear calibration statistics it needs; `needs_hidden` asks for each layer's input and
    output hidden states, `needs_gradients` for the LM loss gradients of every decoder linear
    (in `linear.weight.grad`). `allocation` is the default layer allocation (a registered name).
    `version` goes into the content hash of every cell it runs (through the provenance's
    method_version): bump it when a change can change its numbers, so no old record is reused.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = ("heads", "channels")
    statistics: ClassVar[tuple[str, ...]] = ()
    needs_hidden: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = False
    arguments: ClassVar[Mapping[str, Any]] = {}
    allocation: ClassVar[str] = "uniform"
    version: ClassVar[str] = "1"

    def score_layer(self, evidence: LayerEvidence, **args: Any) -> LayerScores:
        """Scores of the layer's structures (higher = more important)."""
        raise NotImplementedError

    def finalize(self, scores: list[LayerScores], **args: Any) -> list[LayerScores]:
        """Adjust every layer's scores once all are known (SAAP fuses with model-wide weights)."""
        return scores

    def recover(self, model: nn.Module, calibration: torch.Tensor, device: torch.device, **args: Any) -> dict | None:
        """An optional recovery step after removal (LoRA fine-tuning); timed separately. `args` holds the
        method's arguments and `layer_importance`, the layer importances the scoring produced."""
        return None

    def compensate(self, structure: LayerStructure, removed: Mapping[str, torch.Tensor], scores: LayerScores,
                   **args: Any) -> None:
        """Adjust the kept weights for the removed structures (before they go); FLAP adds biases."""

    def all_arguments(self) -> dict[str, Any]:
        return {**HOST_ARGUMENTS, "allocation": self.allocation, **self.arguments}

    def resolve_arguments(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults (host arguments allocation and round_to, then the method's) overlaid with `given`."""
        defaults = self.all_arguments()
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            valid = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
            raise UsageError(f"Unknown argument(s) {', '.join(unknown)} for method '{self.name}'. Valid: {valid}.")
        resolved = dict(defaults)
        for key, value in given.items():
            resolved[key] = coerce_like(defaults[key], value, f"{self.name}.{key}")
        if resolved["round_to"] < 1:
            raise UsageError(f"Bad {self.name}.round_to {resolved['round_to']}: use 1 (none), 8, 64 or 128.")
        return resolved


def group_sum(structure: LayerStructure, per_weight: Mapping[str, torch.Tensor], kind: str) -> torch.Tensor:
    """Sum a per-weight quantity (shaped like each linear's weight) over every structure of `kind`.

    A key/value group sums its q rows, k and v rows and o_proj columns; a channel its gate and up
    rows and its down_proj column. Names missing from `per_weight` contribute nothing.
    """
    import torch

    groups = structure.kv_heads if kind == "heads" else structure.channels
    total = torch.zeros(groups, dtype=torch.float64)
    for name, value in per_weight.items():
        value = value.double().cpu()
        if kind == "heads":
            if name in ("q_proj", "k_proj", "v_proj"):
                total += value.reshape(groups, -1).sum(dim=1)
            elif name == "o_proj":
                total += value.reshape(value.shape[0], groups, -1).sum(dim=(0, 2))
        else:
            if name in ("gate_proj", "up_proj"):
                total += value.sum(dim=1)
            elif name == "down_proj":
                total += value.sum(dim=0)
    return total


def token_cosines(hidden_in: list[torch.Tensor], hidden_out: list[torch.Tensor]) -> torch.Tensor:
    """Cosine similarity between a layer's input and output hidden state, one per calibration token."""
    import torch

    return torch.cat([torch.nn.functional.cosine_similarity(a.double().flatten(0, -2), b.double().flatten(0, -2), dim=-1)
                      for a, b in zip(hidden_in, hidden_out)])


def add_output_bias(linear: nn.Linear, delta: torch.Tensor) -> None:
    """Add `delta` to the linear's bias, creating the bias if it has none (FLAP's compensation)."""
    import torch
    from torch import nn

    if linear.bias is None:
        linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=linear.weight.dtype, device=linear.weight.device))
    linear.bias.data += delta.to(linear.bias.dtype).to(linear.bias.device)
