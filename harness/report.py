"""Paper-style tables from a results directory, each number with its uncertainty: perplexity and
zero-shot accuracy with 95% intervals and paired comparisons to a reference method, and pruning time."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from prunebench.errors import UsageError
from prunebench.sparsity import parse_sparsity
from prunebench.store import ResultsStore
from prunebench.tablecells import BEST, CONTENDED, DAGGER, SIGNIFICANT, TIED, Cell, Table, latex_text, mark_best
from prunebench.uncertainty import (RESAMPLES, Comparison, accuracy_difference, accuracy_estimate,
                                    perplexity_estimate, perplexity_ratio)

FORMATS = ("github", "latex", "csv")
REFERENCE = "wanda"
FINISHED = ("ok", "diverged")

# REFERENCE.md section 5: WikiText-2 perplexity (Wanda's code, 4096-token windows for LLaMA-2).
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

HOW_TO_READ = f"""\
How to read these tables

- `89.68 [87.1, 92.3]`: a value with its 95% interval, a seeded bootstrap ({RESAMPLES} resamples) over the
  evaluation windows (perplexity) or the task's items (accuracy; the Wilson interval for one task and one seed).
- `89.68 ± 1.20 [85.9, 93.4]`: with several calibration seeds, the mean and standard deviation over seeds, and an
  interval that resamples both the seeds and the windows (a two-level bootstrap, see prunebench.uncertainty).
- **Bold**: best in its column, and the paired 95% interval of its difference to the runner-up (both evaluated on
  the same windows or items) excludes 0. When it does not, there is no bold: the best and every cell statistically
  tied with it carry a dagger {DAGGER}.
- Ratio and difference tables compare each method with a reference method in the same setting, with the paired
  95% interval; * marks a comparison whose interval excludes no difference (a ratio of 1, a difference of 0).
- "no interval" (a footnote): the record lacks per-window NLLs or per-item correctness (an older prunebench),
  so its cells show no interval, are never bold, and ties with them are not tested.
- Timings are single measurements without an interval; * marks one taken while other work loaded the machine,
  which is never bold as fastest.
"""


def published_for(model_source: str) -> dict | None:
    """Published numbers whose model matches the source's last path part, e.g. meta-llama/Llama-2-7b-hf."""
    name = model_source.rstrip("/").split("/")[-1].lower().removesuffix("-hf")
    return PUBLISHED.get(name)


# -- records to cells --------------------------------------------------------------------------


def _settings(records: list[dict]) -> dict[tuple, list[dict]]:
    """Finished records by (model, method, sparsity, seqlen): one list per setting, its seeds in order."""
    grouped: dict = defaultdict(list)
    for record in records:
        if record.get("status") in FINISHED:
            cell = record["cell"]
            grouped[(cell["model"], cell["method"], cell.get("sparsity"), cell.get("seqlen"))].append(record)
    for runs in grouped.values():
        runs.sort(key=lambda r: (r["cell"].get("seed") is None, r["cell"].get("seed") or 0))
    return grouped


def _seeds(records: list[dict]) -> tuple:
    return tuple(r["cell"].get("seed") for r in records)


