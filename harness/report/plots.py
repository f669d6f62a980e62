"""Figures from benchmark records, each point with its error bar: every plotted metric (perplexity)
against calibration length and against sparsity, pruning time against it, and it against each
efficiency metric's value (size, speed) with the Pareto front marked; for structured cells, apart,
the metric against parameters kept and against measured prefill speedup (PNG and SVG, byte-stable)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .. import registry
from ..api.metric import value_of
from ..api.records import (
    STRUCTURED,
    is_finished,
    is_structured_record,
    parameters_kept,
    run_contended,
    unstructured_records,
)
from ..api.sparsity import parse_sparsity
from ..metrics.run import registered_metrics
from ..metrics.uncertainty import RESAMPLES
from ..store.results import safe_name
from .grouping import setting_of, windows_vary
from .quality_tables import perplexity_cells

MARKERS = "osD^vP*Xh<>p"
# Fixed ids and no dates or versions in the files: an unchanged report leaves git clean.
STABLE_RC = {"svg.hashsalt": "prunebench", "svg.fonttype": "path"}
SVG_METADATA = {"Date": None, "Creator": None}
PNG_METADATA = {"Software": None}


def _error(cell) -> tuple[float, float]:
    """Distances below and above the value: the 95% interval, else the seed std, else none."""
    if cell.has_interval:
        return max(cell.value - cell.low, 0.0), max(cell.high - cell.value, 0.0)
    if cell.std is not None:
        return cell.std, cell.std
    return 0.0, 0.0


def _sparsity_key(sparsity: str) -> tuple:
    target = parse_sparsity(sparsity)
    return (target.is_n_m, target.ratio, sparsity)


def _sparsity_label(sparsity: str) -> str:
    return sparsity if parse_sparsity(sparsity).is_n_m else f"{float(sparsity) * 100:g}%"


def _style(methods: list[str]) -> dict[str, dict]:
    """One colour and marker per method, the same in every figure of a report."""
    import matplotlib

    # tab10 while it suffices (reports stay as they were); beyond ten methods colours would repeat.
    colours = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
    return {m: {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]} for i, m in enumerate(methods)}


def _metric_axis(axes, label: str, metric) -> None:
    """The metric's label; a log scale with plain numbers at 1, 2, 5 x 10^k (more when the range is narrow)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if metric.log_scale:
        axes.set_yscale("log")
        low, high = axes.get_ylim()
        subs = (1.0, 2.0, 5.0) if high / low > 4 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_ylabel(metric.axis_label(label))
    axes.grid(True, which="major", axis="y", alpha=0.3)


def _dense_line(axes, dense) -> None:
    """The dense model's perplexity as a labelled horizontal line, its interval as a band."""
    if dense is not None and dense.finite:
        axes.axhline(dense.value, color="grey", linestyle="--", linewidth=1, label="dense", zorder=1)
        axes.text(0.01, dense.value, f" dense {dense.value:.1f}", transform=axes.get_yaxis_transform(),
                  va="bottom", ha="left", fontsize=7, color="dimgrey")
        if dense.has_interval:
            axes.axhspan(dense.low, dense.high, color="grey", alpha=0.12, linewidth=0, zorder=0)


def _legend_outside(axes, handles=None) -> None:
    """The legend to the right of the axes, where it covers no point."""
    handles = handles if handles is not None else axes.get_legend_handles_labels()[0]
    if handles:
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


def _caption(figure, cells: list, note: str | None = None) -> None:
    """Say under the figure what the error bars are, or that there are none (and `note`, a second line)."""
    with_interval = sum(1 for c in cells if c.has_interval)
    with_std = sum(1 for c in cells if not c.has_interval and c.std is not None)
    if with_interval == len(cells):
        text = ("error bars: 95% interval (one seed: bootstrap over evaluation windows; several: t interval over "
                "seeds and windows, crossed)")
    elif with_interval or with_std:
        text = ("error bars: 95% interval where recorded, else ± std over seeds; points without bars have "
                "no per-window NLLs")
    else:
        text = "no error bars: these records carry no per-window NLLs (an older prunebench)"
    if note:
        text = f"{text}\n{note}"
    figure.text(0.01, -0.01, text, fontsize=7, color="dimgrey", ha="left", va="top")


