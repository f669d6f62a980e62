"""Figures from benchmark records (PNG and SVG): perplexity against calibration length and against
sparsity, and pruning time against perplexity."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from prunebench.sparsity import parse_sparsity
from prunebench.store import safe_name


def _points(records: list[dict]):
    """(model, eval label, method, sparsity, seqlen, ppl, seconds) for each finished pruned cell."""
    for record in records:
        if record.get("status") not in ("ok", "diverged"):
            continue
        cell = record["cell"]
        for label, result in (record.get("perplexity") or {}).items():
            ppl = result.get("perplexity")
            ppl = float("inf") if ppl is None else ppl
            yield (cell["model"], label, cell["method"], cell.get("sparsity"), cell.get("seqlen"), ppl,
                   (record.get("timings") or {}).get("total"))


def _save(figure, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    figure.tight_layout()
    for path in paths:
        figure.savefig(path, dpi=120)
    return paths


def _label_axes(axes, xlabel: str, label: str, title: str) -> None:
    axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(f"{label} perplexity (lower is better)")
    axes.set_title(title)
    axes.legend(fontsize=8)


def write_plots(records: list[dict], out: "str | Path") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    points = list(_points(records))
    dense = {(m, label): ppl for m, label, method, _, _, ppl, _ in points if method == "dense"}
    pruned = [p for p in points if p[2] != "dense" and math.isfinite(p[5])]

    # Perplexity against calibration length, one figure per model, evaluation and sparsity.
    series = defaultdict(lambda: defaultdict(list))
    for model, label, method, sparsity, seqlen, ppl, _ in pruned:
        series[(model, label, sparsity)][method].append((seqlen, ppl))
    for (model, label, sparsity), by_method in sorted(series.items()):
        figure, axes = plt.subplots(figsize=(6, 4))
        for method, values in sorted(by_method.items()):
            values.sort()
            axes.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=method)
        if (model, label) in dense:
            axes.axhline(dense[(model, label)], color="grey", linestyle="--", label="dense")
        axes.set_xscale("log", base=2)
        _label_axes(axes, "calibration length L (tokens)", label, f"{model}, sparsity {sparsity}")
        written += _save(figure, out, f"ppl-vs-length_{safe_name(model)}_{safe_name(label)}_{safe_name(sparsity)}")
        plt.close(figure)

    # Perplexity against sparsity at the longest calibration length.
    by_model = defaultdict(lambda: defaultdict(list))
    longest = defaultdict(int)
    for model, label, method, sparsity, seqlen, ppl, _ in pruned:
        longest[(model, label)] = max(longest[(model, label)], seqlen or 0)
    for model, label, method, sparsity, seqlen, ppl, _ in pruned:
        if seqlen == longest[(model, label)]:
            by_model[(model, label)][method].append((sparsity, ppl))
    for (model, label), by_method in sorted(by_model.items()):
        order = sorted({s for values in by_method.values() for s, _ in values},
                       key=lambda s: (parse_sparsity(s).is_n_m, parse_sparsity(s).ratio, s))
        figure, axes = plt.subplots(figsize=(6, 4))
        for method, values in sorted(by_method.items()):
            values = dict(values)
            xs = [i for i, s in enumerate(order) if s in values]
            axes.plot(xs, [values[order[i]] for i in xs], marker="o", label=method)
        axes.set_xticks(range(len(order)), order)
        _label_axes(axes, "sparsity", label, f"{model}, L={longest[(model, label)]}")
        written += _save(figure, out, f"ppl-vs-sparsity_{safe_name(model)}_{safe_name(label)}")
        plt.close(figure)

    # Pruning time against perplexity, every pruned cell.
    scatter = defaultdict(lambda: defaultdict(list))
    for model, label, method, sparsity, seqlen, ppl, seconds in pruned:
        if seconds is not None:
            scatter[(model, label)][method].append((seconds, ppl))
    for (model, label), by_method in sorted(scatter.items()):
        figure, axes = plt.subplots(figsize=(6, 4))
        for method, values in sorted(by_method.items()):
            axes.scatter([v[0] for v in values], [v[1] for v in values], label=method)
        axes.set_xscale("log")
        _label_axes(axes, "pruning time (s)", label, model)
        written += _save(figure, out, f"time-vs-ppl_{safe_name(model)}_{safe_name(label)}")
        plt.close(figure)
    return written
