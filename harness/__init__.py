"""prunebench: a plugin-based harness for post-training pruning of large language models."""
from __future__ import annotations

from prunebench.errors import UsageError
from prunebench.hookspecs import hookimpl
from prunebench.method import Accumulator, LinearContext, PruningMethod, RunningMean, Statistic
from prunebench.metrics import Metric, MetricContext, Value
from prunebench.pruned_models import register_when_transformers_loads
from prunebench.structured_method import LayerAllocation, LayerEvidence, LayerScores, StructuredMethod
from prunebench.sparsity import SparsityTarget, parse_sparsity

__version__ = "0.1.0"

# Structurally pruned models with per-layer shapes load through AutoModelForCausalLM after
# `import prunebench`; registration waits for transformers so that `--help` stays torch-free.
register_when_transformers_loads()


def prune(model, method, sparsity, calibration, **method_args):
    """Prune `model` in place with `method` at `sparsity` on `calibration` token ids (nsamples, L).

    Returns a `prunebench.engine.PruneReport`. Engine options (batch_size, device, propagate,
    progress, allocation, owl_m, owl_lambda) pass through; other keyword arguments are the method's arguments.
    """
    from prunebench.engine import prune as _prune

    return _prune(model, method, sparsity, calibration, **method_args)


__all__ = [
    "Accumulator", "LinearContext", "PruningMethod", "RunningMean", "SparsityTarget", "Statistic", "UsageError",
    "Metric", "MetricContext", "Value", "hookimpl", "parse_sparsity", "prune", "__version__",
    "LayerAllocation", "LayerEvidence", "LayerScores", "StructuredMethod",
]
