"""Paper vs ours (issue 25 item 5): each published number beside our measurement in the nearest setting we
can run, as ratios to the dense model of the same row (absolute perplexities of a 7B and a 135M model do
not compare), with what differs written in the row.

    .venv/bin/python scripts/paper_table.py > results/paper-protocol/table.md

Our structured rows come from results/paper-protocol (FLAP's protocol: WikiText-2 test at 128-token
windows, every window; one calibration seed, so the interval is over evaluation windows only: the paired
t interval of the ratio, prunebench.perplexity_ratio). Our unstructured rows come from results/leaderboard (512-token windows, 64 of
them, three calibration seeds): the ratio of the mean over seeds, and each seed's own ratio beside it;
no interval is claimed over three seeds. Paper numbers are the ones REFERENCE.md quotes (its sections 5
and 6); the stored copies of the papers we could read give their openings only, so table and page
numbers are not given here.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from prunebench import perplexity_ratio

ROOT = Path(__file__).resolve().parents[1]
STRUCTURED = ROOT / "results" / "paper-protocol" / "cells"
UNSTRUCTURED = ROOT / "results" / "leaderboard" / "cells"

# (method, sparsity, the paper's model, its dense ppl, its pruned ppl, where the number is from)
STRUCTURED_PAPER = [
    ("flap", "0.2", "LLaMA-7B", 12.62, 14.62, "FLAP (AAAI 2024), via REFERENCE.md §6"),
    ("flap", "0.5", "LLaMA-7B", 12.62, 31.80, "FLAP (AAAI 2024), via REFERENCE.md §6"),
    ("wanda-sp", "0.2", "LLaMA-7B", 12.62, 22.12, "FLAP paper's Wanda-sp baseline, via REFERENCE.md §6"),
    ("wanda-sp", "0.5", "LLaMA-7B", 12.62, 366.43, "FLAP paper's Wanda-sp baseline, via REFERENCE.md §6"),
]
UNSTRUCTURED_PAPER = [
    ("magnitude", "0.5", "LLaMA-7B", 5.68, 17.29, "Wanda paper, via REFERENCE.md §5"),
    ("wanda", "0.5", "LLaMA-7B", 5.68, 7.26, "Wanda paper, via REFERENCE.md §5"),
    ("sparsegpt", "0.5", "LLaMA-7B", 5.68, 7.22, "Wanda paper, via REFERENCE.md §5"),
    ("magnitude", "2:4", "LLaMA-2-7B", 5.12, 54.59, "Wanda paper, via REFERENCE.md §5"),
    ("wanda", "2:4", "LLaMA-2-7B", 5.12, 11.02, "Wanda paper, via REFERENCE.md §5"),
    ("sparsegpt", "2:4", "LLaMA-2-7B", 5.12, 10.17, "Wanda paper, via REFERENCE.md §5"),
    ("ria", "0.5", "LLaMA-3-8B", 6.14, 9.34, "RIA paper, via REFERENCE.md §5"),
    ("wanda", "0.5", "LLaMA-3-8B", 6.14, 10.82, "RIA paper, via REFERENCE.md §5"),
    ("sparsegpt", "0.5", "LLaMA-3-8B", 6.14, 9.40, "RIA paper, via REFERENCE.md §5"),
]
# Pairs whose order the paper reports: (a, b, sparsity, paper's model, paper's ppl of a, of b).
STRUCTURED_PAIRS = [("flap", "wanda-sp", "0.2", "LLaMA-7B", 14.62, 22.12), ("flap", "wanda-sp", "0.5", "LLaMA-7B", 31.80, 366.43)]
UNSTRUCTURED_PAIRS = [("ria", "wanda", "0.5", "LLaMA-3-8B", 9.34, 10.82), ("sparsegpt", "wanda", "0.5", "LLaMA-7B", 7.22, 7.26),
                      ("sparsegpt", "wanda", "2:4", "LLaMA-2-7B", 10.17, 11.02)]


MODEL = "smollm2-135m"


def records(directory: Path) -> list[dict]:
    """The directory's SmolLM2 records (the leaderboard also holds Gemma 3's)."""
    found = [json.loads(path.read_text()) for path in sorted(directory.glob("*/record.json"))]
    return [r for r in found if r["cell"]["model"] == MODEL]


def nlls(record: dict) -> list[float]:
    [entry] = record["perplexity"].values()
    return entry["window_nlls"]


def select(pool: list[dict], method: str, sparsity: str | None = None) -> list[dict]:
    return [r for r in pool if r["cell"]["method"] == method and (sparsity is None or r["cell"]["sparsity"] == sparsity)
            and r.get("status") == "ok"]


def ppl(window_nlls: list[float]) -> float:
    return math.exp(sum(window_nlls) / len(window_nlls))


def structured_rows(pool: list[dict]) -> list[list[str]]:
    [dense] = select(pool, "dense")
    dense_nlls = nlls(dense)
    rows = [["dense", "-", "LLaMA-7B 12.62", f"SmolLM2-135M {ppl(dense_nlls):.2f}", "-", "-", "model"]]
    for method, sparsity, model, paper_dense, paper_pruned, source in STRUCTURED_PAPER:
        [cell] = select(pool, method, sparsity)
        ratio = perplexity_ratio(dense_nlls, nlls(cell))
        removed = cell["structured"]["removed_fraction"]
        rows.append([method, f"{float(sparsity):.0%}", f"{model} {paper_pruned:.2f}", f"SmolLM2-135M {ppl(nlls(cell)):.2f}",
                     f"{paper_pruned / paper_dense:.3f}", f"{ratio.value:.2f} [{ratio.low:.2f}, {ratio.high:.2f}]",
                     f"model; calibration pydoc 128x128 (paper: its own protocol); removed {removed:.1%} of decoder "
                     f"linear parameters; {source}"])
    return rows


def structured_pair_rows(pool: list[dict]) -> list[list[str]]:
    rows = []
    for a, b, sparsity, model, paper_a, paper_b in STRUCTURED_PAIRS:
        [cell_a], [cell_b] = select(pool, a, sparsity), select(pool, b, sparsity)
        ratio = perplexity_ratio(nlls(cell_b), nlls(cell_a))
        rows.append([f"{a} / {b}", f"{float(sparsity):.0%}", f"{model} {paper_a / paper_b:.3f}",
                     f"{ratio.value:.3f} [{ratio.low:.3f}, {ratio.high:.3f}]",
                     "same order" if (paper_a < paper_b) == (ratio.high < 1) and (ratio.high < 1 or ratio.low > 1)
                     else "order not shown here"])
    return rows


def seed_ratios(pool: list[dict], method: str, sparsity: str, reference: list[dict]) -> tuple[float, list[float]]:
    """Ratio of mean-over-seeds perplexities, and each seed's ratio (reference: the same seed where it has one)."""
    cells = sorted(select(pool, method, sparsity), key=lambda r: r["cell"]["seed"])
    by_seed = {r["cell"]["seed"]: r for r in reference}
    per_seed = []
    for cell in cells:
        ref = by_seed.get(cell["cell"]["seed"], reference[0])
        per_seed.append(ppl(nlls(cell)) / ppl(nlls(ref)))
    mean = lambda group: sum(ppl(nlls(r)) for r in group) / len(group)  # noqa: E731
    return mean(cells) / mean(reference), per_seed