def _spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and std over seeds (inf when any seed diverged; no std for one seed)."""
    if not all(math.isfinite(v) for v in values):
        return math.inf, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _perplexity_cell(records: list[dict], label: str, resamples: int) -> Cell | None:
    found = [(r["perplexity"][label], r) for r in records if label in (r.get("perplexity") or {})]
    if not found:
        return None
    value, std = _spread([math.inf if p.get("perplexity") is None else p["perplexity"] for p, _ in found])
    cell = Cell(value, std, seeds=_seeds([r for _, r in found]))
    nlls = [p.get("window_nlls") for p, _ in found]
    if cell.finite and all(nlls) and len({len(n) for n in nlls}) == 1 and all(v is not None for n in nlls for v in n):
        estimate = perplexity_estimate(nlls, resamples=resamples)
        cell.low, cell.high, cell.data = estimate.low, estimate.high, nlls
    return cell


def _accuracy_cell(records: list[dict], tasks: list[str], metric: str, resamples: int) -> Cell | None:
    """The accuracy over seeds of one task, or with several `tasks` their mean (the record's "mean_acc")."""
    if len(tasks) == 1:
        values = [((r.get("tasks") or {}).get(tasks[0]) or {}).get(metric) for r in records]
    else:  # the records' own mean, which the per-task values average to
        values = [(r.get("tasks") or {}).get("mean_acc") for r in records]
    if not values or any(v is None for v in values):
        return None
    value, std = _spread(values)
    cell = Cell(value, std, seeds=_seeds(records), scale=100.0)  # accuracies in percent, as papers print them
    data = [[((r["tasks"].get(t) or {}).get("correct") or {}).get(metric) for r in records] for t in tasks]
    if tasks and all(all(runs) and len({len(x) for x in runs}) == 1 for runs in data):
        estimate = accuracy_estimate(data, resamples=resamples)
        cell.low, cell.high, cell.data = estimate.low, estimate.high, data
    return cell


def _comparer(kind: str, resamples: int):
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
    comparison = _comparer(kind, resamples)(reference, method)
    if kind == "ppl":
        cell = Cell(method.value / reference.value, decimals=3)
    else:
        cell = Cell(method.value - reference.value, scale=100.0)
    if comparison is not None:
        cell.value, cell.low, cell.high = comparison.value, comparison.low, comparison.high
        cell.flag = SIGNIFICANT if comparison.significant else ""
    return cell


# -- footnotes ----------------------------------------------------------------------------------


def _notes(cells: list, unit: str, resamples: int, compared: bool = False) -> list[str]:
    """Footnotes for what a table's cells show: intervals, seeds, missing data, then bold and daggers."""
    return _interval_notes(cells, unit, resamples, compared) + _mark_notes(cells)


def _interval_notes(cells: list, unit: str, resamples: int, compared: bool = False) -> list[str]:
    cells = [c for c in cells if isinstance(c, Cell) and c.finite]
    notes = []
    if any(c.has_interval for c in cells):
        how = "paired bootstrap over the same" if compared else "bootstrap over the"
        wilson = "; the Wilson interval for one task and one seed" if unit == "items" and not compared else ""
        notes.append(f"[low, high]: 95% interval, {how} {unit} ({resamples} resamples, seeded){wilson}.")
    seeds = sorted({len(c.seeds) for c in cells if c.std is not None})
    if seeds:
        notes.append(f"± std over {' or '.join(map(str, seeds))} calibration seeds; the interval resamples the seeds "
                     f"and the {unit} (two-level bootstrap).")
    if compared and any(c.flag == SIGNIFICANT for c in cells):
        notes.append("*: the interval excludes no difference (a ratio of 1, a difference of 0): a significant difference.")
    missing = sum(1 for c in cells if not c.has_interval)
    if missing:
        notes.append(f"no interval: {missing} cell(s) come from records without per-{unit[:-1]} data (an older "
                     "prunebench); they show no interval, are never bold, and ties with them are not tested.")
    return notes


def _mark_notes(cells: list) -> list[str]:
    marks = {c.mark for c in cells if isinstance(c, Cell)}
    notes = []
    if BEST in marks:
        notes.append("**bold**: best in its column, and the paired 95% interval of its difference to the runner-up "
                     "excludes 0.")
    if TIED in marks:
        notes.append(f"{DAGGER}: the best in its column and the cells statistically tied with it (the paired 95% "
                     "interval of the difference to the best includes 0, or the runner-up has no data to test): "
                     "no cell is shown to be better than these, so none is bold.")
    return notes


# -- perplexity ---------------------------------------------------------------------------------


def _column_key(column: tuple) -> tuple:
    """Unstructured before N:M, then by ratio, then by calibration length."""
    sparsity, seqlen = column
    return (":" in (sparsity or ""), parse_sparsity(sparsity).ratio if sparsity else 0.0, seqlen or 0)


def _column_order(columns: set) -> list:
    return sorted(columns, key=_column_key)


def _column_name(column) -> str:
    sparsity, seqlen = column
    shown = f"{float(sparsity) * 100:g}%" if sparsity and ":" not in sparsity else sparsity
    return f"{shown} L={seqlen}"


def perplexity_cells(records: list[dict], resamples: int = RESAMPLES) -> dict:
    """{(model, eval label): {method: {(sparsity, seqlen): Cell}}}, seeds pooled into one cell with
    its interval; the dense baseline is the method "dense" at (None, None)."""
    grouped: dict = defaultdict(lambda: defaultdict(dict))
    for (model, method, sparsity, seqlen), runs in _settings(records).items():
        for label in sorted({label for r in runs for label in (r.get("perplexity") or {})}):
            grouped[(model, label)][method][(sparsity, seqlen)] = _perplexity_cell(runs, label, resamples)
    return grouped


def _perplexity_tables(records: list[dict], reference: str | None, resamples: int) -> list[Table]:
    sources = {r["cell"]["model"]: r["cell"].get("model_source", "") for r in records}
    compare = _comparer("ppl", resamples)
    tables = []
    for (model, label), cells in sorted(perplexity_cells(records, resamples).items()):
        dense = cells.pop("dense", {}).get((None, None))
        columns = _column_order({c for by_column in cells.values() for c in by_column})
        for column in columns:
            mark_best([by_column[column] for by_column in cells.values() if column in by_column], True, compare)
        published = published_for(sources.get(model, "")) if label.startswith("wikitext2") else None
        published_columns = sorted({key[1] for key in (published or {}) if isinstance(key, tuple)})
        headers = (["method"] + [f"{_column_name(c)} ↓" for c in columns]
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
                            _notes(shown, "windows", resamples)))
        if reference and reference in cells:
            tables.append(_ratio_table(model, label, cells, dense, columns, reference, resamples))
    return tables


