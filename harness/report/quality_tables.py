"""The built-in quality metrics' report tables: perplexity by (sparsity, L) with intervals and ratios to
a reference method, zero-shot accuracy beside perplexity with differences to the reference."""
from __future__ import annotations

import math
from collections import defaultdict

from ..api.tables import SIGNIFICANT, Cell, Comparison, Table, mark_best
from ..metrics.uncertainty import (
    RESAMPLES,
    accuracy_difference,
    accuracy_estimate,
    perplexity_estimate,
    perplexity_ratio,
)
from .grouping import (
    REFERENCE,
    check_format,
    column_name,
    column_order,
    group_settings,
    interval_notes,
    mark_notes,
    seeds_of,
    spread,
    table_notes,
)

# Published WikiText-2 perplexity (Wanda's code, 4096-token windows for LLaMA-2).
PUBLISHED = {
    "llama-2-7b": {"dense": 5.12, ("magnitude", "0.5"): 14.89, ("sparsegpt", "0.5"): 6.51, ("wanda", "0.5"): 6.42,
                   ("magnitude", "4:8"): 16.48, ("sparsegpt", "4:8"): 8.12, ("wanda", "4:8"): 7.97,
                   ("magnitude", "2:4"): 54.59, ("sparsegpt", "2:4"): 10.17, ("wanda", "2:4"): 11.02},
    "llama-2-13b": {"dense": 4.57, ("magnitude", "0.5"): 6.37, ("sparsegpt", "0.5"): 5.63, ("wanda", "0.5"): 5.56,
                    ("magnitude", "4:8"): 6.76, ("sparsegpt", "4:8"): 6.60, ("wanda", "4:8"): 6.55,
                    ("magnitude", "2:4"): 8.33, ("sparsegpt", "2:4"): 8.32, ("wanda", "2:4"): 8.27},
    "llama-2-70b": {"dense": 3.12, ("magnitude", "0.5"): 4.98, ("sparsegpt", "0.5"): 3.98, ("wanda", "0.5"): 3.98,
                    ("magnitude", "4:8"): 5.58, ("sparsegpt", "4:8"): 4.59, ("wanda", "4:8"): 4.47,
                    ("magnitude", "2:4"): 6.33, ("sparsegpt", "2:4"): 5.40, ("wanda", "2:4"): 5.16},
    "llama-7b": {"dense": 5.68, ("wanda", "0.5"): 7.26, ("sparsegpt", "0.5"): 7.22, ("magnitude", "0.5"): 17.29},
    "meta-llama-3-8b": {"dense": 6.14, ("magnitude", "0.5"): 2499.39, ("wanda", "0.5"): 10.82, ("sparsegpt", "0.5"): 9.40,
                        ("ria", "0.5"): 9.34, ("wanda", "2:4"): 24.18, ("sparsegpt", "2:4"): 16.26, ("ria", "2:4"): 23.08},
}


def published_for(model_source: str) -> dict | None:
    """Published numbers whose model matches the source's last path part, e.g. meta-llama/Llama-2-7b-hf."""
    name = model_source.rstrip("/").split("/")[-1].lower().removesuffix("-hf")
    return PUBLISHED.get(name)


def perplexity_cell(records: list[dict], label: str, resamples: int) -> Cell | None:
    found = [(r["perplexity"][label], r) for r in records if label in (r.get("perplexity") or {})]
    if not found:
        return None
    value, std = spread([math.inf if p.get("perplexity") is None else p["perplexity"] for p, _ in found])
    cell = Cell(value, std, seeds=seeds_of([r for _, r in found]))
    nlls = [p.get("window_nlls") for p, _ in found]
    if cell.finite and all(nlls) and len({len(n) for n in nlls}) == 1 and all(v is not None for n in nlls for v in n):
        estimate = perplexity_estimate(nlls, resamples=resamples)
        cell.low, cell.high, cell.data = estimate.low, estimate.high, nlls
    return cell


def accuracy_cell(records: list[dict], tasks: list[str], metric: str, resamples: int) -> Cell | None:
    """The accuracy over seeds of one task, or with several `tasks` their mean (the record's "mean_acc")."""
    if len(tasks) == 1:
        values = [((r.get("tasks") or {}).get(tasks[0]) or {}).get(metric) for r in records]
    else:  # the records' own mean, which the per-task values average to
        values = [(r.get("tasks") or {}).get("mean_acc") for r in records]
    if not values or any(v is None for v in values):
        return None
    value, std = spread(values)
    cell = Cell(value, std, seeds=seeds_of(records), scale=100.0)  # accuracies in percent, as papers print them
    data = [[((r["tasks"].get(t) or {}).get("correct") or {}).get(metric) for r in records] for t in tasks]
    if tasks and all(all(runs) and len({len(x) for x in runs}) == 1 for runs in data):
        estimate = accuracy_estimate(data, resamples=resamples)
        cell.low, cell.high, cell.data = estimate.low, estimate.high, data
    return cell


