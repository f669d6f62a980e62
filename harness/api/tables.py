"""Report tables whose cells carry their uncertainty: a value with its seed std and 95% interval,
which cells of a column are marked best (bold) or tied with the best (dagger), and how each format
(github, latex, csv) prints cells, tables and their footnotes."""
from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate


MIN_SEEDS = 3  # a seeded comparison with fewer calibration seeds gets no significance mark


@dataclass(frozen=True)
class Comparison:
    """A method against a reference: a ratio (null 1) or a difference (null 0), with its interval."""

    value: float
    low: float
    high: float
    null: float
    seeds: int | None = None  # calibration seeds behind the interval (None: not a seeded comparison)

    @property
    def enough_seeds(self) -> bool:
        """At least MIN_SEEDS calibration seeds where seeds count (fewer cannot say what calibration noise does)."""
        return self.seeds is None or self.seeds >= MIN_SEEDS

    @property
    def significant(self) -> bool:
        """The interval excludes the no-difference value, on enough seeds."""
        return self.enough_seeds and (self.low > self.null or self.high < self.null)


BEST, TIED = "best", "tied"
DAGGER = "†"
CONTENDED, SIGNIFICANT = "contended", "significant"
FLAG_SYMBOLS = {CONTENDED: "*", SIGNIFICANT: "*"}  # each table's footnote says which one it means


@dataclass
class Cell:
    """One table cell: the value (mean over seeds; inf when diverged), its spread and its marks."""

    value: float
    std: float | None = None  # over calibration seeds, when there are several
    low: float | None = None  # the 95% interval, when the records hold what it is computed from
    high: float | None = None
    seeds: tuple = ()  # the calibration seeds, in the order of the rows of `data`
    data: Any = None  # what a paired comparison of this cell needs; None: not recorded
    decimals: int = 2
    interval_decimals: int | None = None  # None: one fewer than the value's
    scale: float = 1.0  # accuracies are stored as fractions and printed in percent
    mark: str = ""  # BEST (bold) or TIED (dagger)
    flag: str = ""  # CONTENDED (a timing) or SIGNIFICANT (a comparison): a footnote symbol

    @property
    def finite(self) -> bool:
        return self.value is not None and math.isfinite(self.value)

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass
class Table:
    """A titled table in no particular format: rows of a label then cells (or plain strings)."""

    title: str
    headers: list[str]
    rows: list[list]
    notes: list[str] = field(default_factory=list)

    def render(self, fmt: str) -> str:
        """The table in `fmt`; github and latex put the footnotes under it, csv leaves them out."""
        if fmt == "csv":
            return _csv(self)
        plain = latex_text if fmt == "latex" else str
        rows = [[_text(c, fmt) if isinstance(c, Cell) else plain(c) for c in row] for row in self.rows]
        if fmt == "latex":
            table = tabulate(rows, headers=[latex_text(h) for h in self.headers], tablefmt="latex_raw", disable_numparse=True)
            notes = "".join(f"\n\\par\\noindent{{\\footnotesize {latex_text(n)}}}" for n in self.notes)
            return table + notes
        table = tabulate(rows, headers=self.headers, tablefmt="github", disable_numparse=True)
        return table + ("\n\n" + "\n".join(f"- {n}" for n in self.notes) if self.notes else "")


