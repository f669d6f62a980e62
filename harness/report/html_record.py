"""One page per cell of the static report: every registered metric's values in its record,
configuration, timings, per-layer sparsity (a structured cell: what it removed, parameters before and
after, kept heads and FFN channels per layer, removed layers), provenance, and the command that
reproduces it."""
from __future__ import annotations

import json
import shlex

from ..api.records import STRUCTURED, is_structured_record
from ..api.tables import Cell
from ..metrics.run import registered_metrics
from ..store.results import safe_name
from .html_markup import cell_html, esc, number_cell, page, value_html

# The `--only` keys of `prunebench run` that pick out one cell of a grid.
REPRODUCE_KEYS = ("model", "method", "sparsity", "seqlen", "seed")


def page_path(record: dict) -> str:
    """Where a record's page lies, relative to the site's top folder."""
    return f"cells/{safe_name(record['name'])}.html"


def short_label(record: dict) -> str:
    """`wanda 2:4 L=16 seed 0`, or `dense`: a cell named by what varies in a grid."""
    cell = record.get("cell", {})
    if cell.get("sparsity") is None:
        return str(cell.get("method", record["name"]))
    return f"{cell['method']} {cell['sparsity']} L={cell.get('seqlen')} seed {cell.get('seed')}"


def reproduce_command(record: dict, grid: str = "benchmarks.yaml") -> str:
    """`prunebench run GRID --only model=… --only method=… …`: the grid run restricted to this cell.
    For the dense baseline `--only method=dense` excludes every pruned cell and keeps the baseline."""
    cell = record.get("cell", {})
    argv = ["prunebench", "run", grid]
    for key in REPRODUCE_KEYS:
        if cell.get(key) is not None:
            argv += ["--only", f"{key}={cell[key]}"]
    return shlex.join(argv)


def _section(title: str, content: str, section_id: str) -> str:
    return f'<section id="{section_id}"><h2>{esc(title)}</h2>\n{content}\n</section>'


def _metric_results(record: dict, resamples: int) -> str:
    """Every registered metric's values in the record (`Metric.record_values`): each with its unit, which
    way is better, and its interval or range where it has one."""
    parts = []
    for metric in registered_metrics():
        result = metric.result_of(record)
        if not isinstance(result, dict) or not result:
            continue
        rows = []
        for value, entry in metric.record_values(result, resamples):
            better = "higher" if value.higher_is_better else "lower"
            label = esc(value.label + (f" {value.unit}" if value.unit else ""))
            if entry is None:
                shown = cell_html("diverged" if record.get("status") == "diverged" else "not finite")
            else:
                shown = cell_html(Cell(entry[0], low=entry[1], high=entry[2], scale=value.scale,
                                       decimals=value.decimals))
            rows.append(f'<tr><th scope="row">{label} <span class="arrow" title="{better} is better">'
                        f'{"↑" if value.higher_is_better else "↓"}</span></th>{shown}</tr>')
        if rows:
            parts.append(f'<h3 id="metric-{esc(safe_name(metric.name))}">{esc(metric.name)}</h3>'
                         f'<p class="hint">{esc(metric.description)}.</p>'
                         f'<table class="record"><tbody>{"".join(rows)}</tbody></table>')
    if parts:
        parts.append('<p class="hint">[low, high]: the value\'s 95% interval, or the range the metric reports '
                     "(its spread over repeats).</p>")
    return "".join(parts)


def _timings(record: dict) -> str:
    rows = [(key.replace("_", " "), value, f"{value:.2f} s") for key, value in (record.get("timings") or {}).items()
            if isinstance(value, (int, float))]
    if isinstance(record.get("wall_seconds"), (int, float)):
        rows.append(("wall (the whole cell, with evaluation)", record["wall_seconds"], f"{record['wall_seconds']:.2f} s"))
    for key, name in (("peak_memory_bytes", "peak memory"), ("memory_before_bytes", "memory before")):
        if isinstance(record.get(key), (int, float)):
            rows.append((name, record[key], f"{record[key] / 2**20:.1f} MiB"))
    table = "".join(f'<tr><th scope="row">{esc(name)}</th>{number_cell(value, text)}</tr>' for name, value, text in rows)
    load = f"<h3>Machine load</h3>{value_html(record['load'])}" if record.get("load") else ""
    return (f'<table class="record"><tbody>{table}</tbody></table>' if rows else "") + load


