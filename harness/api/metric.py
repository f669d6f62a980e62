"""Evaluation metrics as registered objects: the `Metric` base class, what a metric is given
(`MetricContext`), its settings and their validation, running a cell's metrics, and the generic report
table any metric gets. The built-in metrics are plugins: `quality_metrics` (perplexity, zero-shot)
and `efficiency_metrics` (size, memory, speed)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import did_you_mean

REQUIRED = object()  # a setting without a default
DENSE, PRUNED = "dense", "pruned"  # the kinds of cell a metric applies to


@dataclass(frozen=True)
class Value:
    """One reported number of a metric: its key in the metric's record, its column label and direction."""

    key: str
    label: str
    higher_is_better: bool
    unit: str = ""
    scale: float = 1.0  # shown value = stored value * scale (bytes shown in MB, fractions in percent)
    decimals: int = 2


class Metric:
    """An evaluation metric. Subclasses set the class attributes and implement `compute`.

    `compute(context, **settings)` returns {value key: number, or {"value": v, "low": l, "high": h, ...}}:
    the record keeps it whole under `record["metrics"][name]` (or `record[record_key]`), and the report
    shows every value as a column, with an arrow from `higher_is_better` (or from the `Value` in
    `values` with that key), the 95% interval where low and high are given, the best bold.
    """

    name: str = ""
    description: str = ""
    higher_is_better: bool = True
    unit: str = ""
    applies_to: tuple[str, ...] = (DENSE, PRUNED)
    needs_tokenizer: bool = False
    settings: dict[str, Any] = {}  # name -> default (REQUIRED: no default)
    values: tuple[Value, ...] = ()  # labels for known value keys; others are shown under their key
    record_key: str | None = None  # None: record["metrics"][name]
    version: str = "1"
    # What figures of an earlier version mean, by version: tables and plots label records measured by one.
    version_notes: dict[str, str] = {}
    plot_prefix: str = ""  # file name prefix of this metric's plots (those of metrics with `plot_cells`)
    log_scale: bool = False
    # An efficiency metric's value that quality is plotted against, with the Pareto front marked.
    pareto_value: Value | None = None
    # How the report tabulates it when `tables` returns None: "generic" (a column per value), "perplexity"
    # (per-window NLLs: bootstrap intervals, ratios to a reference method) or "accuracy" (per-item correctness).
    table_style: str = "generic"
    timed: bool = False  # its values are timings: a cell measured on a loaded machine is flagged, never bold

    def check(self, settings: dict) -> list[str]:
        """Problems with settings whose names and types are already right (e.g. a dataset that does not exist)."""
        return []

    def compute(self, context: MetricContext, **settings) -> dict:
        raise NotImplementedError(f"metric {self.name} does not implement compute")

    def diverged(self, result: dict) -> bool:
        """Whether the cell's result says the model diverged (the cell is recorded as 'diverged')."""
        return False

    def result_of(self, record: dict) -> dict | None:
        """This metric's part of a record."""
        if self.record_key is not None:
            return record.get(self.record_key)
        return (record.get("metrics") or {}).get(self.name)

    def older_versions(self, records: list[dict]) -> dict[str, int]:
        """{version: number of records} for the records whose figures of this metric an earlier version made."""
        found: dict[str, int] = {}
        for record in records:
            version = next((str(e.get("version")) for e in record.get("evaluation_metrics") or []
                            if e.get("name") == self.name), None)
            if self.result_of(record) and version not in (None, self.version):
                found[version] = found.get(version, 0) + 1
        return found

    def older_versions_label(self, records: list[dict]) -> str:
        """", speed version 1" for a title or axis whose figures an earlier version made (any of them), else ""."""
        older = self.older_versions(records)
        return f", {self.name} version {'/'.join(sorted(older))}" if older else ""

    def older_versions_note(self, records: list[dict]) -> str | None:
        """A footnote naming the earlier versions behind some of `records`' figures and what they mean."""
        older = self.older_versions(records)
        if not older:
            return None
        total = sum(1 for r in records if self.result_of(r))
        parts = [f"version {v} ({n} of {total} records){': ' + self.version_notes[v] if v in self.version_notes else ''}"
                 for v, n in sorted(older.items())]
        return f"{self.name} figures here come from {'; '.join(parts)}; the metric is now version {self.version}."

    def record_values(self, result: dict, resamples: int = 0) -> list[tuple[Value, tuple | None]]:
        """Each value of one cell's result as (Value, (value, low, high)), None where it is not a finite
        number: a column each in the SQLite leaderboard, a row each on the cell's page. With `resamples`
        a metric may add the interval it computes from what the result keeps (perplexity's window NLLs);
        the default reads the declared values (or every numeric key), with the low and high they give."""
        return [(value, value_of(result.get(value.key))) for value in value_specs(self, [result])]

    def tables(self, records: list[dict], reference: str | None, resamples: int) -> list | None:
        """This metric's report tables (`prunebench.Table`s built from the records), or None for the report's
        own: the table of its `table_style` (perplexity or accuracy), else one generic table."""
        return None

    def plot_cells(self, records: list[dict], resamples: int) -> dict | None:
        """{(model, label): {method: {(sparsity, L): Cell}}} for the plots against length, sparsity and
        pruning time (the dense baseline as method "dense" at (None, None)); None: those of its
        `table_style` ("perplexity" plots the per-window perplexities), else not plotted."""
        return None

    def axis_label(self, label: str) -> str:
        return f"{label} {self.unit} ({'higher' if self.higher_is_better else 'lower'} is better)"

    def headline(self, result: dict) -> list[str]:
        """Short texts for the line `prunebench run` prints when a cell finishes (e.g. "wikitext2-512 ppl 35.8")."""
        return []

    def summary(self, records: list[dict]) -> str | None:
        """A phrase for the report's summary line (e.g. which evaluations were run); None: nothing to say."""
        return None

    def run_columns(self, records: list[dict]) -> list[tuple[str, Callable[[dict], tuple[float | None, bool]]]]:
        """Columns of the one-row-per-cell table: (header, record -> (shown value or None, diverged)).
        The default shows the metric's first declared value (or first numeric key) where records hold it."""
        results = [r for r in (self.result_of(record) for record in records) if r]
        shown = value_specs(self, results)[:1]
        if not shown:
            return []
        value = shown[0]

        def read(record: dict) -> tuple[float | None, bool]:
            entry = value_of((self.result_of(record) or {}).get(value.key))
            return (None if entry is None else entry[0] * value.scale), False

        unit = f" {value.unit}" if value.unit else ""
        return [(f"{value.label}{unit} {'↑' if value.higher_is_better else '↓'}", read)]

    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