def mark_best(cells: list[Cell], lower_is_better: bool, compare: Callable[[Cell, Cell], Comparison | None]) -> None:
    """Bold the best finite cell only when the paired interval of its difference to the runner-up
    excludes 0; otherwise give a dagger to the best and to every cell not shown to differ from it.

    `compare(reference, method)` gives the paired comparison of two cells, or None when they cannot
    be compared (no per-window or per-item data, different windows). A lone cell is left unmarked, and
    so is every cell when the comparison rests on fewer than MIN_SEEDS calibration seeds.
    """
    ranked = sorted((c for c in cells if c.finite), key=lambda c: c.value, reverse=not lower_is_better)
    if len(ranked) < 2:
        return
    best, runner_up = ranked[0], ranked[1]

    def comparison_with(other: Cell) -> Comparison | None:
        return None if best.data is None or other.data is None else compare(other, best)

    def better(comparison: Comparison | None) -> bool | None:
        """Is `best` significantly better than the compared cell (None: cannot tell)?"""
        if comparison is None:
            return None
        return comparison.high < comparison.null if lower_is_better else comparison.low > comparison.null

    first = comparison_with(runner_up)
    if first is not None and not first.enough_seeds:
        return  # too few calibration seeds to say what is best: no marks at all
    if better(first):
        best.mark = BEST
        return
    best.mark = TIED
    for other in ranked[1:]:
        comparison = first if other is runner_up else comparison_with(other)
        if better(comparison) is False:  # a cell that cannot be tested is not called tied
            other.mark = TIED


def number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def cell_parts(cell: Cell) -> tuple[str, str, str]:
    """The value, the `± std` and the `[low, high]` texts of a finite cell, scaled."""
    # An interval's last digit matters less than the value's, unless the cell says otherwise.
    inner = cell.interval_decimals if cell.interval_decimals is not None else max(cell.decimals - 1, 1)
    std = f" ± {number(cell.std * cell.scale, inner)}" if cell.std is not None else ""
    interval = (f" [{number(cell.low * cell.scale, inner)}, {number(cell.high * cell.scale, inner)}]"
                if cell.has_interval else "")
    return number(cell.value * cell.scale, cell.decimals), std, interval


def _text(cell: Cell, fmt: str) -> str:
    if not cell.finite:
        return "diverged"
    value, std, interval = cell_parts(cell)
    if cell.mark == BEST:
        value = f"\\textbf{{{value}}}" if fmt == "latex" else f"**{value}**"
    if cell.mark == TIED:
        value += "$^\\dagger$" if fmt == "latex" else DAGGER
    if cell.flag:
        symbol = FLAG_SYMBOLS[cell.flag]
        value += f"$^{{{symbol}}}$" if fmt == "latex" else symbol
    if fmt == "latex":
        std = std.replace("±", "$\\pm$")
    return value + std + interval


def _csv(table: Table) -> str:
    """Cells become value, low, high, std and mark columns; the arrows leave the headers."""
    cell_columns = {i for row in table.rows for i, c in enumerate(row) if isinstance(c, Cell)}
    headers = []
    for i, header in enumerate(table.headers):
        name = header.replace(" ↓", "").replace(" ↑", "")
        headers += [name] + ([f"{name} low", f"{name} high", f"{name} std", f"{name} mark"] if i in cell_columns else [])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    for row in table.rows:
        fields = []
        for i, cell in enumerate(row):
            if i not in cell_columns:
                fields.append(cell)
            elif not isinstance(cell, Cell):
                fields += [cell, "", "", "", ""]
            elif not cell.finite:
                fields += ["diverged", "", "", "", ""]
            else:
                scaled = [None if x is None else round(x * cell.scale, 6) for x in (cell.value, cell.low, cell.high, cell.std)]
                mark = ";".join(m for m in (cell.mark, cell.flag) if m)
                fields += ["" if x is None else x for x in scaled] + [mark]
        writer.writerow(fields)
    return buffer.getvalue()


def latex_text(text: str) -> str:
    """Plain or lightly marked-up (**bold**) text for LaTeX."""
    text = text.replace("\\", "\\textbackslash{}").replace("%", "\\%").replace("_", "\\_").replace("&", "\\&")
    text = text.replace("↓", "$\\downarrow$").replace("↑", "$\\uparrow$").replace("±", "$\\pm$")
    text = text.replace(DAGGER, "$^\\dagger$").replace("→", "$\\to$").replace("≥", "$\\geq$")
    return re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", text)