def _layers(record: dict) -> str:
    """Target and measured sparsity of every layer, with a bar for the measured one."""
    measured = (record.get("measured_sparsity") or {}).get("per_layer")
    if not isinstance(measured, list) or not measured:
        return ""
    targets = record.get("layer_targets") or []
    overall = (record.get("measured_sparsity") or {}).get("overall")
    rows = []
    for index, value in enumerate(measured):
        target = targets[index] if index < len(targets) else None
        width = 0.0 if value is None else max(0.0, min(1.0, value)) * 100
        rows.append(f'<tr><th scope="row">{index}</th>{number_cell(target, decimals=4)}{number_cell(value, decimals=4)}'
                    f'<td class="bar-cell"><span class="bar" style="width:{width:.1f}%"></span></td></tr>')
    summary = f"<p>Overall measured sparsity {overall:.4f}.</p>" if isinstance(overall, (int, float)) else ""
    return (summary + '<table class="record layers"><thead><tr><th scope="col">layer</th><th scope="col">target</th>'
            '<th scope="col">measured</th><th scope="col">measured (0 to 1)</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _structure(record: dict) -> str:
    """A structured cell's removal: target and measured share of the prunable parameters removed, the
    parameters before and after, the removed decoder layers, and per layer what it kept (`_kept`)."""
    details = record.get(STRUCTURED)
    if not is_structured_record(record) or not isinstance(details, dict):
        return ""
    rows = []  # (name, number or None, shown)
    try:
        target = float(details.get("sparsity")) * 100
        rows.append(("target: share of the prunable parameters to remove", target, f"{target:g} %"))
    except (TypeError, ValueError):
        pass
    if isinstance(details.get("removed_fraction"), (int, float)):
        removed = details["removed_fraction"] * 100
        rows.append(("removed: share of the prunable parameters", removed, f"{removed:.2f} %"))
    counts = {key: details.get(key) for key in ("prunable_before", "prunable_after", "parameters_before",
                                                "parameters_after")}
    for key, name in (("prunable", "prunable (decoder linear) parameters"), ("parameters", "all parameters")):
        for when in ("before", "after"):
            if isinstance(counts[f"{key}_{when}"], int):
                rows.append((f"{name} {when}", counts[f"{key}_{when}"], f"{counts[f'{key}_{when}']:,}"))
    if isinstance(counts["parameters_after"], int) and isinstance(counts["parameters_before"], int) \
            and counts["parameters_before"]:
        kept = counts["parameters_after"] / counts["parameters_before"] * 100
        rows.append(("parameters kept", kept, f"{kept:.2f} %"))
    if details.get("kinds"):
        rows.append(("structures removed", None, ", ".join(map(str, details["kinds"]))))
    if details.get("allocation") and details.get("kinds") != ["layers"]:  # how heads and channels were spread
        rows.append(("allocation over layers", None, str(details["allocation"])))
    table = "".join(f'<tr><th scope="row">{esc(name)}</th>'
                    + (f"<td>{esc(shown)}</td>" if number is None else number_cell(number, shown)) + "</tr>"
                    for name, number, shown in rows)
    gone = [i for i in details.get("removed_layers") or [] if isinstance(i, int)]
    layers = f"<p>Removed decoder layers ({len(gone)}): {esc(', '.join(map(str, gone)))}.</p>" if gone else \
        "<p>No decoder layer removed.</p>"
    return f'<table class="record"><tbody>{table}</tbody></table>{layers}{_kept(details, gone)}'


def _kept(details: dict, gone: list[int]) -> str:
    """A row per decoder layer of the dense model: the heads and FFN channels it kept (the record lists
    the remaining layers in order) or "removed"; for a method that removes only whole layers, kept or
    removed; and the method's importance score of the layer where it gave one."""
    kept = [k for k in details.get("kept") or [] if isinstance(k, dict)]
    importance = [v if isinstance(v, (int, float)) else None for v in details.get("layer_importance") or []]
    scored = any(v is not None for v in importance)
    if not kept and not scored:  # nothing per layer beyond the removed layers
        return ""
    remaining = iter(kept)
    rows = []
    for index in range(max(len(kept) + len(gone), len(importance))):
        layer = None if index in gone else next(remaining, None)
        if not kept:
            counts = f"<td>{'removed' if index in gone else 'kept'}</td>"
        elif layer is None:
            counts = '<td colspan="2">removed</td>'
        else:
            counts = number_cell(layer.get("heads"), decimals=0) + number_cell(layer.get("channels"), decimals=0)
        score = "" if not scored else number_cell(importance[index], decimals=4) if index < len(importance) else \
            "<td></td>"
        rows.append(f'<tr><th scope="row">{index}</th>{counts}{score}</tr>')
    if kept:
        heads = '<th scope="col">heads kept</th><th scope="col">FFN channels kept</th>'
        hint = "Per decoder layer of the dense model: the attention heads and FFN (MLP intermediate) channels left"
    else:
        heads = '<th scope="col">kept or removed</th>'
        hint = "Per decoder layer of the dense model: kept or removed whole"
    if scored:
        heads += '<th scope="col">importance</th>'
        hint += "; importance: the method's score of the layer" + ("" if kept else " (the lowest-scored go)")
    return (f'<p class="hint">{esc(hint)}.</p><table class="record layers"><thead><tr><th scope="col">layer</th>'
            f"{heads}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _provenance(record: dict) -> str:
    shown = {key: record[key] for key in ("hash", "started", "finished", "schema") if key in record}
    shown["environment"] = record.get("environment") or {}
    if record.get("provenance"):
        shown["provenance"] = record["provenance"]
    return value_html(shown)


def record_page(record: dict, grid: str, resamples: int) -> str:
    """The whole page of one cell."""
    status = record.get("status", "unknown")
    command = reproduce_command(record, grid)
    suite = record.get("cell", {}).get("suite")
    kind = ' <span class="status" title="whole heads, FFN channels or layers removed">structured</span>' \
        if is_structured_record(record) else ""
    body = ['<nav class="back"><a href="../index.html">← leaderboard</a></nav>',
            f"<header><h1>{esc(short_label(record))}</h1>"
            f'<p><code class="name">{esc(record["name"])}</code> <span class="status status-{esc(status)}">'
            f"{esc(status)}</span>{kind}</p></header>", "<main>"]
    if record.get("error"):
        body.append(_section("Error", f"<p>{esc(record['error'])}</p>"
                             f"<details><summary>traceback</summary><pre>{esc(record.get('traceback', ''))}</pre>"
                             "</details>", "error"))
    grid_note = f" (the grid whose suite is <code>{esc(suite)}</code>)" if suite else ""
    runs = "this baseline alone" if record.get("cell", {}).get("sparsity") is None else \
        "this cell and its model's dense baseline"
    body.append(_section("Reproduce", f'<pre class="command"><code>{esc(command)}</code></pre>\n'
                         f"<p>Run from the folder of the grid file{grid_note}. Into a fresh results directory "
                         f"(<code>--results-dir DIR</code>) it runs {runs}; in this one the finished cell is "
                         "skipped unless <code>--force</code> is given.</p>", "reproduce"))
    results = _metric_results(record, resamples)
    if results:
        body.append(_section("Results", results, "results"))
    structure = _structure(record)
    if structure:
        body.append(_section("Structure removed", structure, "structure"))
    body.append(_section("Configuration", value_html(record.get("cell") or {}), "configuration"))
    for title, content, section_id in (("Timings", _timings(record), "timings"),
                                       ("Per-layer sparsity", _layers(record), "layers")):
        if content:
            body.append(_section(title, content, section_id))
    body.append(_section("Provenance", _provenance(record), "provenance"))
    if record.get("notes"):
        body.append(_section("Notes", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in record["notes"]) + "</ul>",
                             "notes"))
    body.append(f'<details class="raw"><summary>The full record (record.json)</summary>'
                f"<pre>{esc(json.dumps(record, indent=2))}</pre></details>")
    body.append("</main>")
    return page(f"{short_label(record)} · prunebench", "\n".join(body), root="../")
