"""Paper-style tables from a results directory: perplexity and pruning time, best values marked."""
from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from prunebench.errors import UsageError
from prunebench.sparsity import parse_sparsity
from prunebench.store import ResultsStore

FORMATS = ("github", "latex", "csv")

# REFERENCE.md section 5: WikiText-2 perplexity (Wanda's code, 4096-token windows for LLaMA-2).
PUBLISHED = {
    "llama-2-7b": {"dense": 5.12, ("magnitude", "0.5"): 14.89, ("sparsegpt", "0.5"): 6.51, ("wanda", "0.5"): 6.42,
                   ("magnitude", "4:8"): 16.48, ("sparsegpt", "4:8"): 8.12, ("wanda", "4:8"): 7.97,
                   ("magnitude", "2:4"): 54.59, ("sparsegpt", "2:4"): 10.17, ("wanda", "2:4"): 11.02},
    "llama-2-13b": {"dense": 4.57, ("magnitude", "0.5"): 6.37, ("sparsegpt", "0.5"): 5.63, ("wanda", "0.5"): 5.56,
                    ("magnitude", "4:8"): 6.76, ("sparsegpt", "4:8"): 6.60, ("wanda", "4:8"): 6.55,
                    ("magnitude", "2:4"): 8.33, ("sparsegpt", "2:4"): 8.32, ("wanda", "2:4"): 8.27},
    "llama-2-70b": {"dense": 3.12, ("magnitude", "0.5"): 4.98, ("sparsegpt", "0.5"): 3.98, ("wanda", "0.5"): 3.98,
                    ("magnitude", "4:8"): 5.58, ("sparsegpt", "4:8"): 4.59, ("wanda", "4:8"): 4.47,
                    ("magnitude", "2:4"): 6.33, ("sparsegpt", "2:4"): 5.40, ("wanda", "2:4"): 5.16},
    "llama-7b": {"dense": 5.68, ("wanda", "0.5"): 7.26, ("sparsegpt", "0.5"): 7.22, ("magnitude", "0.5"): 17.29},
    "meta-llama-3-8b": {"dense": 6.14, ("magnitude", "0.5"): 2499.39, ("wanda", "0.5"): 10.82, ("sparsegpt", "0.5"): 9.40,
                        ("ria", "0.5"): 9.34, ("wanda", "2:4"): 24.18, ("sparsegpt", "2:4"): 16.26, ("ria", "2:4"): 23.08},
}


def published_for(model_source: str) -> dict | None:
    """Published numbers whose model matches the source's last path part, e.g. meta-llama/Llama-2-7b-hf."""
    name = model_source.rstrip("/").split("/")[-1].lower().removesuffix("-hf")
    return PUBLISHED.get(name)