def comparer(kind: str, resamples: int):
    """compare(reference, method) for cells of one kind: a perplexity ratio or an accuracy difference."""
    def compare(reference: Cell, method: Cell) -> Comparison | None:
        if reference.data is None or method.data is None:
            return None
        paired = perplexity_ratio if kind == "ppl" else accuracy_difference
        try:
            return paired(reference.data, method.data, same_seeds=reference.seeds == method.seeds, resamples=resamples)
        except ValueError:  # evaluated on different windows or items: no paired comparison
            return None

    return compare


def _compared_cell(reference: Cell | None, method: Cell | None, kind: str, resamples: int) -> Cell | str:
    """The method's ratio (perplexity) or difference in points (accuracy) to the reference, with its interval."""
    if reference is None or method is None:
        return ""
    if not reference.finite or not method.finite:
        return "diverged"
    comparison = comparer(kind, resamples)(reference, method)
    if kind == "ppl":
        cell = Cell(method.value / reference.value, decimals=3)
    else:
        cell = Cell(method.value - reference.value, scale=100.0)
    if comparison is not None:
        cell.value, cell.low, cell.high = comparison.value, comparison.low, comparison.high
        cell.flag = SIGNIFICANT if comparison.significant else ""
    return cell


def perplexity_cells(records: list[dict], resamples: int = RESAMPLES) -> dict:
    """{(model, eval label): {method: {(sparsity, seqlen): Cell}}}, seeds pooled into one cell with
    its interval; the dense baseline is the method "dense" at (None, None)."""
    grouped: dict = defaultdict(lambda: defaultdict(dict))
    for (model, method, sparsity, seqlen), runs in group_settings(records).items():
        for label in sorted({label for r in runs for label in (r.get("perplexity") or {})}):
            grouped[(model, label)][method][(sparsity, seqlen)] = perplexity_cell(runs, label, resamples)
    return grouped


def perplexity_report_tables(records: list[dict], reference: str | None, resamples: int) -> list[Table]:
    sources = {r["cell"]["model"]: r["cell"].get("model_source", "") for r in records}
    compare = comparer("ppl", resamples)
    tables = []
    for (model, label), cells in sorted(perplexity_cells(records, resamples).items()):
        dense = cells.pop("dense", {}).get((None, None))
        columns = column_order({c for by_column in cells.values() for c in by_column})
        for column in columns:
            mark_best([by_column[column] for by_column in cells.values() if column in by_column], True, compare)
        published = published_for(sources.get(model, "")) if label.startswith("wikitext2") else None
        published_columns = sorted({key[1] for key in (published or {}) if isinstance(key, tuple)})
        headers = (["method"] + [f"{column_name(c)} ↓" for c in columns]
                   + [f"published {s} ↓" for s in published_columns])
        rows = []
        if dense is not None:
            rows.append(["dense"] + [dense] * len(columns)
                        + [f"{published['dense']:.2f}" if published else ""] * len(published_columns))
        for method in sorted(cells):
            rows.append([method] + [cells[method].get(c, "") for c in columns]
                        + [f"{published[(method, s)]:.2f}" if published and (method, s) in published else ""
                           for s in published_columns])
        shown = [c for row in rows for c in row[1:]]
        tables.append(Table(f"{model}, {label} perplexity (lower is better)", headers, rows,
                            table_notes(shown, "windows", resamples)))
        if reference and reference in cells:
            tables.append(_ratio_table(model, label, cells, dense, columns, reference, resamples))
    return tables


def _ratio_table(model, label, cells, dense, columns, reference, resamples) -> Table:
    rows = []
    for method in (["dense"] if dense is not None else []) + sorted(m for m in cells if m != reference):
        rows.append([method] + [_compared_cell(cells[reference].get(c), dense if method == "dense" else cells[method].get(c),
                                               "ppl", resamples) for c in columns])
    notes = [f"ratio: the method's perplexity divided by {reference}'s in the same column (below 1: better than "
             f"{reference})."] + table_notes([c for row in rows for c in row[1:]], "windows", resamples, compared=True)
    return Table(f"{model}, {label} perplexity relative to {reference} (paired, lower is better)",
                 ["method"] + [f"{column_name(c)} ↓" for c in columns], rows, notes)


def perplexity_tables(records: list[dict], fmt: str = "github", reference: str | None = REFERENCE, *,
                      resamples: int = RESAMPLES) -> list[tuple[str, str]]:
    """Per model and evaluation: a table with methods as rows (dense first) and (sparsity, L) as
    columns, each cell with its 95% interval, then each method's perplexity ratio to `reference`
    with its paired interval (when `reference` was run). Returns (title, rendered table) pairs."""
    check_format(fmt)
    return [(t.title, t.render(fmt)) for t in perplexity_report_tables(records, reference, resamples)]