def _ratio_table(model, label, cells, dense, columns, reference, resamples) -> Table:
    rows = []
    for method in (["dense"] if dense is not None else []) + sorted(m for m in cells if m != reference):
        rows.append([method] + [_compared_cell(cells[reference].get(c), dense if method == "dense" else cells[method].get(c),
                                               "ppl", resamples) for c in columns])
    notes = [f"ratio: the method's perplexity divided by {reference}'s in the same column (below 1: better than "
             f"{reference})."] + _notes([c for row in rows for c in row[1:]], "windows", resamples, compared=True)
    return Table(f"{model}, {label} perplexity relative to {reference} (paired, lower is better)",
                 ["method"] + [f"{_column_name(c)} ↓" for c in columns], rows, notes)


def perplexity_tables(records: list[dict], fmt: str = "github", reference: str | None = REFERENCE, *,
                      resamples: int = RESAMPLES) -> list[tuple[str, str]]:
    """Per model and evaluation: a table with methods as rows (dense first) and (sparsity, L) as
    columns, each cell with its 95% interval, then each method's perplexity ratio to `reference`
    with its paired interval (when `reference` was run). Returns (title, rendered table) pairs."""
    _check_format(fmt)
    return [(t.title, t.render(fmt)) for t in _perplexity_tables(records, reference, resamples)]


# -- zero-shot accuracy ---------------------------------------------------------------------------


def _row_label(setting: tuple) -> str:
    _, method, sparsity, seqlen = setting
    return "dense" if method == "dense" else f"{method} {sparsity} L={seqlen}"