def _fmt(value: float | None, best: bool, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "diverged" if value is not None or fmt != "csv" else ""
    text = f"{value:.2f}"
    if best and fmt == "github":
        return f"**{text}**"
    if best and fmt == "latex":
        return f"\\textbf{{{text}}}"
    return text


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return statistics.fmean(finite) if len(finite) == len(values) else float("inf")


def collect(records: list[dict]) -> dict:
    """Group finished records: {(model, eval label): {method: {(sparsity, seqlen): [ppl, ...]}}}."""
    grouped: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in records:
        if record.get("status") not in ("ok", "diverged"):
            continue
        cell = record["cell"]
        for label, result in (record.get("perplexity") or {}).items():
            value = result.get("perplexity")
            value = float("inf") if value is None else value
            grouped[(cell["model"], label)][cell["method"]][(cell.get("sparsity"), cell.get("seqlen"))].append(value)
    return grouped


def _column_order(columns: set) -> list:
    def key(column):
        sparsity, seqlen = column
        ratio = parse_sparsity(sparsity).ratio if sparsity else 0.0
        return (":" in (sparsity or ""), ratio, seqlen or 0)

    return sorted(columns, key=key)


def _column_name(column) -> str:
    sparsity, seqlen = column
    shown = f"{float(sparsity) * 100:g}%" if sparsity and ":" not in sparsity else sparsity
    return f"{shown} L={seqlen}"


def perplexity_tables(records: list[dict], fmt: str = "github") -> list[tuple[str, str]]:
    """One table per model and evaluation: methods as rows (dense first), (sparsity, L) as columns."""
    if fmt not in FORMATS:
        raise UsageError(f"Unknown format '{fmt}'. Use one of: {', '.join(FORMATS)}.")
    sources = {r["cell"]["model"]: r["cell"].get("model_source", "") for r in records}
    tables = []
    for (model, label), by_method in sorted(collect(records).items()):
        columns = _column_order({c for cells in by_method.values() for c in cells if c != (None, None)})
        dense = _mean(by_method.get("dense", {}).get((None, None), []))
        published = published_for(sources.get(model, "")) if label.startswith("wikitext2") else None
        published_columns = sorted({key[1] for key in (published or {}) if isinstance(key, tuple)})
        means = {m: {c: _mean(v) for c, v in cells.items()} for m, cells in by_method.items() if m != "dense"}
        best = {c: min((m[c] for m in means.values() if m.get(c) is not None and math.isfinite(m[c])), default=None)
                for c in columns}
        headers = ["method"] + [f"{_column_name(c)} ↓" for c in columns] + [f"published {s} ↓" for s in published_columns]
        rows = [["dense"] + [_fmt(dense, False, fmt)] * len(columns)
                + [_fmt(published.get("dense"), False, fmt) if published else ""] * len(published_columns)]
        for method in sorted(means):
            row = [method] + [_fmt(means[method].get(c), means[method].get(c) == best[c], fmt) for c in columns]
            row += [_fmt(published.get((method, s)), False, fmt) if published and (method, s) in published else ""
                    for s in published_columns]
            rows.append(row)
        title = f"{model}, {label} perplexity (lower is better)"
        tables.append((title, _render(rows, headers, fmt)))
    return tables


def task_tables(records: list[dict], fmt: str = "github") -> list[tuple[str, str]]:
    """Zero-shot accuracy beside perplexity: one table per model, a row per method and setting."""
    rows_by_model: dict = defaultdict(list)
    for record in records:
        if record.get("status") in ("ok", "diverged") and record.get("tasks"):
            rows_by_model[record["cell"]["model"]].append(record)
    tables = []
    for model, model_records in sorted(rows_by_model.items()):
        ppl_labels = sorted({label for r in model_records for label in r.get("perplexity", {})})
        task_names = sorted({t for r in model_records for t in r["tasks"] if t != "mean_acc"})
        metrics = [(t, m) for t in task_names for m in ("acc", "acc_norm")
                   if any(m in (r["tasks"].get(t) or {}) for r in model_records)]
        columns = [("ppl", label) for label in ppl_labels] + metrics + [("mean", "acc")]

        def value(record, column):
            kind, key = column
            if kind == "ppl":
                found = (record.get("perplexity") or {}).get(key, {}).get("perplexity")
                return float("inf") if found is None and key in (record.get("perplexity") or {}) else found
            if kind == "mean":
                return record["tasks"].get("mean_acc")
            return (record["tasks"].get(kind) or {}).get(key)

        def row_label(record):
            cell = record["cell"]
            return "dense" if cell["method"] == "dense" else f"{cell['method']} {cell['sparsity']} L={cell['seqlen']}"

        ordered = sorted(model_records, key=lambda r: (r["cell"]["method"] != "dense", row_label(r)))
        pruned = [r for r in ordered if r["cell"]["method"] != "dense"]
        best = {}
        for column in columns:
            values = [v for v in (value(r, column) for r in pruned) if v is not None and math.isfinite(v)]
            best[column] = (min if column[0] == "ppl" else max)(values) if values else None
        headers = ["method"] + [f"{k} ↓" if kind == "ppl" else ("mean acc ↑" if kind == "mean" else f"{kind} {k} ↑")
                                for kind, k in columns]
        rows = []
        for record in ordered:
            is_pruned = record["cell"]["method"] != "dense"
            rows.append([row_label(record)] + [
                _fmt_metric(value(record, c), is_pruned and value(record, c) == best[c], fmt, c[0] != "ppl") for c in columns
            ])
        tables.append((f"{model}, zero-shot accuracy (lm-eval, acc) beside perplexity", _render(rows, headers, fmt)))
    return tables


def _fmt_metric(value, best: bool, fmt: str, accuracy: bool) -> str:
    if accuracy and value is not None:
        return _fmt(value * 100, best, fmt)  # accuracies in percent, as papers print them
    return _fmt(value, best, fmt)


def timing_table(records: list[dict], fmt: str = "github") -> tuple[str, str] | None:
    """Total pruning seconds per method (rows) and setting (columns), fastest marked."""
    times: dict = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.get("status") in ("ok", "diverged") and "timings" in record:
            cell = record["cell"]
            times[f"{cell['model']} / {cell['method']}"][(cell["sparsity"], cell["seqlen"])].append(record["timings"]["total"])
    if not times:
        return None
    columns = _column_order({c for cells in times.values() for c in cells})
    means = {m: {c: statistics.fmean(v) for c, v in cells.items()} for m, cells in times.items()}
    best = {c: min((m[c] for m in means.values() if c in m), default=None) for c in columns}
    headers = ["model / method"] + [f"{_column_name(c)} s ↓" for c in columns]
    rows = [[m] + [_fmt(means[m].get(c), means[m].get(c) == best[c], fmt) for c in columns] for m in sorted(means)]
    return "Pruning time, seconds (calibration forward + score/mask + update; lower is better)", _render(rows, headers, fmt)


def _render(rows: list, headers: list, fmt: str) -> str:
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([h.replace(" ↓", "") for h in headers])
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "latex":
        return tabulate(rows, headers=[h.replace("↓", "$\\downarrow$").replace("%", "\\%") for h in headers],
                        tablefmt="latex_raw")
    return tabulate(rows, headers=headers, tablefmt="github")


def write_report(results_dir: "str | Path", fmt: str = "github", out: "str | Path | None" = None) -> str:
    """Render every table (printed and written to `out`) and draw the plots; returns the text."""
    store = ResultsStore(results_dir)
    records = store.records()
    if not records:
        raise UsageError(f"No results in {results_dir}; run 'prunebench run' first.")
    out = Path(out) if out else Path(results_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections = perplexity_tables(records, fmt) + task_tables(records, fmt)
    timing = timing_table(records, fmt)
    if timing:
        sections.append(timing)
    suffix = {"github": "md", "latex": "tex", "csv": "csv"}[fmt]
    if fmt == "csv":
        for index, (title, table) in enumerate(sections):
            (out / f"table-{index + 1}.csv").write_text(table)
        text = "\n".join(f"# {title}\n{table}" for title, table in sections)
    else:
        text = "\n\n".join(f"{title}\n\n{table}" for title, table in sections) + "\n"
        (out / f"tables.{suffix}").write_text(text)
    from prunebench.plots import write_plots

    write_plots(records, out)
    return text