# -- zero-shot accuracy ---------------------------------------------------------------------------


def _row_label(setting: tuple) -> str:
    _, method, sparsity, seqlen = setting
    return "dense" if method == "dense" else f"{method} {sparsity} L={seqlen}"


def task_report_tables(records: list[dict], reference: str | None, resamples: int) -> list[Table]:
    settings = {s: [r for r in runs if r.get("tasks")] for s, runs in group_settings(records).items()}
    tables = []
    for model in sorted({s[0] for s, runs in settings.items() if runs}):
        mine = {s: runs for s, runs in settings.items() if s[0] == model and runs}
        ordered = sorted(mine, key=lambda s: (s[1] != "dense", _row_label(s)))
        ppl_labels = sorted({label for runs in mine.values() for r in runs for label in r.get("perplexity", {})})
        task_names = sorted({t for runs in mine.values() for r in runs for t in r["tasks"] if t != "mean_acc"})
        metrics = [(t, m) for t in task_names for m in ("acc", "acc_norm")
                   if any(m in (r["tasks"].get(t) or {}) for runs in mine.values() for r in runs)]
        accuracy_columns = metrics + [("mean", "acc")]

        def accuracy(runs, column):
            task, metric = column
            tasks = [task] if task != "mean" else sorted({t for r in runs for t, v in r["tasks"].items()
                                                          if isinstance(v, dict) and "acc" in v})
            return accuracy_cell(runs, tasks, metric, resamples)

        grid = {s: [perplexity_cell(mine[s], label, resamples) for label in ppl_labels]
                + [accuracy(mine[s], c) for c in accuracy_columns] for s in ordered}
        pruned = [s for s in ordered if s[1] != "dense"]
        for index in range(len(ppl_labels) + len(accuracy_columns)):
            is_ppl = index < len(ppl_labels)
            mark_best([grid[s][index] for s in pruned if grid[s][index] is not None], is_ppl,
                      comparer("ppl" if is_ppl else "acc", resamples))
        headers = (["method"] + [f"{label} ↓" for label in ppl_labels]
                   + [f"{t} {m} ↑" if t != "mean" else "mean acc ↑" for t, m in accuracy_columns])
        rows = [[_row_label(s)] + [c if c is not None else "" for c in grid[s]] for s in ordered]
        ppl_cells = [c for s in ordered for c in grid[s][:len(ppl_labels)]]
        accuracy_cells = [c for s in ordered for c in grid[s][len(ppl_labels):]]
        notes = (interval_notes(accuracy_cells, "items", resamples)
                 + [f"perplexity columns, {n}" for n in interval_notes(ppl_cells, "windows", resamples)]
                 + mark_notes(ppl_cells + accuracy_cells))
        tables.append(Table(f"{model}, zero-shot accuracy (lm-eval, acc, %) beside perplexity", headers, rows, notes))
        if reference and any(s[1] == reference for s in pruned):
            accuracies = {s: grid[s][len(ppl_labels):] for s in pruned}
            tables += _difference_table(model, accuracies, accuracy_columns, reference, resamples)
    return tables


def _difference_table(model, accuracies: dict, columns, reference, resamples) -> list[Table]:
    """The accuracy difference to the reference, as a list of one table (none when nothing is compared)."""
    rows = []
    for setting, cells in accuracies.items():
        base = accuracies.get((setting[0], reference, setting[2], setting[3]))
        if setting[1] != reference and base is not None:
            rows.append([_row_label(setting)] + [_compared_cell(b, c, "acc", resamples) for b, c in zip(base, cells)])
    if not rows:
        return []
    notes = [f"difference: the method's accuracy minus {reference}'s at the same sparsity and L, in percentage "
             f"points (above 0: better than {reference})."]
    notes += table_notes([c for row in rows for c in row[1:]], "items", resamples, compared=True)
    return [Table(f"{model}, zero-shot accuracy minus {reference}'s (paired, points, higher is better)",
                  ["method"] + [f"{t} {m} ↑" if t != "mean" else "mean acc ↑" for t, m in columns], rows, notes)]


def task_tables(records: list[dict], fmt: str = "github", reference: str | None = REFERENCE, *,
                resamples: int = RESAMPLES) -> list[tuple[str, str]]:
    """Zero-shot accuracy beside perplexity, one table per model with a row per method and setting,
    each cell with its 95% interval; then accuracy differences to `reference` with paired intervals."""
    check_format(fmt)
    return [(t.title, t.render(fmt)) for t in task_report_tables(records, reference, resamples)]

