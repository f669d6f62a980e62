"""Do the papers' claims hold here? A claims file names, for each headline claim of a paper, the two
sets of cells it compares (a: the claim's method, b: what it is said to beat), the measure and the
direction the paper reports; the table gives our measurement with its interval and seeds and a verdict
from the harness's statistics (prunebench.metrics.uncertainty):

- perplexity: a / b perplexity ratio, the crossed seeds x windows t interval (`perplexity_ratio`;
  seeds paired when both sides share the calibration shape, so the same calibration sets);
- accuracy: a - b accuracy in points (`accuracy_difference`, the same interval on items);
- pruning-seconds: a / b pruning time, exp of Welch's t interval on the per-seed log seconds (one
  measurement a seed; a timing taken on a loaded machine is said so in the row).

Verdicts: "holds" when the interval lies on the paper's side of no difference, "does not hold" when it
lies on the other, "not shown to differ" when it spans it or rests on fewer than 3 seeds (the smaller
side's count; a method that reads no calibration, magnitude, is complete with one);
"pending" while a side has no finished cell; "not testable here" for a claim the file says we cannot
test, with its reason. A claim of "matches or beats" (`expect: not-worse`) holds only when shown
better; an interval that spans no difference is reported as not shown to differ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .. import registry
from ..api.errors import UsageError
from ..api.records import FINISHED
from ..api.tables import MIN_SEEDS, Table
from ..metrics.uncertainty import accuracy_difference, perplexity_ratio, seconds_ratio

MEASURES = ("perplexity", "accuracy", "pruning-seconds")
EXPECTS = ("lower", "higher", "not-worse")
SIDE_KEYS = ("model", "method", "sparsity", "calib")
CLAIM_KEYS = {"id", "paper", "source", "claim", "paper_number", "measure", "expect", "a", "b", "setting", "untestable"}
TITLE = "Do the papers' claims hold here?"


@dataclass(frozen=True)
class Side:
    """The cells of one side of a claim: every seed of one model, method label, sparsity and calibration."""

    model: str
    method: str
    sparsity: str
    calib: str  # source-windows x length, as in a cell's name: pydoc-16x128

    def matches(self, record: dict) -> bool:
        cell = record.get("cell") or {}
        calib = f"{cell.get('calibration_dataset')}-{cell.get('nsamples')}x{cell.get('seqlen')}"
        return (cell.get("model") == self.model and cell.get("method") == self.method
                and str(cell.get("sparsity")) == self.sparsity and calib == self.calib)

    def label(self) -> str:
        return f"{self.method} {self.sparsity} {self.calib}"


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    source: str  # where in the paper (its table, its abstract)
    claim: str
    paper_number: str
    setting: str  # how our setting differs from the paper's
    measure: str | None = None
    expect: str | None = None  # how a compares with b in the paper: lower, higher, or not-worse (lower or equal)
    a: Side | None = None
    b: Side | None = None
    untestable: str | None = None  # why this claim cannot be tested here


def load_claims(path: "str | Path") -> list[Claim]:
    """The claims of a YAML file (a list of mappings); a bad entry is one UsageError naming it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"No claims file {path}; give --claims FILE (a YAML list of claims).")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, list):
        raise UsageError(f"{path}: a claims file is a YAML list of claims, each a mapping with {sorted(CLAIM_KEYS)}.")
    return [_claim(path, i, entry) for i, entry in enumerate(raw)]


