"""`prunebench report DIR --format html`: a self-contained static site (index.html, a page per cell,
the plots as SVG, a small stylesheet and script) built from the same tables as the other formats."""
from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path

from prunebench.errors import UsageError
from prunebench.html_markup import esc, header_html, inline, number_cell, page, table_html
from prunebench.html_record import page_path, record_page, short_label
from prunebench.metrics import registered_metrics
from prunebench.report import HOW_TO_READ, REFERENCE, report_tables
from prunebench.store import ResultsStore
from prunebench.uncertainty import RESAMPLES

ASSETS = ("report.css", "report.js")


def write_site(results_dir: "str | Path", out: "str | Path | None" = None, reference: str | None = REFERENCE, *,
               resamples: int = RESAMPLES, grid: str = "benchmarks.yaml") -> Path:
    """Write the site into `out` (default RESULTS_DIR/report/site) and return its index.html. The same
    records give the same bytes: nothing in it depends on the time, the machine or the output path."""
    records = ResultsStore(results_dir).records()
    if not records:
        raise UsageError(f"No results in {results_dir}; run 'prunebench run' first.")
    out = Path(out) if out else Path(results_dir) / "report" / "site"
    written = set()
    for name in ASSETS:
        written.add(_write(out / "assets" / name, resources.files("prunebench").joinpath("report_assets", name).read_text()))
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
    from prunebench.plots import write_plots

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
    sections.append(("runs", "Every cell (a page each)", _runs(records, methods)))
    contents = "".join(f'<li><a href="#{sid}">{esc(heading)}</a></li>' for sid, heading, _ in sections)
    body = [f"<header><h1>{esc(title)}</h1><p>{_summary(records)}</p></header>",
            f'<nav class="contents" aria-label="contents"><ul>{contents}</ul></nav>',
            _filters(methods), "<main>", _guide()]
    body += [f'<section id="{sid}"><h2>{esc(heading)}</h2>\n{content}</section>' for sid, heading, content in sections]
    body += ["</main>", "<footer><p>Written by <code>prunebench report DIR --format html</code>; open it straight "
             "from disk, no server needed.</p></footer>"]
    return page(title, "\n".join(body))


def _summary(records: list[dict]) -> str:
    statuses = Counter(record.get("status", "unknown") for record in records)
    models = sorted({str(r.get("cell", {}).get("model")) for r in records})
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    phrases = [phrase for metric in registered_metrics() if (phrase := metric.summary(records))]
    return f"{len(records)} cells ({esc(counts)}); models: {esc(', '.join(models))}" + "".join(
        f"; {esc(phrase)}" for phrase in phrases) + "."


def _filters(methods: set[str]) -> str:
    options = "".join(f'<option value="{esc(m)}">{esc(m)}</option>' for m in sorted(methods))
    return ('<div class="filters" role="search">'
            f'<label>Method <select id="method-filter"><option value="">all methods</option>{options}</select></label>'
            '<label>Rows containing <input id="text-filter" type="search" placeholder="e.g. 2:4 or L=128"></label>'
            '<span id="filter-status" aria-live="polite"></span></div>'
            '<p class="hint">Click a column header to sort it, best first; click again to reverse. Filtering by '
            "method keeps the dense row as the baseline.</p>")


def _guide() -> str:
    heading, _, body = HOW_TO_READ.partition("\n\n")
    items = "".join(f"<li>{inline(' '.join(item.split()))}</li>" for item in body.strip().removeprefix("- ").split("\n- "))
    return f'<details class="guide"><summary>{esc(heading)}</summary><ul>{items}</ul></details>'


def _figures(plots: list[str]) -> str:
    from prunebench.plots import plot_kinds

    kinds = plot_kinds()
    figures = []
    for name in plots:
        kind = kinds.get(name.split("_", 1)[0], "Figure")
        figures.append(f'<figure><img src="plots/{esc(name)}" alt="{esc(kind)}">'
                       f'<figcaption>{esc(kind)} (<a href="plots/{esc(name)}">{esc(name)}</a>)</figcaption></figure>')
    return '<div class="figures">' + "\n".join(figures) + "</div>"


def _runs(records: list[dict], methods: set[str]) -> str:
    """One row per record with a link to its page: the place to find any single run."""
    columns = [column for metric in registered_metrics() for column in metric.run_columns(records)]
    headers = ["cell", "status", "model", "method", "sparsity", "L", "seed"] + [h for h, _ in columns] + ["pruning s ↓"]
    head = "".join(header_html(h) for h in headers)
    rows = []
    for record in records:
        cell = record.get("cell", {})
        seconds = (record.get("timings") or {}).get("total")
        fields = [_plain(record.get("status", "")), _plain(cell.get("model")), _plain(cell.get("method")),
                  _plain(cell.get("sparsity")), number_cell(cell.get("seqlen"), decimals=0),
                  number_cell(cell.get("seed"), decimals=0)]
        fields += [_metric_cell(*read(record)) for _, read in columns]
        fields.append(number_cell(seconds))
        method = cell.get("method", "")
        link = f'<a href="{esc(page_path(record))}" title="{esc(record["name"])}">{esc(short_label(record))}</a>'
        rows.append(f'<tr data-method="{esc(method)}"><th scope="row">{link}</th>{"".join(fields)}</tr>')
    return (f'<div class="scroll"><table class="board" id="runs-data">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></div>\n")


def _metric_cell(value: float | None, diverged: bool) -> str:
    if diverged:
        return '<td data-value="Infinity">diverged</td>'
    return number_cell(value)


def _plain(value: object) -> str:
    return "<td></td>" if value is None else f"<td>{esc(value)}</td>"

