"""Base classes a plugin subclasses: a pruning method and a calibration statistic."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import UsageError
from .sparsity import SparsityTarget

if TYPE_CHECKING:  # torch loads with the first tensor, not with the plugin modules (fast `validate`)
    import torch


MaskFunction = Callable[["torch.Tensor", SparsityTarget, str], "torch.Tensor"]


class Accumulator:
    """Running state of one statistic for one linear layer."""

    def add(self, inputs: torch.Tensor, outputs: torch.Tensor | None, nsequences: int) -> None:
        """Fold in one batch: `inputs` (tokens x in) and `outputs` (tokens x out), float32."""
        raise NotImplementedError

    def result(self) -> torch.Tensor:
        raise NotImplementedError


class RunningMean(Accumulator):
    """Mean over calibration sequences of a per-sequence sum, the statistic Wanda and SparseGPT share.

    Their reference code updates a running mean per batch of b sequences (``mean *= n / (n + b);
    n += b; mean += batch sum / n``); this keeps the sum instead and divides once, the same quantity
    without the rescaling's roundings. `fold` adds the batch's per-window sums to `self.total`: each
    calibration window (sequence) summed in float32 (`self.windows(inputs)` gives them; a window's sum
    is the same arithmetic whatever batch it came in), the windows added in float64, where a sum of
    float32 values is exact (for windows whose sums span less than 2^29), hence independent of their
    order. So `result()`, `scale` x total / n rounded to float32, is bitwise the same for any batch
    size (tests/test_statistics_invariance.py). A float32 sum over a whole batch lets the batch size
    set the summation order and moves the statistic by a few ulps, enough to flip near-tied masks and,
    through SparseGPT's updates, every later layer; float64 products over every token (numerics
    version 2) bought the same invariance at twice the float32 GEMMs' cost.
    """

    scale = 1.0  # SparseGPT's H = (2/n) sum x x^T: 2

    def __init__(self, shape: tuple[int, ...], device: torch.device):
        import torch

        self.total = torch.zeros(shape, dtype=torch.float64, device=device)
        self.nsequences = 0
        self.batch_sequences = 0

    def fold(self, inputs: torch.Tensor, outputs: torch.Tensor | None) -> None:
        """Add this batch's sum over its windows (each summed in float32) to the float64 `self.total`."""
        raise NotImplementedError

    def add(self, inputs: torch.Tensor, outputs: torch.Tensor | None, nsequences: int) -> None:
        self.nsequences += nsequences
        self.batch_sequences = nsequences
        self.fold(inputs, outputs)

    def windows(self, tensor: torch.Tensor) -> torch.Tensor:
        """A batch's (tokens x width) rows as (windows, tokens per window, width)."""
        return tensor.reshape(self.batch_sequences, -1, tensor.shape[-1])

    def result(self) -> torch.Tensor:
        import torch

        return (self.total * (self.scale / max(self.nsequences, 1))).to(torch.float32)


class Statistic:
    """A named calibration statistic; `accumulator` makes fresh state for one linear layer."""

    name: ClassVar[str]
    description: ClassVar[str]
    needs_output: ClassVar[bool] = False

    def accumulator(self, linear: torch.nn.Linear, device: torch.device, arguments: Mapping[str, Any]) -> Accumulator:
        """Fresh state for one linear; `arguments` are the running method's (e.g. an epsilon)."""
        raise NotImplementedError


@dataclass
class LinearContext:
    """What the engine tells a method about the linear layer it is pruning."""

    target: SparsityTarget
    make_mask: MaskFunction
    layer_index: int
    linear_name: str
    notes: list[str] = field(default_factory=list)
    counts: dict[str, list[int]] = field(default_factory=dict)

    def note(self, message: str) -> None:
        """Record something the run's report should show (e.g. a damping retry)."""
        self.notes.append(f"layer {self.layer_index} {self.linear_name}: {message}")

    def count(self, name: str, hits: int, total: int) -> None:
        """Add to a run-wide tally the report shows as a fraction (e.g. mask groups tied at the cut)."""
        tally = self.counts.setdefault(name, [0, 0])
        tally[0] += hits
        tally[1] += total


class PruningMethod:
    """A pruning method. Subclasses set the class attributes and implement `score`.

    `arguments` holds every method argument with its default; "group" is the comparison group
    for unstructured sparsity ("row" or "layer"). `version` goes into the content hash of
    results: bump it whenever a change to the method can change its numbers.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    version: ClassVar[str] = "1"
    statistics: ClassVar[tuple[str, ...]] = ()
    arguments: ClassVar[Mapping[str, Any]] = {"group": "row"}

    def required_statistics(self, arguments: Mapping[str, Any]) -> tuple[str, ...]:
        """The statistics this run needs; override when an argument changes them."""
        return self.statistics

    def score(self, weight: torch.Tensor, stats: Mapping[str, torch.Tensor], **args: Any) -> torch.Tensor:
        """Importance of each weight (out x in); the lowest are pruned."""
        raise NotImplementedError

    def diagnose(self, weight: torch.Tensor, stats: Mapping[str, torch.Tensor], context: "LinearContext",
                 **args: Any) -> None:
        """Measure something about this linear before it is pruned, through `context.count`; not timed."""

    def select(self, weight: torch.Tensor, stats: Mapping[str, torch.Tensor], context: "LinearContext",
               **args: Any) -> torch.Tensor | None:
        """Return the prune mask (True = zero). Timed as "score+mask"."""
        return context.make_mask(self.score(weight, stats, **args), context.target, args.get("group", "row"))

    def update(self, weight: torch.Tensor, mask: torch.Tensor | None, stats: Mapping[str, torch.Tensor],
               context: "LinearContext", **args: Any) -> torch.Tensor:
        """Change `weight` in place and return the final mask. Timed as "weight update".

        The default zeroes the selected weights; a method that also adjusts the kept weights
        (SparseGPT) overrides this, and may choose its mask here when `select` returned None.
        """
        # Multiplying by the keep mask is 4x faster than masked_fill_ on CPU (weights are finite).
        weight.mul_(mask.logical_not())
        return mask

    def resolve_arguments(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with `given`; unknown names and uncoercible values are refused."""
        unknown = sorted(set(given) - set(self.arguments))
        if unknown:
            valid = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items()) or "none"
            raise UsageError(f"Unknown argument(s) {', '.join(unknown)} for method '{self.name}'. Valid: {valid}.")
        resolved = dict(self.arguments)
        for key, value in given.items():
            resolved[key] = coerce_like(self.arguments[key], value, f"{self.name}.{key}")
        if "group" in resolved and resolved["group"] not in ("row", "layer"):
            raise UsageError(f"Bad {self.name}.group '{resolved['group']}': use row or layer.")
        return resolved


def coerce_like(default: Any, value: Any, where: str) -> Any:
    """Convert a (possibly string) value to the type of the default; refuse another type, NaN and infinity."""
    if default is None:
        return value
    expected = type(default).__name__
    if not isinstance(value, str):
        allowed = (int, float) if isinstance(default, float) else type(default)
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, allowed):
            raise UsageError(f"Bad value {value!r} for {where}: expected {expected}.")
        value = type(default)(value)
    elif isinstance(default, str):
        return value
    else:
        try:
            if isinstance(default, bool):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            value = type(default)(value)
        except ValueError:
            raise UsageError(f"Bad value '{value}' for {where}: expected {expected}.") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"Bad value {value} for {where}: expected a finite number.")
    return value