def _claim(path: Path, index: int, entry) -> Claim:
    where = f"{path}: claim {index + 1}"
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: a claim is a mapping with id, paper, source, claim, paper_number, setting, ...")
    unknown = sorted(set(entry) - CLAIM_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {unknown}; use {sorted(CLAIM_KEYS)}.")
    missing = [k for k in ("id", "paper", "source", "claim", "paper_number", "setting") if k not in entry]
    if missing:
        raise UsageError(f"{where}: missing {missing}.")
    text = {k: str(entry[k]) for k in ("id", "paper", "source", "claim", "paper_number", "setting")}
    if "untestable" in entry:
        return Claim(**text, untestable=str(entry["untestable"]))
    if entry.get("measure") not in MEASURES or entry.get("expect") not in EXPECTS:
        raise UsageError(f"{where} ({text['id']}): give measure ({', '.join(MEASURES)}) and expect "
                         f"({', '.join(EXPECTS)}), or untestable: the reason.")
    sides = []
    for key in ("a", "b"):
        side = entry.get(key)
        if not isinstance(side, dict) or sorted(side) != sorted(SIDE_KEYS):
            raise UsageError(f"{where} ({text['id']}): {key} is a mapping with exactly {', '.join(SIDE_KEYS)}.")
        sides.append(Side(**{k: str(side[k]) for k in SIDE_KEYS}))
    return Claim(**text, measure=entry["measure"], expect=entry["expect"], a=sides[0], b=sides[1])


# -- measuring -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    text: str  # our number with its interval and seeds
    verdict: str
    cells: str  # the cells it comes from


def measure_claim(claim: Claim, records: list[dict]) -> Measured:
    if claim.untestable is not None:
        return Measured("", "not testable here", claim.untestable)
    a, b = ([r for r in sorted(records, key=lambda r: r["seed"] or 0) if side.matches(r) and r.get("status") in FINISHED]
            for side in (claim.a, claim.b))
    cells = (f"{claim.a.model}: {claim.a.label()} (seeds {_seeds(a)}) vs {claim.b.label()} (seeds {_seeds(b)})")
    if not a or not b:
        return Measured("", "pending", cells)
    diverged = [any(r["status"] != "ok" for r in side) for side in (a, b)]
    if any(diverged):
        # Only a perplexity can say which side is worse when one diverged: the diverged one.
        worse_a = diverged[0] and not diverged[1]
        verdict = "not shown to differ" if all(diverged) or claim.measure != "perplexity" else \
            ("does not hold" if worse_a == (claim.expect != "higher") else "holds")
        return Measured("a diverged" if worse_a else "b diverged" if not diverged[0] else "both diverged", verdict, cells)
    same_seeds = claim.a.calib == claim.b.calib and [r["seed"] for r in a] == [r["seed"] for r in b]
    comparison, unit, loaded = _compare(claim.measure, a, b, same_seeds)
    if comparison is None:
        return Measured("", "pending", cells + f" ({claim.measure} not recorded)")
    value, low, high, null = comparison
    # A side that reads no calibration (magnitude) is complete with one seed; otherwise the smaller side counts.
    seeds = min(len(side) for side in (a, b) if _reads_calibration(side[0])) if any(
        _reads_calibration(side[0]) for side in (a, b)) else 1
    text = (f"{value:.3f} [{low:.3f}, {high:.3f}]" if claim.measure != "accuracy"
            else f"{value:+.2f} [{low:+.2f}, {high:+.2f}] points") + f" {unit}, {len(a)} vs {len(b)} seeds"
    if loaded:
        text += f"; {loaded} of the timings taken on a loaded machine"
    return Measured(text, _verdict(claim.expect, claim.measure, low, high, null, seeds), cells)


def _verdict(expect: str, measure: str, low: float, high: float, null: float, seeds: int) -> str:
    if not (math.isfinite(low) and math.isfinite(high)) or seeds < MIN_SEEDS or low <= null <= high:
        return "not shown to differ"
    # "better" for a: lower perplexity or time, higher accuracy.
    a_better = high < null if measure != "accuracy" else low > null
    wanted_better = expect == "not-worse" or (expect == "lower") == (measure != "accuracy")
    return "holds" if a_better == wanted_better else "does not hold"


def _reads_calibration(record: dict) -> bool:
    """Whether a cell's method reads calibration data (an unstructured method with no statistics does not)."""
    cell = record.get("cell") or {}
    try:
        method = registry.get_method(cell.get("method_name"))
        return bool(method.required_statistics(method.resolve_arguments(cell.get("arguments") or {})))
    except UsageError:  # a structured or unregistered method: counted as calibrated
        return True


def _seeds(records: list[dict]) -> str:
    return ", ".join(str(r["seed"]) for r in records) or "none"


def _compare(measure: str, a: list[dict], b: list[dict], same_seeds: bool):
    """((value, low, high, null), unit, loaded-timings count) of a against b, or (None, ...) when not recorded."""
    if measure == "perplexity":
        label = next(iter(a[0].get("perplexity") or {}), None)
        nlls = [[r["perplexity"].get(label, {}).get("window_nlls") for r in side] for side in (a, b)]
        if label is None or any(w is None for side in nlls for w in side):
            return None, "", 0
        c = perplexity_ratio(nlls[1], nlls[0], same_seeds=same_seeds)
        return (c.value, c.low, c.high, 1.0), f"x perplexity ({label})", 0
    if measure == "accuracy":
        task = next((t for t in (a[0].get("tasks") or {}) if t != "mean_acc"), None)
        items = [[(r.get("tasks") or {}).get(task, {}).get("correct", {}).get("acc") for r in side] for side in (a, b)]
        if task is None or any(i is None for side in items for i in side):
            return None, "", 0
        c = accuracy_difference([items[1]], [items[0]], same_seeds=same_seeds)
        return (100 * c.value, 100 * c.low, 100 * c.high, 0.0), f"({task} acc)", 0
    seconds = [[(r.get("timings") or {}).get("total") for r in side] for side in (a, b)]
    if any(s is None for side in seconds for s in side):
        return None, "", 0
    loaded = sum(1 for side in (a, b) for r in side if (r.get("load") or {}).get("contended"))
    return (*seconds_ratio(seconds[0], seconds[1]), 1.0), "x pruning seconds", loaded


def claims_table(claims: list[Claim], records: list[dict]) -> Table:
    rows = []
    for claim in claims:
        measured = measure_claim(claim, records)
        rows.append([claim.id, claim.paper, f"{claim.claim} ({claim.source})", claim.paper_number,
                     measured.text, claim.setting, measured.verdict, measured.cells])
    notes = ["ours: a / b for perplexity and pruning seconds (below 1: a lower), a - b in accuracy points; "
             "95% t interval over calibration seeds and evaluation windows (items), crossed; pruning seconds: "
             "Welch's t interval on log seconds over seeds.",
             f"verdict: holds / does not hold when the interval lies on one side of no difference with at least "
             f"{MIN_SEEDS} seeds on each side that reads calibration; not shown to differ otherwise; pending: a "
             "side has no finished cell yet; a diverged side is the worse one.",
             "cells: the grid cells each verdict comes from (model: method sparsity calibration-windows x L)."]
    return Table(TITLE, ["id", "paper", "claim (where)", "paper's number", "ours [95%]", "setting difference",
                         "verdict", "cells"], rows, notes)


def write_claims(claims_file: "str | Path", records: list[dict], fmt: str = "github") -> tuple[Path, str]:
    """Render the claims table beside its claims file (claims.md, .tex or .csv); returns (path, text)."""
    table = claims_table(load_claims(claims_file), records)
    text = table.render(fmt)
    suffix = {"github": "md", "latex": "tex", "csv": "csv"}.get(fmt, "md")
    path = Path(claims_file).with_name(f"claims.{suffix}")
    path.write_text(f"{TITLE}\n\n{text}\n" if fmt != "csv" else text)
    return path, text