def unstructured_rows(pool: list[dict]) -> list[list[str]]:
    dense = select(pool, "dense")
    sparsities = {"0.5": "0.5", "2:4": "2:4"}
    rows = []
    for method, sparsity, model, paper_dense, paper_pruned, source in UNSTRUCTURED_PAPER:
        ratio, per_seed = seed_ratios(pool, method, sparsities[sparsity], dense)
        seeds = ", ".join(f"{r:.3f}" for r in per_seed)
        rows.append([method, sparsity if ":" in sparsity else f"{float(sparsity):.0%}", f"{model} {paper_pruned:.2f}",
                     f"{paper_pruned / paper_dense:.3f}", f"{ratio:.3f} (seeds: {seeds})",
                     f"model; calibration pydoc 16x128, {len(per_seed)} seed(s) (paper: C4 128x2048); eval "
                     f"512-token windows x 64 (paper: 2048 or 4096); {source}"])
    return rows


def order(per_seed: list[float], paper_below_one: bool) -> str:
    """The paper's order against each seed's: a count, not a significance claim."""
    agree = sum((r < 1) == paper_below_one for r in per_seed)
    if agree == len(per_seed):
        return f"paper's order at all {len(per_seed)} seeds"
    if agree == 0:
        return f"the opposite order at all {len(per_seed)} seeds"
    return f"paper's order at {agree} of {len(per_seed)} seeds"


