"""The SQLite leaderboard's metric columns, from the metric registry: one per value of a registered
metric that the records hold (`Metric.record_values`), named `<metric>_<value key>` (size_sparse_bytes,
speed_prefill_speedup, perplexity_wikitext2_512) and holding the record's own number; and the
`metric_values` view over them, a row per cell and value in the value's shown unit with which way is
better, that browse's canned queries rank; and each cell's `kind` (unstructured, structured, dense), which
those queries rank within: a structured 50% (half the prunable parameters removed, shapes smaller) and an
unstructured 50% (half the weights masked to zero) are different things."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..api.metric import Value
from ..api.records import DENSE, STRUCTURED, UNSTRUCTURED, is_structured_record
from ..metrics.run import registered_metrics
from ..registry.manager import registered

VIEW = "metric_values"


@dataclass(frozen=True)
class MetricColumn:
    """A column of the leaderboard table: which metric and value it holds."""

    name: str
    metric: str
    metric_description: str
    value: Value

    def description(self) -> str:
        """What datasette shows for the column: what it is, its unit, which way is better."""
        value = self.value
        if value.scale == 1.0:
            unit = value.unit or "none"
        else:  # the column keeps the record's number (bytes, a fraction); the report shows it scaled
            unit = f"{value.unit or 'none'} once multiplied by {value.scale:g} ({VIEW} shows it so)"
        return (f"{value.label}, a value of metric {self.metric}. Unit: {unit}. "
                f"Better: {'higher' if value.higher_is_better else 'lower'}.")


def column_name(metric: str, key: str) -> str:
    """An SQL-safe column name: lower case letters, digits and underscores."""
    return re.sub(r"[^0-9a-z]+", "_", f"{metric}_{key}".lower()).strip("_")


def record_columns(record: dict, reserved: "set[str] | frozenset[str]" = frozenset()) -> dict:
    """{column name: (MetricColumn, the record's number or None)} for every registered metric's values in
    the record. A name that is `reserved` (the table's own columns) or taken by an earlier value is left
    out: the record column still holds that value."""
    found: dict = {}
    for metric in registered_metrics():
        result = metric.result_of(record)
        if not isinstance(result, dict) or not result:
            continue
        for value, entry in metric.record_values(result):
            name = column_name(metric.name, value.key)
            if name and name not in reserved and name not in found:
                found[name] = (MetricColumn(name, metric.name, metric.description, value),
                               None if entry is None else entry[0])
    return found


def metric_columns(records: list[dict], reserved: "set[str] | frozenset[str]" = frozenset()) -> dict[str, MetricColumn]:
    """Every metric column the records give, metrics in registry order, values in the order first met."""
    columns: dict[str, MetricColumn] = {}
    for record in sorted(records, key=lambda r: r["name"]):
        for name, (column, _) in record_columns(record, reserved).items():
            columns.setdefault(name, column)
    ordered = {metric.name: index for index, metric in enumerate(registered_metrics())}
    return dict(sorted(columns.items(), key=lambda item: ordered.get(item[1].metric, len(ordered))))


def record_kind(record: dict) -> str:
    """dense for the baseline, structured for a cell whose method removes whole heads, channels or layers
    (its record says so; a failed one has only its method to go by), else unstructured."""
    cell = record.get("cell") or {}
    if cell.get("method") == DENSE:
        return DENSE
    if is_structured_record(record) or cell.get("method_name") in registered("register_structured_methods"):
        return STRUCTURED
    return UNSTRUCTURED


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def view_sql(table: str, columns: list[MetricColumn]) -> str:
    """CREATE VIEW metric_values: a row per cell and metric value (the value shown in its unit). A diverged
    cell gives a row (number null) for every value, so a setting with a diverged seed pools to null."""
    head = "SELECT name, model, method, kind, sparsity, seqlen, seed, status"
    parts = [f"{head}, {_text(c.metric)} AS metric, {_text(c.value.label)} AS value, {_text(c.value.unit)} AS unit, "
             f"{_text('higher' if c.value.higher_is_better else 'lower')} AS better, "
             f'"{c.name}" * {c.value.scale!r} AS number, {_text(c.name)} AS column_name FROM {table} '
             f"""WHERE "{c.name}" IS NOT NULL OR status = 'diverged'""" for c in columns]
    if not parts:  # no metric values yet: the view exists, with no rows
        parts = [f"{head}, NULL AS metric, NULL AS value, NULL AS unit, NULL AS better, NULL AS number, "
                 f"NULL AS column_name FROM {table} WHERE 0"]
    return f"CREATE VIEW {VIEW} AS\n" + "\nUNION ALL\n".join(parts)
