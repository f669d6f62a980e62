"""The hook specifications of prunebench: what a plugin may provide. Argument names are public API."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # type names only: importing them here would load torch for `--help`
    import torch

    from .allocation import LayerAllocation
    from .method import PruningMethod, Statistic
    from .metric import Metric
    from .sources import ModelAlias, TextDataset
    from .sparsity import SparsityTarget
    from .structured import StructuredMethod

hookspec = pluggy.HookspecMarker("prunebench")
hookimpl = pluggy.HookimplMarker("prunebench")


@hookspec
def register_methods(register: Callable[[PruningMethod], None]) -> None:
    """Register pruning methods: call ``register(method)`` with a `prunebench.PruningMethod` instance.

    A method declares the calibration statistics it needs (by name) and computes an importance
    score for one linear layer from its weight and those statistics (`PruningMethod.score`); the
    host turns scores into masks through `make_mask`. A method that chooses its own mask overrides
    `PruningMethod.select`; one that also changes the kept weights (SparseGPT) overrides
    `PruningMethod.update`.
    """


@hookspec
def register_statistics(register: Callable[[Statistic], None]) -> None:
    """Register calibration statistics: call ``register(statistic)`` with a `prunebench.Statistic`.

    A statistic is accumulated per linear layer from the inputs (and, if `Statistic.needs_output`,
    outputs) the layer sees during the calibration forward, through the `Accumulator` that
    `Statistic.accumulator` returns. The engine collects only those a method asks for.
    """


@hookspec(firstresult=True)
def make_mask(scores: torch.Tensor, target: SparsityTarget, group: str) -> torch.Tensor | None:
    """Return the boolean prune mask (True = set to zero) for ``scores`` (out x in), or None to pass.

    ``target`` is a `prunebench.SparsityTarget` (a ratio, or N:M); ``group`` is the comparison
    group for unstructured targets: "row" (each output row) or "layer" (the whole matrix). The first
    plugin that returns a mask wins; the host's own implementation (`prunebench.pruning.masks`) runs last.
    """


@hookspec
def register_datasets(register: Callable[[TextDataset], None]) -> None:
    """Register text sources: call ``register(dataset)`` with a `prunebench.TextDataset`.

    A dataset gives calibration documents (`TextDataset.calibration_documents`) and one evaluation
    text (`TextDataset.evaluation_text`), from the hub or from local files.
    """


@hookspec
def register_models(register: Callable[[ModelAlias], None]) -> None:
    """Register model aliases: call ``register(alias)`` with a `prunebench.ModelAlias`.

    An alias has a name, a description and a loader that returns (model, tokenizer) in a dtype.
    """


@hookspec
def register_structured_methods(register: Callable[[StructuredMethod], None]) -> None:
    """Register structured pruning methods: call ``register(method)`` with a `prunebench.StructuredMethod`.

    A structured method returns one score per coupled structure of a decoder layer (a key/value
    head group with its query heads and o_proj columns, an FFN channel with its gate/up rows and
    down_proj column, or the whole layer) from `StructuredMethod.score_layer`; the host turns the
    scores and the budget (a fraction of the prunable parameters) into a selection through a layer
    allocation, and removes the structures physically.
    """


@hookspec
def register_allocations(register: Callable[[LayerAllocation], None]) -> None:
    """Register layer allocations: call ``register(allocation)`` with a `prunebench.LayerAllocation`.

    An allocation spreads the budget over decoder layers for the tracks it names
    (`LayerAllocation.tracks`). Unstructured: one sparsity per layer from the model and calibration
    data (`LayerAllocation.layer_sparsities`; uniform, OWL), with its own settings. Structured: how
    many structures of each kind each layer loses (`LayerAllocation.allocate`), from the budget, each
    layer's structure counts and sizes, and the method's scores and layer importances: uniform,
    FLAP's global ranking, CFSP's sigmoid of block importance, SAAP's importance-ranked layers.
    """


@hookspec
def register_metrics(register: Callable[[Metric], None]) -> None:
    """Register evaluation metrics: call ``register(metric)`` with a `prunebench.Metric` instance.

    A metric has a name, a description, `Metric.higher_is_better`, a unit, the cells it applies to
    (dense, pruned) and its settings with defaults (a grid names it under evaluation, metrics; unknown
    settings are refused). `Metric.compute` returns one or more values, each a number or a mapping with
    its own interval, from the cell's model, tokenizer and settings (`prunebench.MetricContext`);
    the runner stores them in the cell's record, the report shows each value as a column with its
    arrow (`Metric.tables` to show more), and `prunebench list` lists it.
    """
