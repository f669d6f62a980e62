"""Paper-style tables from a results directory, each number with its uncertainty: every registered
metric's tables (`Metric.tables`: perplexity and zero-shot accuracy with 95% intervals and paired
comparisons to a reference method, size, memory, speed), then pruning time."""
from __future__ import annotations

from pathlib import Path

from ..api.errors import UsageError
from ..api.metric import Metric
from ..api.records import run_contended, unstructured_records, with_reading_names
from ..api.tables import BEST, CONTENDED, DAGGER, Cell, Table, latex_text
from ..metrics.run import registered_metrics
from ..metrics.uncertainty import RESAMPLES
from ..store.results import ResultsStore
from . import quality_tables
from .generic import generic_tables
from .grouping import REFERENCE, check_format, column_key, column_name, column_order, group_settings, seeds_of, spread
from .plots import write_plots
from .structured_tables import structured_tables

HOW_TO_READ = f"""\
How to read these tables

- `89.68 [87.1, 92.3]`: a value with its 95% interval; one calibration seed: a seeded bootstrap ({RESAMPLES}
  resamples) over the evaluation windows (perplexity) or the task's items (accuracy; the Wilson interval for one task).
- `89.68 ± 1.20 [85.9, 93.4]`: with several calibration seeds, the mean and standard deviation over seeds, and a t
  interval over the seeds and the windows (items), crossed, which holds its coverage with three seeds
  (prunebench.metrics.uncertainty.mean_interval).
- **Bold**: best in its column, and the paired 95% interval of its difference to the runner-up (both evaluated on
  the same windows or items) excludes 0. When it does not, there is no bold: the best and every cell statistically
  tied with it carry a dagger {DAGGER}.
- Ratio and difference tables compare each method with a reference method in the same setting, with the paired
  95% interval: a t interval over calibration seeds and windows (items), crossed, the same for a perplexity ratio
  and an accuracy difference (prunebench.metrics.uncertainty.mean_difference_interval); * marks a comparison whose
  interval excludes no difference (a ratio of 1, a difference of 0). With fewer than 3 calibration seeds a
  comparison marks nothing: no *, no bold, no dagger.
- "no interval" (a footnote): the record lacks per-window NLLs or per-item correctness (an older prunebench),
  so its cells show no interval, are never bold, and ties with them are not tested.
- Timings are single measurements without an interval; * marks one taken while other work loaded the machine,
  which is never bold as fastest.
"""


# -- pruning time ---------------------------------------------------------------------------------

TIMING_PARTS = (("calibration_forward", "calibration forward"), ("score_mask", "score + mask"),
                ("weight_update", "weight update"))


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
    timed = {s: [r for r in runs if "timings" in r] for s, runs in group_settings(records).items()}
    timed = {s: runs for s, runs in timed.items() if runs}
    if not timed:
        return []

    def seconds(runs, key):
        values = [r["timings"].get(key) for r in runs]
        if any(v is None for v in values):
            return ""
        value, std = spread(values)
        return Cell(value, std, seeds=seeds_of(runs), flag=CONTENDED if any(map(run_contended, runs)) else "")

    # Totals: methods by settings; the fastest uncontended cell of a column is bold.
    methods = sorted({(s[0], s[1]) for s in timed})
    columns = column_order({(s[2], s[3]) for s in timed})
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
    tables = [Table("Pruning time, seconds (lower is better)", ["model / method"] + [f"{column_name(c)} s ↓" for c in columns],
                    rows, notes)]

    # Parts: what each setting spent where; "other" is the rest of the total, so the parts add up.
    has_load = any(r.get("load") for runs in timed.values() for r in runs)
    headers = ["model / method / setting"] + [name for _, name in TIMING_PARTS] + ["other", "total"]
    headers += ["load avg (start→end)", "busy CPU (start→end)"] if has_load else []
    rows = []
    for setting in sorted(timed, key=lambda s: (s[0], s[1], column_key((s[2], s[3])))):
        runs = timed[setting]
        parts = [seconds(runs, key) for key, _ in TIMING_PARTS]
        total = seconds(runs, "total")
        other = ""
        if total and all(parts):
            rest = [r["timings"]["total"] - sum(r["timings"][key] for key, _ in TIMING_PARTS) for r in runs]
            other = Cell(*spread(rest))
        for part in parts:
            if part:
                part.flag = ""  # the contention mark sits on the total alone
        row = [f"{setting[0]} / {setting[1]} / {column_name((setting[2], setting[3]))}"] + parts + [other, total]
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
    check_format(fmt)
    return [(t.title, t.render(fmt)) for t in _timing_tables(records)]


# -- the report -----------------------------------------------------------------------------------


def report_tables(records: list[dict], reference: str | None = REFERENCE, *, resamples: int = RESAMPLES) -> list[Table]:
    """Every table of a report, unrendered (cells keep their marks): each registered metric's tables in
    registration order, then pruning time, for the unstructured cells; then the structured cells' own
    tables, so that no ranking mixes the two. The HTML report renders these same objects. A renamed
    reading's old records show its present name (`with_reading_names`, idempotent)."""
    records = with_reading_names(records)
    unstructured = unstructured_records(records)
    tables = []
    if any(r["cell"]["method"] != "dense" for r in unstructured) or len(unstructured) == len(records):
        tables = [table for metric in registered_metrics() for table in metric_tables(metric, unstructured, reference,
                                                                                     resamples)] + _timing_tables(unstructured)
    return tables + structured_tables(records, resamples)


def metric_tables(metric: Metric, records: list[dict], reference: str | None, resamples: int) -> list[Table]:
    """A metric's tables: its own (`Metric.tables`), else those of its `table_style`."""
    own = metric.tables(records, reference, resamples)
    if own is not None:
        return own
    if metric.table_style == "perplexity":
        return quality_tables.perplexity_report_tables(records, reference, resamples)
    if metric.table_style == "accuracy":
        return quality_tables.task_report_tables(records, reference, resamples)
    return generic_tables(metric, records)


def write_report(results_dir: "str | Path", fmt: str = "github", out: "str | Path | None" = None,
                 reference: str | None = REFERENCE, *, resamples: int = RESAMPLES) -> str:
    """Render every table (written to `out`, default results_dir/report) and draw the plots;
    returns the text. `reference` is the method the paired comparisons are made against."""
    check_format(fmt)
    records = with_reading_names(ResultsStore(results_dir).records())
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

    write_plots(records, out)
    return text


def _latex_guide() -> str:
    title, _, body = HOW_TO_READ.replace("`", "").partition("\n\n- ")
    items = "".join(f"  \\item {latex_text(' '.join(item.split()))}\n" for item in body.split("\n- "))
    return f"\\paragraph{{{title}}}\n\\begin{{itemize}}\n{items}\\end{{itemize}}\n"


