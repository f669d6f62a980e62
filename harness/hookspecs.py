"""The hook specifications of prunebench: what a plugin may provide. Argument names are public API."""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("prunebench")
hookimpl = pluggy.HookimplMarker("prunebench")


@hookspec
def register_methods(register):
    """Register pruning methods: call ``register(method)`` with a `prunebench.PruningMethod` instance.

    A method declares the calibration statistics it needs (by name) and computes an importance
    score for one linear layer from its weight and those statistics; the host turns scores into
    masks through `make_mask`. A method that also changes the kept weights overrides
    `PruningMethod.prune`.
    """


@hookspec
def register_statistics(register):
    """Register calibration statistics: call ``register(statistic)`` with a `prunebench.Statistic`.

    A statistic is accumulated per linear layer from the inputs (and, if it says so, outputs) the
    layer sees during the calibration forward. The engine collects only those a method asks for.
    """


@hookspec(firstresult=True)
def make_mask(scores, target, group):
    """Return the boolean prune mask (True = set to zero) for ``scores`` (out x in).

    ``target`` is a `prunebench.SparsityTarget` (a ratio, or N:M); ``group`` is the comparison group
    for unstructured targets: "row" (each output row) or "layer" (the whole matrix). The first
    plugin that returns a mask wins; the host's own implementation runs last.
    """


@hookspec
def register_datasets(register):
    """Register text sources: call ``register(dataset)`` with a `prunebench.data.TextDataset`."""


@hookspec
def register_models(register):
    """Register model aliases: call ``register(alias)`` with a `prunebench.models.ModelAlias`."""
