"""Paper-style tables from a results directory, each number with its uncertainty: every registered
metric's tables (`Metric.tables`: perplexity and zero-shot accuracy with 95% intervals and paired
comparisons to a reference method, size, memory, speed), then pruning time."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from prunebench.errors import UsageError
from prunebench.sparsity import parse_sparsity
from prunebench.store import ResultsStore
from prunebench.tablecells import BEST, CONTENDED, DAGGER, SIGNIFICANT, TIED, Cell, Table, latex_text
from prunebench.uncertainty import RESAMPLES

FORMATS = ("github", "latex", "csv")
REFERENCE = "wanda"
FINISHED = ("ok", "diverged")

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
    """Every table of a report, unrendered (cells keep their marks): each registered metric's tables in
    registration order, then pruning time, for the unstructured cells; then the structured cells' own
    tables, so that no ranking mixes the two. The HTML report renders these same objects."""
    from prunebench.metrics import registered_metrics
    from prunebench.structured_tables import structured_tables

    unstructured = unstructured_records(records)
    tables = []
    if any(r["cell"]["method"] != "dense" for r in unstructured) or len(unstructured) == len(records):
        tables = [table for metric in registered_metrics() for table in metric.tables(unstructured, reference, resamples)
                  ] + _timing_tables(unstructured)
    return tables + structured_tables(records, resamples)


def unstructured_records(records: list[dict]) -> list[dict]:
    """The records of dense and unstructured cells (what every table and plot but the structured ones show)."""
    from prunebench.structured_cells import is_structured_record

    return [r for r in records if not is_structured_record(r)]


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


def __getattr__(name: str):
    """The built-in quality metrics' table functions, still importable from here (they moved to their plugin)."""
    if name in ("perplexity_cells", "perplexity_tables", "task_tables", "published_for", "PUBLISHED"):
        from prunebench import quality_tables

        return getattr(quality_tables, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
