"""HTML building blocks of the static report: escaping, the page shell, and report tables whose cells
keep their marks, intervals and sort keys (the same `Table` and `Cell` objects the other formats print)."""
from __future__ import annotations

import html
import json
import math
import re

from ..api.tables import BEST, DAGGER, FLAG_SYMBOLS, TIED, Cell, Table, cell_parts

MARK_TITLES = {BEST: "best in its column, significantly better than the runner-up",
               TIED: "best or statistically tied with the best"}
ARROWS = {"↓": "lower", "↑": "higher"}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def inline(text: str) -> str:
    """Footnote text with the tables' light markup (**bold**, `code`) as HTML."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", esc(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def page(title: str, body: str, root: str = "") -> str:
    """A whole page; `root` is the way back to the site's top folder (for the shared assets)."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            f'<link rel="stylesheet" href="{root}assets/report.css">\n'
            f'<script src="{root}assets/report.js" defer></script>\n</head>\n<body>\n{body}\n</body>\n</html>\n')


def sort_value(value: float | None) -> str:
    """A number as the page's sort key: diverged (non-finite) sorts after every finite value."""
    if value is None or not math.isfinite(value):
        return "Infinity"
    return format(value, ".12g")


def number_cell(value: float | None, text: str | None = None, decimals: int = 2) -> str:
    """A `<td>` holding a number (shown as `text`, default the value with `decimals`), with its sort key."""
    if value is None:
        return "<td></td>"
    return f'<td data-value="{sort_value(value)}">{esc(text if text is not None else f"{value:.{decimals}f}")}</td>'


def _plain_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def cell_html(cell: "Cell | str") -> str:
    """A `<td>`: the value, its mark (bold, dagger, flag), std and interval, with a numeric sort key."""
    if not isinstance(cell, Cell):
        text = str(cell)
        number = math.inf if text == "diverged" else _plain_number(text)
        key = f' data-value="{sort_value(number)}"' if number is not None else ""
        return f"<td{key}>{esc(text)}</td>"
    if not cell.finite:
        return '<td data-value="Infinity" class="diverged">diverged</td>'
    value, std, interval = cell_parts(cell)
    shown = f"<strong>{value}</strong>" if cell.mark == BEST else value
    if cell.mark == TIED:
        shown += f'<span class="mark" title="{esc(MARK_TITLES[TIED])}">{DAGGER}</span>'
    if cell.flag:
        shown += f'<span class="mark">{esc(FLAG_SYMBOLS[cell.flag])}</span>'
    extra = (f'<span class="std">{esc(std)}</span>' if std else "") + (
        f'<span class="interval">{esc(interval.strip())}</span>' if interval else "")
    classes = f' class="{cell.mark}"' if cell.mark else ""
    title = f' title="{esc(MARK_TITLES[cell.mark])}"' if cell.mark else ""
    return f'<td data-value="{sort_value(cell.value * cell.scale)}"{classes}{title}>{shown}{extra}</td>'


def header_html(header: str) -> str:
    """A sortable column header; its arrow (↓ lower / ↑ higher is better) picks the first sort direction."""
    name, _, arrow = header.rpartition(" ")
    better = ARROWS.get(arrow)
    if better is None:
        name, arrow = header, ""
    attributes = f' data-better="{better}" title="{better} is better"' if better else ""
    shown = esc(name) + (f' <span class="arrow">{arrow}</span>' if arrow else "")
    return f'<th scope="col"{attributes} aria-sort="none"><button type="button">{shown}</button></th>'


def row_method(label: str, methods: set[str]) -> str:
    """The method a row is about, read from its label ("wanda", "wanda 0.5 L=16", "model / wanda / ...")."""
    for part in re.split(r" / | ", label):
        if part in methods or part == "dense":
            return part
    return ""


def table_html(table: Table, methods: set[str], table_id: str) -> str:
    """A report table as a sortable, filterable HTML table with its footnotes."""
    head = "".join(header_html(h) for h in table.headers)
    rows = []
    for row in table.rows:
        label = str(row[0])
        method = row_method(label, methods)
        attribute = f' data-method="{esc(method)}"' if method else ""
        rows.append(f'<tr{attribute}><th scope="row">{esc(label)}</th>{"".join(cell_html(c) for c in row[1:])}</tr>')
    notes = "".join(f"<li>{inline(n)}</li>" for n in table.notes)
    return (f'<div class="scroll"><table class="board" id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></div>\n" + (f'<ul class="notes">{notes}</ul>\n' if notes else ""))


def value_html(value: object) -> str:
    """Any record value, readably: nested mappings as definition lists, short lists inline, else JSON."""
    if isinstance(value, dict):
        if not value:
            return "<span class=\"muted\">none</span>"
        items = "".join(f"<dt>{esc(k)}</dt><dd>{value_html(v)}</dd>" for k, v in value.items())
        return f"<dl>{items}</dl>"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return esc(", ".join("null" if v is None else str(v) for v in value)) or '<span class="muted">none</span>'
    if isinstance(value, (dict, list)):
        return f"<pre>{esc(json.dumps(value, indent=2))}</pre>"
    return esc("null" if value is None else value)
