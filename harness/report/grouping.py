"""What every report table shares: finished records grouped by setting and seed, column order and names,
the output formats, and the footnotes that say what a table's cells show."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from ..api.errors import UsageError
from ..api.records import FINISHED
from ..api.sparsity import parse_sparsity
from ..api.tables import BEST, DAGGER, MIN_SEEDS, SIGNIFICANT, TIED, Cell

FORMATS = ("github", "latex", "csv")
REFERENCE = "wanda"


# -- records to cells --------------------------------------------------------------------------


class Length(int):
    """A calibration length that also carries its window count where a report's records vary the count
    at one length (`windows_vary`): it compares, hashes and prints with it ("16, 128 windows"), and
    otherwise is the length alone; arithmetic and plotting see the length."""

    windows: int

    def __new__(cls, seqlen: int, windows: int = 0):
        made = int.__new__(cls, seqlen)
        made.windows = windows
        return made

    def __eq__(self, other) -> bool:
        return int(self) == int(other) and self.windows == getattr(other, "windows", 0)

    def __hash__(self) -> int:
        return hash((int(self), self.windows))

    def __lt__(self, other) -> bool:
        return (int(self), self.windows) < (int(other), getattr(other, "windows", 0))

    def __str__(self) -> str:
        return f"{int(self)}, {self.windows} windows" if self.windows else str(int(self))

    __repr__ = __str__


def windows_vary(records: list[dict]) -> bool:
    """Whether some model is calibrated at one length with more than one window count in `records`."""
    counts = defaultdict(set)
    for record in records:
        cell = record.get("cell") or {}
        if cell.get("seqlen") is not None:
            counts[(cell.get("model"), cell["seqlen"])].add(cell.get("nsamples"))
    return any(len(found) > 1 for found in counts.values())


def setting_of(cell: dict, vary: bool) -> tuple:
    """(model, method, sparsity, length): the length a `Length`, with the window count when `vary`."""
    seqlen = cell.get("seqlen")
    length = None if seqlen is None else Length(seqlen, cell.get("nsamples") or 0 if vary else 0)
    return cell["model"], cell["method"], cell.get("sparsity"), length


def group_settings(records: list[dict]) -> dict[tuple, list[dict]]:
    """Finished records by (model, method, sparsity, length) (`setting_of`): one list per setting, its seeds
    in order."""
    grouped: dict = defaultdict(list)
    vary = windows_vary(records)
    for record in records:
        if record.get("status") in FINISHED:
            grouped[setting_of(record["cell"], vary)].append(record)
    for runs in grouped.values():
        runs.sort(key=lambda r: (r["cell"].get("seed") is None, r["cell"].get("seed") or 0))
    return grouped


def seeds_of(records: list[dict]) -> tuple:
    return tuple(r["cell"].get("seed") for r in records)


def spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and std over seeds (inf when any seed diverged; no std for one seed)."""
    if not all(math.isfinite(v) for v in values):
        return math.inf, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


# -- footnotes ----------------------------------------------------------------------------------


def table_notes(cells: list, unit: str, resamples: int, compared: bool = False) -> list[str]:
    """Footnotes for what a table's cells show: intervals, seeds, missing data, then bold and daggers."""
    return interval_notes(cells, unit, resamples, compared) + mark_notes(cells)


def interval_notes(cells: list, unit: str, resamples: int, compared: bool = False) -> list[str]:
    cells = [c for c in cells if isinstance(c, Cell) and c.finite]
    notes = []
    if any(c.has_interval for c in cells):
        if compared:
            what = "of the ratio" if unit == "windows" else "of the difference"
            notes.append(f"[low, high]: 95% interval {what}, a t interval over the calibration seeds and the same "
                         f"{unit}, crossed (prunebench.metrics.uncertainty.mean_difference_interval).")
        else:
            wilson = "; the Wilson interval for one task" if unit == "items" else ""
            notes.append(f"[low, high]: 95% interval; one calibration seed: a bootstrap over the {unit} "
                         f"({resamples} resamples, seeded){wilson}.")
    seeds = sorted({len(c.seeds) for c in cells if c.std is not None})
    if seeds:
        notes.append(f"± std over {' or '.join(map(str, seeds))} calibration seeds; the interval is a t interval over "
                     f"the seeds and the {unit}, crossed (prunebench.metrics.uncertainty.mean_interval).")
    if compared and any(c.flag == SIGNIFICANT for c in cells):
        notes.append(f"*: the interval excludes no difference (a ratio of 1, a difference of 0), with at least {MIN_SEEDS} "
                     "calibration seeds: a significant difference.")
    missing = sum(1 for c in cells if not c.has_interval)
    if missing:
        notes.append(f"no interval: {missing} cell(s) come from records without per-{unit[:-1]} data (an older "
                     "prunebench); they show no interval, are never bold, and ties with them are not tested.")
    return notes


def mark_notes(cells: list) -> list[str]:
    marks = {c.mark for c in cells if isinstance(c, Cell)}
    notes = []
    if BEST in marks:
        notes.append("**bold**: best in its column, and the paired 95% interval of its difference to the runner-up "
                     f"excludes 0 (perplexity: with at least {MIN_SEEDS} calibration seeds; fewer mark nothing).")
    if TIED in marks:
        notes.append(f"{DAGGER}: the best in its column and the cells statistically tied with it (the paired 95% "
                     "interval of the difference to the best includes 0, or the runner-up has no data to test): "
                     "no cell is shown to be better than these, so none is bold.")
    return notes


# -- perplexity ---------------------------------------------------------------------------------


def column_key(column: tuple) -> tuple:
    """Unstructured before N:M, then by ratio, then by calibration length."""
    sparsity, seqlen = column
    return (":" in (sparsity or ""), parse_sparsity(sparsity).ratio if sparsity else 0.0, seqlen or 0)


def column_order(columns: set) -> list:
    return sorted(columns, key=column_key)


def column_name(column) -> str:
    sparsity, seqlen = column
    shown = f"{float(sparsity) * 100:g}%" if sparsity and ":" not in sparsity else sparsity
    return f"{shown} L={seqlen}"


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"Unknown format '{fmt}'. Use one of: {', '.join(FORMATS)}.")