def unstructured_pair_rows(pool: list[dict]) -> list[list[str]]:
    rows = []
    for a, b, sparsity, model, paper_a, paper_b in UNSTRUCTURED_PAIRS:
        ratio, per_seed = seed_ratios(pool, a, sparsity, select(pool, b, sparsity))
        rows.append([f"{a} / {b}", sparsity if ":" in sparsity else f"{float(sparsity):.0%}",
                     f"{model} {paper_a / paper_b:.3f}", f"{ratio:.3f} (seeds: {', '.join(f'{r:.3f}' for r in per_seed)})",
                     order(per_seed, paper_a < paper_b)])
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    structured, unstructured = records(STRUCTURED), records(UNSTRUCTURED)
    out = [
        "# Paper vs ours",
        "",
        "Made by `.venv/bin/python scripts/paper_table.py` from the committed records. Ratios are pruned / dense "
        "perplexity of the same row's model; a paper's number and ours are never the same model (SmolLM2-135M is "
        "the largest we run on two CPU cores), so the comparison is of the ratio and of the order of methods, not "
        "of perplexities. Paper numbers as REFERENCE.md quotes them; their table and page are not given (the "
        "stored copies of the papers reachable here hold their openings only).",
        "",
        "## Structured: FLAP / Wanda-sp protocol (WikiText-2 test, 128-token windows, every window)",
        "",
        "Ours: results/paper-protocol (`sh results/paper-protocol/run.sh`), one calibration seed: intervals are the "
        "paired t interval over the 2381 evaluation windows and say nothing of calibration noise.",
        "",
        markdown(["method", "sparsity", "paper ppl", "our ppl", "paper ratio to dense", "our ratio to dense [95%]",
                  "what differs; source"], structured_rows(structured)),
        "",
        markdown(["pair", "sparsity", "paper ratio", "our ratio [95%]", "order"], structured_pair_rows(structured)),
        "",
        "## Unstructured: Wanda / RIA protocol at our scale",
        "",
        "Ours: results/leaderboard (the default grid), three calibration seeds; the ratio of mean perplexities over "
        "the seeds and each seed's ratio (three seeds give no interval we would stand behind; issue 27).",
        "",
        markdown(["method", "sparsity", "paper ppl", "paper ratio to dense", "our ratio to dense", "what differs; source"],
                 unstructured_rows(unstructured)),
        "",
        markdown(["pair", "sparsity", "paper ratio", "our ratio", "order"], unstructured_pair_rows(unstructured)),
        "",
        "Not in this table: CFSP, LLM-Pruner, ShortGPT, SAAP and DSnoT report no number that REFERENCE.md quotes "
        "(CFSP's and SAAP's headlines are zero-shot accuracy gains on LLaMA-7B and larger, not run here); "
        "FLAP and Wanda-sp at 30% were not run (20% and 50% bracket it).",
    ]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