def _save(plt, figure, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    figure.savefig(paths[0], dpi=120, bbox_inches="tight", metadata=PNG_METADATA)
    figure.savefig(paths[1], bbox_inches="tight", metadata=SVG_METADATA)
    plt.close(figure)
    return paths


def plot_cells(metric, records: list[dict], resamples: int) -> dict | None:
    """A metric's plotted cells: its own (`Metric.plot_cells`), else those of its `table_style`."""
    own = metric.plot_cells(records, resamples)
    if own is None and metric.table_style == "perplexity":
        return perplexity_cells(records, resamples)
    return own


def write_plots(records: list[dict], out: "str | Path", resamples: int = RESAMPLES) -> list[Path]:
    """Draw every figure into `out`; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    # Structured cells are drawn only in their own figures, against their own dense baselines.
    unstructured = unstructured_records(records)
    structured = [r for r in records if is_structured_record(r) or r.get("cell", {}).get("method") == "dense"]
    plotted = [(metric, plot_cells(metric, unstructured, resamples)) for metric in registered_metrics()]
    plotted = [(metric, cells) for metric, cells in plotted if cells]
    structured_plotted = [(metric, plot_cells(metric, structured, resamples)) for metric, _ in plotted] \
        if len(unstructured) < len(records) else []
    style = _style(sorted({m for _, cells in plotted + structured_plotted for by_method in cells.values()
                           for m in by_method if m != "dense"}))
    times = _times(unstructured)
    with plt.rc_context(STABLE_RC):
        for metric, cells in plotted:
            written += _metric_plots(plt, metric, cells, times, style, out)
            for efficiency in registered_metrics():
                if efficiency.pareto_value is not None:
                    written += _pareto_plots(plt, metric, cells, efficiency, unstructured, style, out)
        for metric, cells in structured_plotted:
            written += _structured_plots(plt, metric, cells, structured, style, out)
    return written


def plot_kinds() -> dict[str, str]:
    """What each figure shows, by the start of its file name (before the first "_")."""
    kinds = {}
    metrics = registered_metrics()
    for metric in (m for m in metrics if m.plot_prefix):
        name = metric.unit.capitalize()
        kinds[f"{metric.plot_prefix}-vs-length"] = f"{name} against calibration length"
        kinds[f"{metric.plot_prefix}-vs-sparsity"] = f"{name} against sparsity"
        kinds[f"time-vs-{metric.plot_prefix}"] = f"Pruning time against {metric.unit}"
        for efficiency in (m for m in metrics if m.pareto_value is not None):
            kinds[f"{metric.plot_prefix}-vs-{safe_name(efficiency.name)}"] = (
                f"{name} against {efficiency.pareto_value.label} (Pareto front marked)")
        kinds[f"structured-{metric.plot_prefix}-vs-params"] = f"{name} against parameters kept, structured methods"
        kinds[f"structured-{metric.plot_prefix}-vs-speedup"] = (f"{name} against measured prefill speedup, "
                                                                "structured methods")
    return kinds


def pareto_front(points: list[tuple[float, float]], x_higher_better: bool, y_higher_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (as good on both, better on one), by x."""
    def key(point):
        return (point[0] if x_higher_better else -point[0], point[1] if y_higher_better else -point[1])

    keyed = [key(p) for p in points]
    front = [i for i, (x, y) in enumerate(keyed)
             if not any(ox >= x and oy >= y and (ox, oy) != (x, y) for ox, oy in keyed)]
    return sorted(front, key=lambda i: points[i][0])


def _efficiency_values(records: list[dict], metric, value) -> dict:
    """{(model, method, sparsity, seqlen): (mean over seeds of the metric's value, lowest low, highest
    high)}: the range covers every seed's own range (a speed's spread over repeats), finished cells only."""
    found = defaultdict(list)
    vary = windows_vary(records)
    for record in records:
        result = metric.result_of(record) if is_finished(record) else None
        entry = value_of((result or {}).get(value.key))
        if entry is not None:
            cell = record["cell"]
            found[setting_of(cell, vary)].append(entry)
    return {k: (sum(e[0] for e in v) / len(v) * value.scale,
                min(e[0] if e[1] is None else e[1] for e in v) * value.scale,
                max(e[0] if e[2] is None else e[2] for e in v) * value.scale) for k, v in found.items()}


def _pareto_plots(plt, metric, cells: dict, efficiency, records: list[dict], style: dict, out: Path) -> list[Path]:
    """The quality metric against one efficiency value per model and evaluation, Pareto front marked."""
    values = _efficiency_values(records, efficiency, efficiency.pareto_value)
    written: list[Path] = []
    prefix = metric.plot_prefix or metric.name
    for (model, label), by_method in sorted(cells.items()):
        points = [(method, sparsity, seqlen, values[(model, method, sparsity, seqlen)], cell)
                  for method, by_column in sorted(by_method.items()) if method != "dense"
                  for (sparsity, seqlen), cell in sorted(by_column.items(), key=lambda item: (_sparsity_key(item[0][0]),
                                                                                             item[0][1]))
                  if cell.finite and (model, method, sparsity, seqlen) in values]
        if not points:
            continue
        dense = by_method.get("dense", {}).get((None, None))
        figure = _against_efficiency(plt, metric, model, label, points, dense, values.get((model, "dense", None, None)),
                                     efficiency, style, [r for r in records if r["cell"]["model"] == model])
        written += _save(plt, figure, out, f"{prefix}-vs-{safe_name(efficiency.name)}_{safe_name(model)}_{safe_name(label)}")
    return written


def _against_efficiency(plt, metric, model, label, points, dense, dense_x, efficiency, style, records):
    """Colour is the method, marker shape the sparsity; the Pareto front is a dashed line through ringed points."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    value = efficiency.pareto_value
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    order = sorted({p[1] for p in points}, key=_sparsity_key)
    shapes = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(order)}
    for method, sparsity, _, (x, low, high), cell in points:
        axes.errorbar([x], [cell.value], xerr=[[x - low], [high - x]], yerr=[[e] for e in _error(cell)],
                      marker=shapes[sparsity], color=style[method]["color"], linestyle="none", capsize=2, markersize=6,
                      zorder=3)
    front = pareto_front([(p[3][0], p[4].value) for p in points], value.higher_is_better, metric.higher_is_better)
    axes.plot([points[i][3][0] for i in front], [points[i][4].value for i in front], color="black", linestyle="--",
              linewidth=1, marker="o", markersize=11, markerfacecolor="none", zorder=4)
    _dense_line(axes, dense)
    if dense is not None and dense.finite and dense_x is not None:
        axes.plot([dense_x[0]], [dense.value], marker="*", color="grey", markersize=10, linestyle="none", zorder=3)
    unit = f"{value.unit}, " if value.unit else ""
    axes.set_xlabel(f"{value.label} ({unit}{'higher' if value.higher_is_better else 'lower'} is better)"
                    f"{efficiency.older_versions_label(records)}")
    _metric_axis(axes, label, metric)
    axes.set_title(f"{model}: {metric.name} against {efficiency.name}")
    handles = [Patch(color=style[m]["color"], label=m) for m in sorted({p[0] for p in points})]
    handles += [Line2D([], [], color="black", marker=shapes[s], linestyle="none", label=f"sparsity {_sparsity_label(s)}")
                for s in order]
    handles.append(Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none",
                          label="Pareto front"))
    if dense is not None and dense.finite:
        handles.append(Line2D([], [], color="grey", linestyle="--", label="dense"))
    _legend_outside(axes, handles)
    _caption(figure, [p[4] for p in points], f"horizontal bars: the range {efficiency.name} reports for "
                                             f"{value.label} (over repeats where it repeats), across seeds")
    return figure


# -- structured cells -----------------------------------------------------------------------------


def _structured_plots(plt, metric, cells: dict, records: list[dict], style: dict, out: Path) -> list[Path]:
    """Per model and evaluation: the metric against parameters kept, and against the speed metric's
    prefill speedup where it ran; one marker per method, each point labelled with its sparsity."""
    speed = registry.registered("register_metrics").get("speed")
    speedup = speed.item.pareto_value if speed is not None else None
    kept = _setting_values(records, lambda r: (parameters_kept(r), None, None) if r.get(STRUCTURED) else None)
    fast = _setting_values(records, lambda r: _value_entry(speed.item, speedup, r)) if speedup else {}
    # (x values, x axis label, scale of x, file name part); both x values are 1 for the dense model
    axes = [(kept, "parameters kept (% of the dense model's)", 100.0, "params")]
    if speedup is not None:
        axes.append((fast, f"{speedup.label} ({speedup.unit}, higher is better)", 1.0, "speedup"))
    written: list[Path] = []
    prefix = f"structured-{metric.plot_prefix or metric.name}"
    for (model, label), by_method in sorted(cells.items()):
        dense = by_method.get("dense", {}).get((None, None))
        for values, x_label, scale, stem in axes:
            points = [(method, sparsity, seqlen, values[(model, method, sparsity, seqlen)], cell)
                      for method, by_column in sorted(by_method.items()) if method != "dense"
                      for (sparsity, seqlen), cell in by_column.items()
                      if cell.finite and (model, method, sparsity, seqlen) in values]
            if points:
                if stem == "speedup":
                    x_label += speed.item.older_versions_label([r for r in records if r["cell"]["model"] == model])
                figure = _structured_figure(plt, metric, model, label, points, dense, scale, x_label, style)
                written += _save(plt, figure, out, f"{prefix}-vs-{stem}_{safe_name(model)}_{safe_name(label)}")
    return written


def _value_entry(metric, value, record: dict) -> tuple | None:
    return value_of((metric.result_of(record) or {}).get(value.key))


def _setting_values(records: list[dict], read) -> dict:
    """{(model, method, sparsity, seqlen): (mean over seeds, lowest low, highest high)} of `read(record)`,
    a (value, low, high) or None, over finished records."""
    found = defaultdict(list)
    vary = windows_vary(records)
    for record in records:
        entry = read(record) if is_finished(record) else None
        if entry is not None and entry[0] is not None:
            cell = record["cell"]
            found[setting_of(cell, vary)].append(entry)
    result = {}
    for key, entries in found.items():
        lows = [e[1] for e in entries if e[1] is not None]
        highs = [e[2] for e in entries if e[2] is not None]
        result[key] = (sum(e[0] for e in entries) / len(entries), min(lows) if lows else None,
                       max(highs) if highs else None)
    return result


def _structured_figure(plt, metric, model, label, points, dense, scale, x_label, style):
    """Each method a line through its sparsities, with the x range (speed's repeats) and the metric's
    interval as error bars; the dense model a grey star at its x and a dashed line at its value."""
    from matplotlib.lines import Line2D

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    lengths = {p[2] for p in points}
    for method in sorted({p[0] for p in points}):
        mine = sorted((p for p in points if p[0] == method), key=lambda p: (_sparsity_key(p[1]), p[2]))
        xs = [p[3][0] * scale for p in mine]
        xerr = [[max(p[3][0] - p[3][1], 0.0) * scale if p[3][1] is not None else 0.0 for p in mine],
                [max(p[3][2] - p[3][0], 0.0) * scale if p[3][2] is not None else 0.0 for p in mine]]
        yerr = list(zip(*[_error(p[4]) for p in mine]))
        axes.errorbar(xs, [p[4].value for p in mine], xerr=xerr, yerr=yerr, capsize=2, linewidth=1, markersize=6,
                      label=method, zorder=3, **style[method])
        for x, point in zip(xs, mine):
            text = _sparsity_label(point[1]) + (f" L={point[2]}" if len(lengths) > 1 else "")
            axes.annotate(text, (x, point[4].value), textcoords="offset points", xytext=(4, 3), fontsize=7,
                          color=style[method]["color"])
    arrows = _recovery_arrows(axes, points, scale, style)
    handles = axes.get_legend_handles_labels()[0]  # the methods' (before the dense line adds its own)
    _dense_line(axes, dense)
    if dense is not None and dense.finite:
        axes.plot([scale], [dense.value], marker="*", color="grey", markersize=10, linestyle="none", zorder=3)
        handles.append(Line2D([], [], color="grey", marker="*", linestyle="--", label="dense"))
    axes.set_xlabel(x_label)
    _metric_axis(axes, label, metric)
    axes.set_title(f"{model}: structured pruning (points labelled with target sparsity)")
    _legend_outside(axes, handles)
    note = f"horizontal bars: the range of {x_label} over the metric's repeats"
    if arrows:
        note += f"; arrows: from a method's point to its LoRA-recovered point (label{RECOVERED})"
    _caption(figure, [p[4] for p in points], note)
    return figure


RECOVERED = "+lora"  # a grid label's ending for a method's recovered twin (benchmarks.yaml)


def _recovery_arrows(axes, points, scale, style) -> int:
    """An arrow from each (method, sparsity, length) point to the same setting of `method+lora`."""
    where = {(p[0], p[1], p[2]): (p[3][0] * scale, p[4].value) for p in points}
    drawn = 0
    for (method, sparsity, seqlen), end in where.items():
        start = where.get((method[: -len(RECOVERED)], sparsity, seqlen)) if method.endswith(RECOVERED) else None
        if start is not None:
            axes.annotate("", xy=end, xytext=start, zorder=4,
                          arrowprops={"arrowstyle": "->", "color": style[method]["color"], "linewidth": 1.0})
            drawn += 1
    return drawn


def _metric_plots(plt, metric, cells: dict, times: dict, style: dict, out: Path) -> list[Path]:
    """One metric's figures: against length (per sparsity), against sparsity, pruning time against it."""
    written: list[Path] = []
    prefix = metric.plot_prefix or metric.name
    for (model, label), by_method in sorted(cells.items()):
        dense = by_method.get("dense", {}).get((None, None))
        pruned = {m: {k: c for k, c in by_column.items() if c.finite} for m, by_column in by_method.items()
                  if m != "dense"}
        name = f"{safe_name(model)}_{safe_name(label)}"
        for sparsity in sorted({s for by_column in pruned.values() for s, _ in by_column}, key=_sparsity_key):
            figure = _against_length(plt, metric, model, label, sparsity, pruned, dense, style)
            written += _save(plt, figure, out, f"{prefix}-vs-length_{name}_{safe_name(sparsity)}")
        if pruned:
            written += _save(plt, _against_sparsity(plt, metric, model, label, pruned, dense, style), out,
                             f"{prefix}-vs-sparsity_{name}")
        timed = {m: {k: c for k, c in by_column.items() if (model, m) + k in times} for m, by_column in pruned.items()}
        if any(timed.values()):
            figure = _time_against_metric(plt, metric, model, label, timed, times, dense, style)
            written += _save(plt, figure, out, f"time-vs-{prefix}_{name}")
    return written


def _times(records: list[dict]) -> dict:
    """{(model, method, sparsity, seqlen): (mean total seconds over seeds, any seed contended)}."""
    found = defaultdict(list)
    vary = windows_vary(records)
    for record in records:
        if is_finished(record) and "timings" in record:
            cell = record["cell"]
            found[setting_of(cell, vary)].append(
                (record["timings"]["total"], run_contended(record)))
    return {k: (sum(t for t, _ in v) / len(v), any(c for _, c in v)) for k, v in found.items()}


def _against_length(plt, metric, model, label, sparsity, pruned, dense, style):
    """Perplexity against calibration length at one sparsity; methods nudged apart so bars do not overlap."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    methods = [m for m in sorted(pruned) if any(s == sparsity for s, _ in pruned[m])]
    lengths = sorted({seqlen for m in methods for s, seqlen in pruned[m] if s == sparsity})
    designs = False
    for index, method in enumerate(methods):
        points = sorted((seqlen, cell) for (s, seqlen), cell in pruned[method].items() if s == sparsity)
        nudge = 2 ** (0.05 * (index - (len(methods) - 1) / 2))
        for number, (series, line) in enumerate(_length_series(points)):
            designs |= line != "-"
            errors = list(zip(*[_error(c) for _, c in series]))
            axes.errorbar([seqlen * nudge for seqlen, _ in series], [c.value for _, c in series], yerr=errors,
                          capsize=3, linewidth=1.2, markersize=5, linestyle=line, zorder=3,
                          label=method if number == 0 else None, **style[method])
    _dense_line(axes, dense)
    axes.set_xscale("log", base=2)
    lengths = sorted({int(length) for length in lengths})
    axes.set_xticks(lengths, [str(length) for length in lengths])
    axes.xaxis.set_minor_locator(plt.NullLocator())
    axes.set_xlabel("calibration length L (tokens)")
    _metric_axis(axes, label, metric)
    axes.set_title(f"{model}, sparsity {_sparsity_label(sparsity)}")
    _legend_outside(axes)
    note = ("solid: the same window count at every L; dashed: the same token budget (windows x L)" if designs
            else None)
    _caption(figure, [c for m in methods for (s, _), c in pruned[m].items() if s == sparsity], note)
    return figure


def _length_series(points: list[tuple]) -> list[tuple[list[tuple], str]]:
    """A method's (length, cell) points as lines: all of them (solid) when the window count does not vary;
    else one solid line per window count and one dashed line per token budget (windows x L), each over
    two or more lengths (a point can sit on both), and lone points unjoined."""
    if not any(getattr(length, "windows", 0) for length, _ in points):
        return [(points, "-")]
    series, joined = [], set()
    for key, line in ((lambda n: n.windows, "-"), (lambda n: n.windows * int(n), "--")):
        for value in sorted({key(n) for n, _ in points}):
            members = [(n, c) for n, c in points if key(n) == value]
            if len({int(n) for n, _ in members}) > 1:
                series.append((members, line))
                joined.update(n for n, _ in members)
    series += [([(n, c)], "") for n, c in points if n not in joined]
    return series


def _against_sparsity(plt, metric, model, label, pruned, dense, style):
    """One panel per calibration length; unstructured ratios and N:M patterns are separate groups on
    the x axis, never joined by a line (a 2:4 mask is not "more sparse" than 50%)."""
    lengths = sorted({seqlen for by_column in pruned.values() for _, seqlen in by_column})
    order = sorted({s for by_column in pruned.values() for s, _ in by_column}, key=_sparsity_key)
    families = [[s for s in order if parse_sparsity(s).is_n_m == n_m] for n_m in (False, True)]
    figure, panels = plt.subplots(1, len(lengths), figsize=(2.2 + 2.4 * len(lengths), 4.2), sharey=True, squeeze=False)
    for panel, seqlen in zip(panels[0], lengths):
        for index, method in enumerate(sorted(pruned)):
            nudge = 0.06 * (index - (len(pruned) - 1) / 2)
            labelled = False
            for family in families:
                points = [(order.index(s), pruned[method][(s, seqlen)]) for s in family if (s, seqlen) in pruned[method]]
                if not points:
                    continue
                errors = list(zip(*[_error(c) for _, c in points]))
                panel.errorbar([x + nudge for x, _ in points], [c.value for _, c in points], yerr=errors, capsize=3,
                               linewidth=1.2, markersize=5, label=None if labelled else method, zorder=3, **style[method])
                labelled = True
        _dense_line(panel, dense)
        if all(families):  # a rule between the unstructured and the N:M group
            panel.axvline(len(families[0]) - 0.5, color="black", linewidth=0.8, linestyle=":")
        panel.set_xticks(range(len(order)), [_sparsity_label(s) for s in order])
        panel.set_xlim(-0.6, len(order) - 0.4)
        panel.set_xlabel("sparsity")
        panel.set_title(f"L={seqlen}")
    _metric_axis(panels[0][0], label, metric)
    for panel in panels[0][1:]:
        panel.set_ylabel("")
    figure.suptitle(model)
    _legend_outside(panels[0][-1])
    _caption(figure, [c for by_column in pruned.values() for c in by_column.values()])
    return figure


def _time_against_metric(plt, metric, model, label, timed, times, dense, style):
    """Colour is the method, marker shape the sparsity; hollow markers are contended timings."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, NullFormatter

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    order = sorted({s for by_column in timed.values() for s, _ in by_column}, key=_sparsity_key)
    shapes = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(order)}
    contended_any = False
    several = len({seqlen for by_column in timed.values() for _, seqlen in by_column}) > 1
    for method, by_column in sorted(timed.items()):
        for (sparsity, seqlen), cell in sorted(by_column.items(), key=lambda item: (_sparsity_key(item[0][0]), item[0][1])):
            seconds, contended = times[(model, method, sparsity, seqlen)]
            contended_any |= contended
            colour = style[method]["color"]
            axes.errorbar([seconds], [cell.value], yerr=[[e] for e in _error(cell)], marker=shapes[sparsity],
                          color=colour, markerfacecolor="white" if contended else colour, linestyle="none",
                          capsize=2, markersize=6, zorder=3)
            if several:  # which calibration each point is: windows x L where the count varies
                windows = getattr(seqlen, "windows", 0)
                axes.annotate(f"{windows}x{int(seqlen)}" if windows else f"L={seqlen}", (seconds, cell.value),
                              textcoords="offset points", xytext=(4, 3), fontsize=6, color=colour)
    # The Pareto front of pruning time against the metric at each sparsity, over methods and lengths.
    fronts = 0
    for sparsity in order:
        points = [(times[(model, method, s, seqlen)][0], cell.value) for method, by_column in timed.items()
                  for (s, seqlen), cell in by_column.items() if s == sparsity and cell.finite]
        front = [points[i] for i in pareto_front(points, False, metric.higher_is_better)]
        if len(front) > 1:
            axes.plot(*zip(*front), color="black", linestyle="--", linewidth=0.8, zorder=2)
            fronts += 1
    _dense_line(axes, dense)
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("pruning time (s, log scale)")
    _metric_axis(axes, label, metric)
    axes.set_title(model)
    handles = [Patch(color=style[m]["color"], label=m) for m in sorted(timed)]
    handles += [Line2D([], [], color="black", marker=shapes[s], linestyle="none", label=f"sparsity {_sparsity_label(s)}")
                for s in order]
    if contended_any:
        handles.append(Line2D([], [], color="grey", marker="o", markerfacecolor="white", linestyle="none",
                              label="hollow: contended timing"))
    if fronts:
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.8, label="Pareto front (a sparsity)"))
    if dense is not None and dense.finite:
        handles.append(Line2D([], [], color="grey", linestyle="--", label="dense"))
    _legend_outside(axes, handles)
    _caption(figure, [c for by_column in timed.values() for c in by_column.values()])
    return figure


__all__ = ["write_plots"]