def _task_tables(records: list[dict], reference: str | None, resamples: int) -> list[Table]:
    settings = {s: [r for r in runs if r.get("tasks")] for s, runs in _settings(records).items()}
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
            return _accuracy_cell(runs, tasks, metric, resamples)

        grid = {s: [_perplexity_cell(mine[s], label, resamples) for label in ppl_labels]
                + [accuracy(mine[s], c) for c in accuracy_columns] for s in ordered}
        pruned = [s for s in ordered if s[1] != "dense"]
        for index in range(len(ppl_labels) + len(accuracy_columns)):
            is_ppl = index < len(ppl_labels)
            mark_best([grid[s][index] for s in pruned if grid[s][index] is not None], is_ppl,
                      _comparer("ppl" if is_ppl else "acc", resamples))
        headers = (["method"] + [f"{label} ↓" for label in ppl_labels]
                   + [f"{t} {m} ↑" if t != "mean" else "mean acc ↑" for t, m in accuracy_columns])
        rows = [[_row_label(s)] + [c if c is not None else "" for c in grid[s]] for s in ordered]
        ppl_cells = [c for s in ordered for c in grid[s][:len(ppl_labels)]]
        accuracy_cells = [c for s in ordered for c in grid[s][len(ppl_labels):]]
        notes = (_interval_notes(accuracy_cells, "items", resamples)
                 + [f"perplexity columns, {n}" for n in _interval_notes(ppl_cells, "windows", resamples)]
                 + _mark_notes(ppl_cells + accuracy_cells))
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
    notes += _notes([c for row in rows for c in row[1:]], "items", resamples, compared=True)
    return [Table(f"{model}, zero-shot accuracy minus {reference}'s (paired, points, higher is better)",
                  ["method"] + [f"{t} {m} ↑" if t != "mean" else "mean acc ↑" for t, m in columns], rows, notes)]


def task_tables(records: list[dict], fmt: str = "github", reference: str | None = REFERENCE, *,
                resamples: int = RESAMPLES) -> list[tuple[str, str]]:
    """Zero-shot accuracy beside perplexity, one table per model with a row per method and setting,
    each cell with its 95% interval; then accuracy differences to `reference` with paired intervals."""
    _check_format(fmt)
    return [(t.title, t.render(fmt)) for t in _task_tables(records, reference, resamples)]


# -- pruning time ---------------------------------------------------------------------------------

TIMING_PARTS = (("calibration_forward", "calibration forward"), ("score_mask", "score + mask"),
                ("weight_update", "weight update"))


def _contended(record: dict) -> bool:
    load = record.get("load") or {}
    return bool(record.get("contended", load.get("contended", False)))


def _load_text(runs: list[dict], key: str, percent: bool) -> str:
    """`start→end` of one load reading per seed, e.g. `0.8→3.1`, or "" when not recorded."""
    shown = []
    for record in runs:
        load = record.get("load") or {}
        ends = [(load.get(point) or {}).get(key) for point in ("start", "end")]
        if any(e is not None for e in ends):
            shown.append("→".join("?" if e is None else (f"{e * 100:.0f}%" if percent else f"{e:.2f}") for e in ends))
    return ", ".join(shown)


def _timing_tables(records: list[dict]) -> list[Table]:
    timed = {s: [r for r in runs if "timings" in r] for s, runs in _settings(records).items()}
    timed = {s: runs for s, runs in timed.items() if runs}
    if not timed:
        return []

    def seconds(runs, key):
        values = [r["timings"].get(key) for r in runs]
        if any(v is None for v in values):
            return ""
        value, std = _spread(values)
        return Cell(value, std, seeds=_seeds(runs), flag=CONTENDED if any(map(_contended, runs)) else "")

    # Totals: methods by settings; the fastest uncontended cell of a column is bold.
    methods = sorted({(s[0], s[1]) for s in timed})
    columns = _column_order({(s[2], s[3]) for s in timed})
    totals = {(model, method): {(s[2], s[3]): seconds(runs, "total") for s, runs in timed.items()
                                if (s[0], s[1]) == (model, method)} for model, method in methods}
    for column in columns:
        candidates = [by_column[column] for by_column in totals.values()
                      if column in by_column and by_column[column] and not by_column[column].flag]
        if candidates:
            min(candidates, key=lambda c: c.value).mark = BEST
    rows = [[f"{model} / {method}"] + [totals[(model, method)].get(c, "") for c in columns] for model, method in methods]
    notes = ["**bold**: the fastest uncontended timing in its column. Timings have no interval: one measurement "
             "per seed (± std over seeds where there are several)."]
    contended = any(c.flag for row in rows for c in row[1:] if isinstance(c, Cell))
    if contended:
        notes.append("*: measured while other work loaded the machine (see the load columns below); never bold.")
    tables = [Table("Pruning time, seconds (lower is better)", ["model / method"] + [f"{_column_name(c)} s ↓" for c in columns],
                    rows, notes)]

    # Parts: what each setting spent where; "other" is the rest of the total, so the parts add up.
    has_load = any(r.get("load") for runs in timed.values() for r in runs)
    headers = ["model / method / setting"] + [name for _, name in TIMING_PARTS] + ["other", "total"]
    headers += ["load avg (start→end)", "busy CPU (start→end)"] if has_load else []
    rows = []
    for setting in sorted(timed, key=lambda s: (s[0], s[1], _column_key((s[2], s[3])))):
        runs = timed[setting]
        parts = [seconds(runs, key) for key, _ in TIMING_PARTS]
        total = seconds(runs, "total")
        other = ""
        if total and all(parts):
            rest = [r["timings"]["total"] - sum(r["timings"][key] for key, _ in TIMING_PARTS) for r in runs]
            other = Cell(*_spread(rest))
        for part in parts:
            if part:
                part.flag = ""  # the contention mark sits on the total alone
        row = [f"{setting[0]} / {setting[1]} / {_column_name((setting[2], setting[3]))}"] + parts + [other, total]
        if has_load:
            row += [_load_text(runs, "loadavg1", False), _load_text(runs, "busy_cpu_share", True)]
        rows.append(row)
    notes = ["other: the total minus the named parts (what the parts leave out), so each row adds up to its total."]
    if contended:
        notes.append("*: measured while other work loaded the machine.")
    tables.append(Table("Pruning time by part, seconds", headers, rows, notes))
    return tables


