"""The calibration-source study's tables and plot (issue 26 item 5), from results/calibration-source records.

    .venv/bin/python scripts/calibration_source_study.py   # writes table.md and source_effect.png there

Per (method, sparsity, source): the geometric mean perplexity over the calibration seeds with a t interval
over the seeds' log perplexities (t with S - 1 degrees of freedom: with three seeds the interval is wide,
and it is the one that holds its coverage; the evaluation windows are the same for every cell, so their
noise is shared and cancels in comparisons). Fidelity (top-1 agreement, KL) and reconstruction (mean
and worst linear) are seed means. Every group is listed with the number of seeds that have run so far (a
group with one seed has no interval). The effect sizes: for each sparsity, the source effect is the mean over methods of
(largest - smallest) log perplexity across sources, the method effect the mean over sources of the same
across methods (both in log units: 0.1 is a 10.5% ratio).
"""
from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "results" / "calibration-source"
SEEDS = 3
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # two-sided 95% t quantiles by degrees of freedom
SOURCES = ("pydoc", "shakespeare", "generated")


def cells() -> dict[tuple, list[dict]]:
    grouped = defaultdict(list)
    for path in sorted((STUDY / "cells").glob("*/record.json")):
        record = json.loads(path.read_text())
        cell = record["cell"]
        if cell["method"] == "dense" or record.get("status") != "ok":
            continue
        grouped[(cell["method"], cell["sparsity"], cell["calibration_dataset"])].append(record)
    return grouped


def log_ppl(record: dict) -> float:
    [entry] = record["perplexity"].values()
    return math.log(entry["perplexity"])


def summary(records: list[dict]) -> dict:
    logs = [log_ppl(r) for r in records]
    mean = statistics.fmean(logs)
    half = T_975[len(logs) - 1] * statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) > 1 else 0.0
    metric = lambda name, key: statistics.fmean(r["metrics"][name][key] for r in records)  # noqa: E731
    return {"ppl": math.exp(mean), "low": math.exp(mean - half), "high": math.exp(mean + half), "log": mean,
            "top1": metric("fidelity", "top1"), "kl": metric("fidelity", "kl"),
            "rec_mean": metric("reconstruction", "mean"), "rec_worst": metric("reconstruction", "worst"),
            "seeds": len(records)}


def effects(table: dict, sparsity: str) -> tuple[float | None, float | None]:
    """(source effect, method effect) in log perplexity, over the complete rows and columns."""
    methods = sorted({m for m, s, _ in table if s == sparsity})
    by_method = [[table[(m, sparsity, src)]["log"] for src in SOURCES if (m, sparsity, src) in table] for m in methods]
    by_source = [[table[(m, sparsity, src)]["log"] for m in methods if (m, sparsity, src) in table] for src in SOURCES]
    source = [max(v) - min(v) for v in by_method if len(v) == len(SOURCES)]
    method = [max(v) - min(v) for v in by_source if len(v) == len(methods) and len(v) > 1]
    return (statistics.fmean(source) if source else None), (statistics.fmean(method) if method else None)


def plot(table: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    sparsities = sorted({s for _, s, _ in table}, key=lambda s: (":" in s, s))
    figure = Figure(figsize=(6 * len(sparsities), 4.5))
    for index, sparsity in enumerate(sparsities, 1):
        axes = figure.add_subplot(1, len(sparsities), index)
        methods = sorted({m for m, s, _ in table if s == sparsity})
        for offset, source in zip((-0.2, 0, 0.2), SOURCES):
            points = [(i + offset, table[(m, sparsity, source)]) for i, m in enumerate(methods) if (m, sparsity, source) in table]
            if points:
                axes.errorbar([x for x, _ in points], [p["ppl"] for _, p in points],
                              yerr=[[p["ppl"] - p["low"] for _, p in points], [p["high"] - p["ppl"] for _, p in points]],
                              fmt="o", capsize=3, label=source)  # a one-seed point has no bar
        axes.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        axes.set_yscale("log")
        source_effect, method_effect = effects(table, sparsity)
        label = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        axes.set_title(f"SmolLM2-135M {sparsity}: source effect {label(source_effect)}, method effect "
                       f"{label(method_effect)} (log ppl)", fontsize=9)
        axes.set_ylabel("WikiText-2 ppl (32 x 512), 95% t interval over seeds")
        axes.legend(title="calibration source", fontsize="small")
        axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    grouped = cells()
    table = {key: summary(records) for key, records in grouped.items()}
    partial = sum(1 for records in grouped.values() if len(records) < SEEDS)
    lines = ["# Calibration source study (SmolLM2-135M)", "",
             f"Made by `.venv/bin/python scripts/calibration_source_study.py` from `results/calibration-source/cells` "
             f"({sum(len(r) for r in grouped.values())} pruned cells in {len(table)} method x sparsity x source groups; "
             f"{partial} of them have fewer than the grid's {SEEDS} seeds so far, and a group with one seed has no "
             "interval). Perplexity: geometric mean over seeds [95% t interval over seeds]; top-1 and KL: fidelity to the dense model; reconstruction: mean "
             "and worst per-linear output error on pydoc's held-out topics.", "",
             "| method | sparsity | source | seeds | ppl [95% t over seeds] | top-1 agreement | KL(dense‖pruned) | reconstruction mean | worst |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (method, sparsity, source), row in sorted(table.items(), key=lambda item: (item[0][1], item[0][0], item[0][2])):
        interval = f"[{row['low']:.2f}, {row['high']:.2f}]" if row["seeds"] > 1 else "(one seed: no interval)"
        lines.append(f"| {method} | {sparsity} | {source} | {row['seeds']} | {row['ppl']:.2f} {interval} | "
                     f"{100 * row['top1']:.1f}% | {row['kl']:.4f} | {row['rec_mean']:.4f} | {row['rec_worst']:.4f} |")
    lines += ["", "Effects over the groups present (log perplexity of the seed means; not an interval):", "",
              "| sparsity | source effect (log ppl) | method effect (log ppl) |", "|---|---|---|"]
    for sparsity in sorted({s for _, s, _ in table}):
        source_effect, method_effect = effects(table, sparsity)
        show = lambda v: "not yet (rows incomplete)" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {sparsity} | {show(source_effect)} | {show(method_effect)} |")
    (STUDY / "table.md").write_text("\n".join(lines) + "\n")
    if table:
        plot(table, STUDY / "source_effect.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
