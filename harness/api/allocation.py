"""What the register_allocations hook registers: a layer allocation, which spreads a pruning budget
over the decoder layers, and how its tracks and settings are read (the registry looks it up by track).

Two tracks share the hook. Unstructured pruning asks for one sparsity per decoder layer, from the
model and calibration data (uniform, OWL); structured pruning asks how many heads and FFN channels
each layer loses, from the budget, the layer layout and the method's scores (uniform, FLAP's
global ranking, CFSP's sigmoid, SAAP's ranking). An allocation names the tracks it serves.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import UsageError
from .method import coerce_like

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .sparsity import SparsityTarget


class LayerAllocation:
    """How a budget is spread over decoder layers, for the `tracks` it names.

    Unstructured track: `layer_sparsities` returns one target per decoder layer, a ratio (the host
    prunes that exact share of each of the layer's matrices) or the run's own target unchanged;
    `settings` are its options with defaults (`resolve_settings` checks what a run gives).
    Structured track: `allocate` returns, per layer, how many structures of each kind go;
    `needs_scores=False` says the counts follow from the budget and layout alone, so the host
    computes them (and refuses an impossible budget) before any forward.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    tracks: ClassVar[tuple[str, ...]] = ("structured",)
    settings: ClassVar[Mapping[str, Any]] = {}
    needs_scores: ClassVar[bool] = True

    def layer_sparsities(self, model: nn.Module, calibration: torch.Tensor, target: SparsityTarget,
                         settings: Mapping[str, Any], *, batch_size: int, device: torch.device,
                         progress: bool) -> list[float | SparsityTarget]:
        """Unstructured track: per decoder layer, the sparsity its linears are pruned to."""
        raise NotImplementedError

    def allocate(self, plan: Any, **args: Any) -> list[dict[str, int]]:
        """Structured track: per layer, kind -> number of structures to remove; `plan` is a
        `prunebench.pruning.structured_allocation.Plan` (its `scores` are empty when `needs_scores` is False)."""
        raise NotImplementedError


# An allocation registered without the class attributes (duck-typed, as the hook allowed before it
# served two tracks) reads as the base class's defaults: structured, no settings, needs scores.

def tracks_of(allocation: Any) -> tuple[str, ...]:
    """The tracks an allocation serves."""
    return tuple(getattr(allocation, "tracks", LayerAllocation.tracks))


def needs_scores(allocation: Any) -> bool:
    """Whether its structured counts depend on the method's scores (else known from the layout alone)."""
    return bool(getattr(allocation, "needs_scores", LayerAllocation.needs_scores))


def resolve_settings(allocation: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """Its `settings` overlaid with `given`; unknown names and values of the wrong type are refused."""
    defaults = getattr(allocation, "settings", LayerAllocation.settings)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
        raise UsageError(f"Unknown setting(s) {', '.join(unknown)} for allocation '{allocation.name}'. Valid: {valid}.")
    return {key: coerce_like(default, given.get(key, default), f"{allocation.name}.{key}")
            for key, default in defaults.items()}


def allocation_label(allocation: Any, settings: Mapping[str, Any]) -> str:
    """How a run's report names it: `owl(m=5, lambda=0.08)`, or the bare name without settings."""
    if not settings:
        return allocation.name
    return f"{allocation.name}({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in settings.items())})"
