"""The table every metric gets unless it builds its own: per model, a row per setting, a column per value."""
from __future__ import annotations

from ..api.metric import DENSE, Metric, Value, value_of, value_specs
from ..api.records import measured_contended
from ..api.tables import BEST, CONTENDED, TIED, Cell, Table
from .grouping import column_key, group_settings, seeds_of, spread


def generic_tables(metric: Metric, records: list[dict]) -> list:
    """One table per model: a row per setting (dense first, then method, sparsity, L), a column per value."""
    settings = {s: [r for r in runs if metric.result_of(r)] for s, runs in group_settings(records).items()}
    settings = {s: runs for s, runs in settings.items() if runs}
    tables = []
    for model in sorted({s[0] for s in settings}):
        mine = {s: runs for s, runs in settings.items() if s[0] == model}
        values = value_specs(metric, [metric.result_of(r) for runs in mine.values() for r in runs])
        if not values:
            continue
        ordered = sorted(mine, key=lambda s: (s[1] != DENSE, s[1], column_key((s[2], s[3]))))

        rows = [[setting_label(s)] + [metric_cell(metric, v, mine[s]) for v in values] for s in ordered]
        for index, value in enumerate(values, start=1):
            mark_ranked([row[index] for row, s in zip(rows, ordered)
                   if s[1] != DENSE and isinstance(row[index], Cell) and not row[index].flag],
                  value.higher_is_better, BEST, TIED)
        headers = ["method"] + [f"{v.label}{f' {v.unit}' if v.unit else ''} {'↑' if v.higher_is_better else '↓'}"
                                for v in values]
        notes = [f"{metric.name}: {metric.description}."]
        if any(isinstance(c, Cell) and c.has_interval for row in rows for c in row[1:]):
            notes.append("[low, high]: the range the metric reports (its spread over repetitions, or its 95% "
                         "interval); over several seeds, the mean and the lowest to highest of the seeds' ranges.")
        notes.append("**bold**: the best pruned row in its column, strictly and outside the runner-up's range where "
                     "there is one; †: a best whose range overlaps others' (tied).")
        if any(isinstance(c, Cell) and c.flag for row in rows for c in row[1:]):
            notes.append("*: measured while other work loaded the machine (its load record); never bold or tied.")
        runs_of = [r for runs in mine.values() for r in runs]
        if note := metric.older_versions_note(runs_of):
            notes.append(note)
        tables.append(Table(f"{model}, {metric.name} ({'higher' if metric.higher_is_better else 'lower'} is better"
                            f"{metric.older_versions_label(runs_of)})", headers, rows, notes))
    return tables


def metric_cell(metric: Metric, value: Value, runs: list[dict]):
    """One value of a metric over a setting's seeds, as a table cell ("" when a run lacks it).

    The mean, with the range from the lowest low to the highest high of the seeds' own ranges (a
    value without one counts as its own; a one-point range is not shown); a timed metric measured
    on a loaded machine is flagged."""
    found = [value_of((metric.result_of(r) or {}).get(value.key)) for r in runs]
    if not found or any(f is None for f in found):
        return ""
    mean, _ = spread([f[0] for f in found])
    low = min(f[0] if f[1] is None else f[1] for f in found)
    high = max(f[0] if f[2] is None else f[2] for f in found)
    result = Cell(mean, seeds=seeds_of(runs), scale=value.scale, decimals=value.decimals, interval_decimals=value.decimals)
    if low != high:
        result.low, result.high = low, high
    if metric.timed and any(measured_contended(r, metric.name) for r in runs):
        result.flag = CONTENDED
    return result


def setting_label(setting: tuple) -> str:
    """A row label: "dense", or "method sparsity L=length"."""
    _, method, sparsity, seqlen = setting
    return DENSE if method == DENSE else f"{method} {sparsity} L={seqlen}"


def mark_ranked(cells: list, higher_is_better: bool, best_mark: str, tied_mark: str) -> None:
    """Bold a strictly best cell whose range does not overlap the runner-up's; otherwise dagger the ties."""
    ranked = sorted((c for c in cells if c.finite), key=lambda c: c.value, reverse=higher_is_better)
    if len(ranked) < 2:
        return
    best, others = ranked[0], ranked[1:]

    def overlaps(other) -> bool:
        if other.value == best.value:
            return True
        if best.has_interval and other.has_interval:
            return not (best.low > other.high or best.high < other.low)
        return False

    tied = [o for o in others if overlaps(o)]
    if not tied:
        best.mark = best_mark
        return
    for c in [best] + tied:
        c.mark = tied_mark
