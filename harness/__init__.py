"""prunebench: a plugin-based harness for post-training pruning of large language models.

The public API: what a plugin subclasses or receives (re-exported from `prunebench.api`), the helpers
the built-in plugins share, and the library calls a script makes. Nothing happens at import: torch
and transformers load with the first call that needs them.
"""
from __future__ import annotations

from .api import __version__
from .api.allocation import LayerAllocation
from .api.errors import UsageError
from .api.hookspecs import hookimpl
from .api.method import Accumulator, LinearContext, PruningMethod, RunningMean, Statistic
from .api.metric import DENSE, PRUNED, REQUIRED, Metric, MetricContext, Value
from .api.records import FINISHED, STRUCTURED
from .api.sources import ModelAlias, TextDataset
from .api.sparsity import SparsityTarget, parse_sparsity
from .api.structured import LayerEvidence, LayerScores, StructuredMethod, add_output_bias, group_sum, token_cosines
from .api.tables import Cell, Table
from .data.datasets import calibration_windows
from .models.checkpoints import register_with_transformers as register_pruned_models
from .models.loading import load_model
from .pruning.masks import tied_at_cut
from .pruning.structured_allocation import Plan, mean_preserving_ratios


def prune(model, method, sparsity, calibration, **method_args):
    """Prune `model` in place with `method` at `sparsity` on `calibration` token ids (nsamples, L).

    Returns a `PruneReport`. Engine options (batch_size, device, propagate, progress, allocation,
    allocation_settings) pass through; other keyword arguments are the method's arguments.
    """
    from .pruning.engine import prune as prune_model  # torch loads here, not with `import prunebench`

    return prune_model(model, method, sparsity, calibration, **method_args)


def structured_prune(model, method, sparsity, calibration, **method_args):
    """Remove whole heads, FFN channels or layers of `model` with a structured `method`; a `StructuredReport`."""
    from .pruning.structured_engine import structured_prune as prune_structures  # torch loads here

    return prune_structures(model, method, sparsity, calibration, **method_args)


def decoder_layers(model):
    """The decoder layers of a causal LM of any supported family, in order."""
    from .models.walk import decoder_layers as layers  # torch loads here

    return layers(model)


def prunable_linears(layer):
    """A decoder layer's prunable linears by name (attention and MLP projections)."""
    from .models.walk import prunable_linears as linears  # torch loads here

    return linears(layer)


__all__ = [
    "Accumulator", "Cell", "DENSE", "FINISHED", "LayerAllocation", "LayerEvidence", "LayerScores", "LinearContext",
    "Metric", "MetricContext", "ModelAlias", "PRUNED", "Plan", "PruningMethod", "REQUIRED", "RunningMean", "STRUCTURED",
    "SparsityTarget", "Statistic", "StructuredMethod", "Table", "TextDataset", "UsageError", "Value", "__version__",
    "add_output_bias", "calibration_windows", "decoder_layers", "group_sum", "hookimpl", "load_model", "mean_preserving_ratios", "parse_sparsity", "prunable_linears", "prune",
    "register_pruned_models", "structured_prune", "tied_at_cut", "token_cosines",
]
