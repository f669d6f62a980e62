"""`prunebench report DIR --format html`: a self-contained static site (index.html, a page per cell,
the plots as SVG, a small stylesheet and script) built from the same tables as the other formats.
Structured cells (whole heads, channels or layers removed) are listed in tables of their own, never
sorted in with masked (unstructured) cells."""
from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path

from ..api.errors import UsageError
from ..api.records import DENSE, STRUCTURED, UNSTRUCTURED, parameters_kept, with_reading_names
from ..metrics.run import registered_metrics
from ..metrics.uncertainty import RESAMPLES
from ..store.leaderboard import record_kind
from ..store.results import ResultsStore, safe_name
from .grouping import REFERENCE
from .html_markup import esc, header_html, inline, number_cell, page, table_html
from .html_record import page_path, record_page, short_label
from .plots import plot_kinds, write_plots
from .tables import HOW_TO_READ, report_tables

ASSETS = ("report.css", "report.js")
# Metrics left out of the structured cells' list: size measures how a checkpoint stores zeros, and a
# structured model has none (its share of parameters kept is the list's own column), as in the report's tables.
NOT_FOR_STRUCTURED = ("size",)


def write_site(results_dir: "str | Path", out: "str | Path | None" = None, reference: str | None = REFERENCE, *,
               resamples: int = RESAMPLES, grid: str = "benchmarks.yaml") -> Path:
    """Write the site into `out` (default RESULTS_DIR/report/site) and return its index.html. The same
    records give the same bytes: nothing in it depends on the time, the machine or the output path."""
    records = with_reading_names(ResultsStore(results_dir).records())
    if not records:
        raise UsageError(f"No results in {results_dir}; run 'prunebench run' first.")
    out = Path(out) if out else Path(results_dir) / "report" / "site"
    written = set()
    for name in ASSETS:
        written.add(_write(out / "assets" / name, resources.files("prunebench.report").joinpath("assets", name).read_text()))
    plots = _write_plots(records, out / "plots", resamples)
    written.update(plots)
    for record in records:
        written.add(_write(out / page_path(record), record_page(record, grid, resamples)))
    index = _write(out / "index.html", _index(records, reference, resamples, [p.name for p in plots]))
    written.add(index)
    for folder in ("assets", "plots", "cells"):  # pages of cells that are gone, plots no longer drawn
        for stale in sorted((out / folder).glob("*")):
            if stale.is_file() and stale not in written:
                stale.unlink()
    return index


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def _write_plots(records: list[dict], folder: Path, resamples: int) -> list[Path]:
    """The report's figures, SVG only (the PNGs are for Markdown readers)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        drawn = sorted(p for p in write_plots(records, scratch, resamples) if p.suffix == ".svg")
        return [Path(shutil.copyfile(p, folder / p.name)) for p in drawn]


def _index(records: list[dict], reference: str | None, resamples: int, plots: list[str]) -> str:
    tables = report_tables(records, reference, resamples=resamples)
    methods = {r["cell"]["method"] for r in records if r.get("cell", {}).get("sparsity") is not None}
    suites = sorted({str(r.get("cell", {}).get("suite")) for r in records if r.get("cell", {}).get("suite")})
    title = f"prunebench leaderboard: {', '.join(suites) or 'results'}"
    sections = [(f"table-{i + 1}", t.title, table_html(t, methods, f"table-{i + 1}-data")) for i, t in enumerate(tables)]
    if plots:
        sections.append(("figures", "Figures", _figures(plots)))
    kinds = [record_kind(r) for r in records]
    if STRUCTURED in kinds:  # the unstructured cells' list, then a structured one per model; dense heads each
        sections.append(("runs", "Every unstructured cell (a page each)",
                         _runs([r for r, k in zip(records, kinds) if k != STRUCTURED], "runs-data")))
        for model in sorted({r["cell"]["model"] for r, k in zip(records, kinds) if k == STRUCTURED}):
            chosen = [r for r, k in zip(records, kinds) if k != UNSTRUCTURED and r["cell"]["model"] == model]
            sections.append((f"structured-runs-{safe_name(model)}", f"{model}: every structured cell (a page each)",
                             _runs(chosen, f"structured-runs-{safe_name(model)}-data", structured=True)))
    else:
        sections.append(("runs", "Every cell (a page each)", _runs(records, "runs-data")))
    contents = "".join(f'<li><a href="#{sid}">{esc(heading)}</a></li>' for sid, heading, _ in sections)
    body = [f"<header><h1>{esc(title)}</h1><p>{_summary(records)}</p></header>",
            f'<nav class="contents" aria-label="contents"><ul>{contents}</ul></nav>',
            _filters(methods, STRUCTURED in kinds), "<main>", _guide()]
    body += [f'<section id="{sid}"><h2>{esc(heading)}</h2>\n{content}</section>' for sid, heading, content in sections]
    body += ["</main>", "<footer><p>Written by <code>prunebench report DIR --format html</code>; open it straight "
             "from disk, no server needed.</p></footer>"]
    return page(title, "\n".join(body))


def _summary(records: list[dict]) -> str:
    statuses = Counter(record.get("status", "unknown") for record in records)
    models = sorted({str(r.get("cell", {}).get("model")) for r in records})
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    phrases = [phrase for metric in registered_metrics() if (phrase := metric.summary(records))]
    structured = sum(record_kind(record) == STRUCTURED for record in records)
    if structured:
        phrases.insert(0, f"{structured} of them structured (whole heads, channels or layers removed), in tables of "
                          "their own")
    return f"{len(records)} cells ({esc(counts)}); models: {esc(', '.join(models))}" + "".join(
        f"; {esc(phrase)}" for phrase in phrases) + "."


def _filters(methods: set[str], structured: bool) -> str:
    options = "".join(f'<option value="{esc(m)}">{esc(m)}</option>' for m in sorted(methods))
    return ('<div class="filters" role="search">'
            f'<label>Method <select id="method-filter"><option value="">all methods</option>{options}</select></label>'
            '<label>Rows containing <input id="text-filter" type="search" placeholder="e.g. 2:4 or L=128"></label>'
            '<span id="filter-status" aria-live="polite"></span></div>'
            '<p class="hint">Click a column header to sort it, best first; click again to reverse. Filtering by '
            "method keeps the dense row as the baseline."
            + (" Structured cells (whole heads, channels or layers removed) have tables of their own: a structured "
               "50% removes half the prunable parameters, an unstructured 50% masks half the weights to zero, "
               "and the two are never ranked together." if structured else "") + "</p>")


def _guide() -> str:
    heading, _, body = HOW_TO_READ.partition("\n\n")
    items = "".join(f"<li>{inline(' '.join(item.split()))}</li>" for item in body.strip().removeprefix("- ").split("\n- "))
    return f'<details class="guide"><summary>{esc(heading)}</summary><ul>{items}</ul></details>'


def _figures(plots: list[str]) -> str:
    kinds = plot_kinds()
    figures = []
    for name in plots:
        kind = kinds.get(name.split("_", 1)[0], "Figure")
        figures.append(f'<figure><img src="plots/{esc(name)}" alt="{esc(kind)}">'
                       f'<figcaption>{esc(kind)} (<a href="plots/{esc(name)}">{esc(name)}</a>)</figcaption></figure>')
    return '<div class="figures">' + "\n".join(figures) + "</div>"


def _runs(records: list[dict], table_id: str, structured: bool = False) -> str:
    """One row per record with a link to its page: the place to find any single run. The structured
    cells' list shows the share of parameters each kept instead of size's checkpoint bytes."""
    columns = [column for metric in registered_metrics() if not (structured and metric.name in NOT_FOR_STRUCTURED)
               for column in metric.run_columns(records)]
    if structured:
        columns.insert(0, _parameters_kept(records))
    # A structured list is one model's: no model column, so it fits a laptop screen as the other list does.
    shown = ["status", "method", "sparsity", "seqlen", "seed"] if structured else \
        ["status", "model", "method", "sparsity", "seqlen", "seed"]
    names = {"sparsity": "target" if structured else "sparsity", "seqlen": "L"}
    headers = ["cell"] + [names.get(key, key) for key in shown] + [h for h, _ in columns] + ["pruning s ↓"]
    head = "".join(header_html(h) for h in headers)
    rows = []
    for record in records:
        cell = dict(record.get("cell", {}), status=record.get("status", ""))
        seconds = (record.get("timings") or {}).get("total")
        fields = [number_cell(cell.get(key), decimals=0) if key in ("seqlen", "seed") else _plain(cell.get(key))
                  for key in shown]
        fields += [_metric_cell(*read(record)) for _, read in columns]
        fields.append(number_cell(seconds))
        method = cell.get("method", "")
        link = f'<a href="{esc(page_path(record))}" title="{esc(record["name"])}">{esc(short_label(record))}</a>'
        rows.append(f'<tr data-method="{esc(method)}"><th scope="row">{link}</th>{"".join(fields)}</tr>')
    return (f'<div class="scroll"><table class="board" id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></div>\n")


def _parameters_kept(records: list[dict]):
    """The structured cells' list's column in place of size's: the share of the dense model's parameters a
    cell's model has (the per-model structured tables and the cell pages say what was removed); the dense
    row: 100, where its model has structured cells to count the parameters."""
    counted = {r["cell"]["model"] for r in records if parameters_kept(r) is not None}

    def read(record: dict) -> tuple[float | None, bool]:
        cell = record.get("cell", {})
        if cell.get("method") == DENSE:
            return (100.0 if cell.get("model") in counted else None), False
        kept = parameters_kept(record)
        return (None if kept is None else kept * 100), False

    return "params kept %", read


def _metric_cell(value: float | None, diverged: bool) -> str:
    if diverged:
        return '<td data-value="Infinity">diverged</td>'
    return number_cell(value)


def _plain(value: object) -> str:
    return "<td></td>" if value is None else f"<td>{esc(value)}</td>"

