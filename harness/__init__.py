"""prunebench: a plugin-based harness for post-training pruning of large language models.

The public API: what a plugin subclasses or receives (re-exported from `prunebench.api`), the helpers
the built-in plugins share, and the library calls a script makes. Nothing happens at import: torch
and transformers load with the first call that needs them.
"""
from __future__ import annotations

from . import registry
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
from .data.datasets import (
    calibration_documents,
    calibration_windows,
    dataset_problem,
    evaluation_text,
    sample_calibration,
    tokenize_text,
)
from .metrics.quality import context_tokens, window_problems
from .models.checkpoints import register_with_transformers as register_pruned_models
from .models.loading import load_model, parse_dtype
from .pruning.masks import tied_at_cut
from .pruning.recovery import capacity_ranks, lora_parameters_per_rank, lora_recovery
from .pruning.structured_allocation import Plan, mean_preserving_ratios
from .store.results import ResultsStore


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


def evaluation_windows(context, dataset: str, windows: int, seqlen: int):
    """(n, seqlen) token ids for a metric: the first n = min(windows, tokens // seqlen) non-overlapping
    windows of `dataset`'s evaluation text (tokenized once per model where the runner caches it)."""
    from .metrics.perplexity import evaluation_windows as split  # torch loads here

    return split(context_tokens(context, dataset).reshape(-1), seqlen, windows)


def decoder_layers(model):
    """The decoder layers of a causal LM of any supported family, in order."""
    from .models.walk import decoder_layers as layers  # torch loads here

    return layers(model)


def prunable_linears(layer):
    """A decoder layer's prunable linears by name (attention and MLP projections)."""
    from .models.walk import prunable_linears as linears  # torch loads here

    return linears(layer)


def on_device(module, device):
    """A context manager: `module` on `device` for the block, then back where its parameters were."""
    from .models.walk import on_device as moved  # torch loads here

    return moved(module, device)


def module_bytes(module) -> int:
    """Bytes of a module's parameters and buffers."""
    from .models.walk import module_bytes as count  # torch loads here

    return count(module)


def perplexity(model, token_ids, seqlen: int, max_windows: int | None = None, **options):
    """Perplexity over non-overlapping windows of `token_ids`, as Wanda's and SparseGPT's code compute it;
    a result with the per-window NLLs (`device`, `progress` pass through)."""
    from .metrics.perplexity import perplexity as evaluate  # torch loads here

    return evaluate(model, token_ids, seqlen, max_windows, **options)


def perplexity_estimate(window_nlls, **options):
    """Perplexity with its bootstrap interval from per-window mean NLLs (one run, or seeds x windows)."""
    from .metrics.uncertainty import perplexity_estimate as estimate  # torch loads here

    return estimate(window_nlls, **options)


def perplexity_ratio(reference_nlls, method_nlls, **options):
    """The perplexity ratio of a method to a reference on the same windows, with its paired interval."""
    from .metrics.uncertainty import perplexity_ratio as ratio  # torch loads here

    return ratio(reference_nlls, method_nlls, **options)


def claims_table(claims_file, records):
    """The claims table (a report Table) of a claims YAML file against a store's records."""
    from .report.claims import claims_table as table, load_claims  # torch and the report load here

    return table(load_claims(claims_file), records)


def report_tables(records, reference: str | None = "wanda", **options):
    """Every table of a report from a store's records, unrendered (what `prunebench report` writes)."""
    from .report.tables import report_tables as tables  # torch and the report load here

    return tables(records, reference, **options)


__all__ = [
    "__version__",
    "Accumulator",
    "add_output_bias",
    "calibration_documents",
    "calibration_windows",
    "claims_table",
    "Cell",
    "decoder_layers",
    "DENSE",
    "evaluation_text",
    "FINISHED",
    "group_sum",
    "hookimpl",
    "LayerAllocation",
    "LayerEvidence",
    "LayerScores",
    "LinearContext",
    "load_model",
    "mean_preserving_ratios",
    "capacity_ranks",
    "lora_parameters_per_rank",
    "lora_recovery",
    "Metric",
    "MetricContext",
    "ModelAlias",
    "module_bytes",
    "on_device",
    "parse_dtype",
    "parse_sparsity",
    "perplexity",
    "perplexity_estimate",
    "perplexity_ratio",
    "Plan",
    "prunable_linears",
    "prune",
    "PRUNED",
    "PruningMethod",
    "register_pruned_models",
    "registry",
    "report_tables",
    "REQUIRED",
    "ResultsStore",
    "RunningMean",
    "sample_calibration",
    "SparsityTarget",
    "Statistic",
    "STRUCTURED",
    "structured_prune",
    "StructuredMethod",
    "Table",
    "TextDataset",
    "tied_at_cut",
    "token_cosines",
    "tokenize_text",
    "UsageError",
    "Value",
]
