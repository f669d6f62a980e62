"""Running a cell's metrics through the registry, and every registered metric's short texts."""
from __future__ import annotations

from .. import registry
from ..api.errors import UsageError
from ..api.metric import Metric, MetricContext, MetricSpec


def run_metrics(specs: list[MetricSpec], context: MetricContext) -> tuple[dict, bool]:
    """Compute every metric that applies to the context's cell: (record fields, whether it diverged).

    A metric that raises propagates: the runner records the cell as failed and the grid goes on.
    """
    fields: dict = {}
    diverged = False
    for spec in specs:
        metric = registry.get_metric(spec.name)
        if context.cell_kind not in metric.applies_to:
            continue
        if metric.needs_tokenizer and context.tokenizer is None:
            raise UsageError(f"metric {metric.name} needs the model's tokenizer, and this model came without one.")
        result = metric.compute(context, **spec.settings)
        if metric.record_key is not None:
            fields.setdefault(metric.record_key, {}).update(result)
        else:
            fields.setdefault("metrics", {}).setdefault(metric.name, {}).update(result)
        diverged |= metric.diverged(result)
    return fields, diverged


def headline(record: dict) -> list[str]:
    """Every metric's short texts for a finished cell's line."""
    return [text for metric in registered_metrics() if metric.result_of(record)
            for text in metric.headline(metric.result_of(record))]


def registered_metrics() -> list[Metric]:
    """Every registered metric, built-ins first."""
    return [entry.item for entry in registry.registered("register_metrics").values()]