def timing_tables(records: list[dict], fmt: str = "github") -> list[tuple[str, str]]:
    """Total pruning seconds per method and setting (contended timings marked, never bold), then each
    setting's time by part with the remainder as "other" and the machine load when recorded."""
    _check_format(fmt)
    return [(t.title, t.render(fmt)) for t in _timing_tables(records)]


# -- the report -----------------------------------------------------------------------------------


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"Unknown format '{fmt}'. Use one of: {', '.join(FORMATS)}.")


def report_tables(records: list[dict], reference: str | None = REFERENCE, *, resamples: int = RESAMPLES) -> list[Table]:
    """Every table of a report, unrendered (cells keep their marks): perplexity, zero-shot accuracy,
    pruning time. The HTML report renders these same objects."""
    return (_perplexity_tables(records, reference, resamples) + _task_tables(records, reference, resamples)
            + _timing_tables(records))


def write_report(results_dir: "str | Path", fmt: str = "github", out: "str | Path | None" = None,
                 reference: str | None = REFERENCE, *, resamples: int = RESAMPLES) -> str:
    """Render every table (written to `out`, default results_dir/report) and draw the plots;
    returns the text. `reference` is the method the paired comparisons are made against."""
    _check_format(fmt)
    records = ResultsStore(results_dir).records()
    if not records:
        raise UsageError(f"No results in {results_dir}; run 'prunebench run' first.")
    out = Path(out) if out else Path(results_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    tables = report_tables(records, reference, resamples=resamples)
    if fmt == "csv":
        # CSV has no room for footnotes: the reading guide and every table's notes go beside the files.
        notes = [HOW_TO_READ]
        for index, table in enumerate(tables):
            (out / f"table-{index + 1}.csv").write_text(table.render(fmt))
            notes.append(f"table-{index + 1}.csv: {table.title}\n\n" + "".join(f"- {n}\n" for n in table.notes))
        (out / "notes.md").write_text("\n".join(notes))
        text = "\n".join(f"# {table.title}\n{table.render(fmt)}" for table in tables)
    else:
        guide = HOW_TO_READ if fmt == "github" else _latex_guide()
        text = guide + "\n" + "\n\n".join(f"{table.title}\n\n{table.render(fmt)}" for table in tables) + "\n"
        (out / f"tables.{'md' if fmt == 'github' else 'tex'}").write_text(text)
    from prunebench.plots import write_plots

    write_plots(records, out)
    return text


def _latex_guide() -> str:
    title, _, body = HOW_TO_READ.replace("`", "").partition("\n\n- ")
    items = "".join(f"  \\item {latex_text(' '.join(item.split()))}\n" for item in body.split("\n- "))
    return f"\\paragraph{{{title}}}\n\\begin{{itemize}}\n{items}\\end{{itemize}}\n"