@dataclass
class MetricContext:
    """What a metric computes from: the cell's model (pruned in place, or dense) and its surroundings."""

    model: Any
    tokenizer: Any
    device: Any
    data_dir: str | None = None
    progress: bool = False
    cell_kind: str = PRUNED
    sparsity: str | None = None  # e.g. "0.5" or "2:4"; None for the dense cell
    method: str | None = None
    cell: str | None = None  # the cell's name (its results directory), where a metric keeps files
    eval_seqlen: int = 512  # the evaluation window length (the grid's first perplexity seqlen)
    # dataset -> token ids of its evaluation text, cached by the runner across cells
    evaluation_tokens: Callable[[str], Any] | None = None
    # a copy of the model with its dense weights, for metrics that compare with the dense model
    dense_model: Callable[[], Any] | None = None
    # a structured cell's model: whole heads, channels or layers removed, smaller but with no pruning zeros
    structured: bool = False


@dataclass(frozen=True)
class MetricSpec:
    """A metric named in a grid's `evaluation.metrics`, with its settings (defaults filled in)."""

    name: str
    settings: dict = field(default_factory=dict)


def check_settings(metric: Metric, given: dict) -> tuple[dict, list[tuple[str | None, str]]]:
    """The settings with defaults filled in, and the problems: (setting or None, message)."""
    problems: list[tuple[str | None, str]] = []
    settings = {}
    for key, value in given.items():
        if key not in metric.settings:
            problems.append((key, str(did_you_mean(f"setting of metric {metric.name}", key, metric.settings))))
            continue
        default = metric.settings[key]
        if default is not REQUIRED and default is not None and not _same_kind(default, value):
            problems.append((key, f"{key} of metric {metric.name} is a {type(default).__name__}, not {value!r}."))
            continue
        settings[key] = list(value) if isinstance(value, tuple) else value
    for key, default in metric.settings.items():
        if key not in settings and not any(p[0] == key for p in problems):
            if default is REQUIRED:
                problems.append((key, f"metric {metric.name} needs the setting {key}."))
            else:
                settings[key] = list(default) if isinstance(default, tuple) else default
    if not problems:
        problems += [(None, message) for message in metric.check(settings)]
    return settings, problems


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def value_of(entry: Any) -> tuple[float, float | None, float | None] | None:
    """(value, low, high) of a number or a {"value", "low", "high"} entry; None for anything else."""
    if isinstance(entry, bool):
        return None
    if isinstance(entry, (int, float)):
        return float(entry), None, None
    if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)) and not isinstance(entry["value"], bool):
        return float(entry["value"]), entry.get("low"), entry.get("high")
    return None


def value_specs(metric: Metric, results: list[dict]) -> list[Value]:
    """The metric's columns: its declared values that the records hold; a metric that declares none
    shows every numeric key of its results."""
    present = dict.fromkeys(key for result in results for key, entry in result.items() if value_of(entry) is not None)
    if metric.values:
        return [v for v in metric.values if v.key in present]
    return [Value(key, key, metric.higher_is_better, metric.unit) for key in present]


__all__ = ["DENSE", "PRUNED", "REQUIRED", "Metric", "MetricContext", "MetricSpec", "Value", "check_settings",
           "value_of", "value_specs"]
