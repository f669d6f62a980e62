"""The report's structured-pruning tables: per model, a row per structured method and target sparsity
(dense first) with the parameters kept, perplexity and zero-shot accuracy with their intervals, and
speed and memory against the dense model with their ranges. Structured cells are ranked only against
each other at the same target, never against unstructured cells (those have their own tables)."""
from __future__ import annotations

from .. import registry
from ..api.metric import DENSE, value_specs
from ..api.records import STRUCTURED, is_structured_record, parameters_kept, run_contended
from ..api.sparsity import parse_sparsity
from ..api.tables import BEST, CONTENDED, DAGGER, TIED, Cell, Table, mark_best
from .generic import mark_ranked, metric_cell
from .grouping import group_settings, interval_notes, seeds_of, spread
from .quality_tables import accuracy_cell, comparer, perplexity_cell

# Metrics whose values a structured row shows: size's checkpoints measure how stored zeros compress,
# and a structured model has none (its parameter count is the table's own column).
EFFICIENCY = ("speed", "memory")
PROTOCOL = ("prunes", "calibration", "propagation", "eval L")  # how each row was made (published tables differ)
FIXED = 5 + len(PROTOCOL)  # columns before the metrics': method, target, removed, params, kept, then PROTOCOL
KIND_NAMES = {"heads": "heads", "channels": "FFN channels", "layers": "layers"}


def structured_tables(records: list[dict], resamples: int) -> list[Table]:
    """One table per model that has structured cells; [] when none has."""
    structured = [r for r in records if is_structured_record(r)]
    models = sorted({r["cell"]["model"] for r in structured})
    dense = [r for r in records if r["cell"]["method"] == DENSE and r["cell"]["model"] in models]
    settings = group_settings(structured + dense)
    return [_model_table(model, {s: runs for s, runs in settings.items() if s[0] == model}, resamples)
            for model in models]


def _model_table(model: str, settings: dict, resamples: int) -> Table:
    pruned = sorted((s for s in settings if s[1] != DENSE),
                    key=lambda s: (parse_sparsity(s[2]).ratio, s[3] or 0, s[1]))
    ordered = [s for s in settings if s[1] == DENSE] + pruned
    runs_of = [r for s in ordered for r in settings[s]]
    several_lengths = len({s[3] for s in pruned}) > 1

    perplexity = registry.get_metric("perplexity")
    columns = [(f"{label} {perplexity.arrow()}", "ppl", _ppl_reader(label, resamples))
               for label in sorted({label for r in runs_of for label in (r.get("perplexity") or {})})]
    tasks = sorted({task for r in runs_of for task, result in (r.get("tasks") or {}).items()
                    if isinstance(result, dict) and "acc" in result})
    if tasks:
        arrow = registry.get_metric("zero-shot").arrow()
        columns += [(f"{t} acc {arrow}", "acc", _accuracy_reader([t], resamples)) for t in tasks]
        if len(tasks) > 1:
            columns.append((f"mean acc {arrow}", "acc", _accuracy_reader(tasks, resamples)))
    known = registry.registered("register_metrics")
    for metric in (known[name].item for name in EFFICIENCY if name in known):
        results = [metric.result_of(r) for r in runs_of if metric.result_of(r)]
        for value in value_specs(metric, results):
            unit = f" {value.unit}" if value.unit else ""
            columns.append((f"{value.label}{unit} {'↑' if value.higher_is_better else '↓'}",
                            value.higher_is_better, _value_reader(metric, value)))
    columns.append(("pruning s ↓", None, _seconds))

    dense_parameters = next((r[STRUCTURED]["parameters_before"] for r in runs_of if is_structured_record(r)), None)
    rows, grid = [], {}
    for setting in ordered:
        runs = settings[setting]
        grid[setting] = [read(runs) for _, _, read in columns]
        rows.append(_label(setting, several_lengths) + _size_cells(runs, dense_parameters) + protocol_cells(runs)
                    + grid[setting])
    for target in {(s[2], s[3]) for s in pruned}:  # rank methods only against others at the same target
        group = [s for s in pruned if (s[2], s[3]) == target]
        for index, (_, kind, _) in enumerate(columns):
            cells = [grid[s][index] for s in group if isinstance(grid[s][index], Cell)]
            if kind in ("ppl", "acc"):
                mark_best(cells, kind == "ppl", comparer(kind, resamples))
            elif kind is not None:  # a timing taken on a loaded machine is never ranked
                mark_ranked([c for c in cells if not c.flag], kind, BEST, TIED)
    headers = ["method", "target", "removed %", "params M", "params kept %", *PROTOCOL] + [c[0] for c in columns]
    older = [note for name in EFFICIENCY if name in known
             for note in [known[name].item.older_versions_note(runs_of)] if note]
    return Table(f"{model}, structured pruning (whole heads, channels or layers removed)", headers, rows,
                 table_notes(rows, columns, resamples) + older)


def _label(setting: tuple, several_lengths: bool) -> list[str]:
    _, method, sparsity, seqlen = setting
    if method == DENSE:
        return [DENSE, ""]
    shown = f"{float(sparsity) * 100:g}%" + (f" L={seqlen}" if several_lengths else "")
    return [method, shown]


def _size_cells(runs: list[dict], dense_parameters: int | None) -> list:
    """Measured share of the prunable parameters removed, parameters left (M), and the share of the
    dense model's parameters kept; the dense row: 0, its own count, 100."""
    if runs[0]["cell"]["method"] == DENSE:
        if dense_parameters is None:
            return ["", "", ""]
        return [Cell(0.0, decimals=1), Cell(dense_parameters, scale=1e-6, decimals=2),
                Cell(1.0, scale=100.0, decimals=1)]
    removed = [(r.get(STRUCTURED) or {}).get("removed_fraction") for r in runs]
    after = [(r.get(STRUCTURED) or {}).get("parameters_after") for r in runs]
    kept = [parameters_kept(r) for r in runs]
    seeds = seeds_of(runs)
    return [Cell(*spread(values), seeds=seeds, scale=scale, decimals=decimals) if None not in values else ""
            for values, scale, decimals in ((removed, 100.0, 1), (after, 1e-6, 2), (kept, 100.0, 1))]


def protocol_cells(runs: list[dict]) -> list[str]:
    """What the row's method removed, its calibration (source windows x length), whether each layer was
    scored on dense or pruned inputs, and the perplexity evaluation's window length(s)."""
    record = runs[0]
    lengths = "/".join(str(v["window_length"]) for _, v in sorted((record.get("perplexity") or {}).items())
                       if isinstance(v, dict) and "window_length" in v)
    if not is_structured_record(record):
        return ["", "", "", lengths]
    details, cell = record[STRUCTURED], record["cell"]
    prunes = " + ".join(KIND_NAMES.get(k, k) for k in details.get("kinds", []))
    propagation = str(details.get("propagate", ""))
    # The record's wording carries its reason in parentheses; the column keeps the choice.
    propagation = "dense (gradients)" if propagation.startswith("not applicable") else propagation.split(" (")[0]
    calibration = f"{cell.get('calibration_dataset')} {details.get('nsamples')}x{details.get('seqlen')}"
    return [prunes, calibration, propagation, lengths]


def _ppl_reader(label: str, resamples: int):
    def read(runs: list[dict]):
        return perplexity_cell(runs, label, resamples) or ""
    return read


def _accuracy_reader(tasks: list[str], resamples: int):
    def read(runs: list[dict]):
        if not all(r.get("tasks") for r in runs):
            return ""
        return accuracy_cell(runs, tasks, "acc", resamples) or ""
    return read


def _value_reader(metric, value):
    """A metric's value over seeds, with its range (speed: over repeats), as every metric table shows it."""
    def read(runs: list[dict]):
        return metric_cell(metric, value, runs)
    return read


def _seconds(runs: list[dict]):
    values = [(r.get("timings") or {}).get("total") for r in runs]
    if not values or None in values:
        return ""
    return Cell(*spread(values), seeds=seeds_of(runs), flag=CONTENDED if any(map(run_contended, runs)) else "")


def table_notes(rows: list, columns: list, resamples: int) -> list[str]:
    by_kind: dict = {}  # "ppl", "acc", True / False (a speed or memory value, higher / lower better), None
    for i, (_, kind, _) in enumerate(columns):
        by_kind.setdefault(kind, []).extend(row[FIXED + i] for row in rows)
    notes = ["target: the share of the prunable (decoder linear) parameters asked for; removed: the share "
             "actually removed (whole heads, channels and layers make it coarse); params: the pruned model's "
             "parameters, embeddings included, and their share of the dense model's.",
             "prunes: the structures the method removes; calibration: source windows x tokens; propagation: "
             "whether each layer was scored on the dense model's activations or on those of the layers already "
             "pruned; eval L: the perplexity windows' length (the FLAP / LLM-Pruner family evaluates at 128, "
             "CFSP at 1024: perplexities at different L are not comparable)."]
    notes += [f"perplexity, {n}" for n in interval_notes(by_kind.get("ppl", []), "windows", resamples)]
    notes += [f"accuracy, {n}" for n in interval_notes(by_kind.get("acc", []), "items", resamples)]
    if any(isinstance(c, Cell) and c.has_interval for kind in (True, False) for c in by_kind.get(kind, [])):
        notes.append("speed and memory [low, high]: the range over the metric's repeats (speedup: dense seconds / "
                     "pruned seconds per repeat, measured in the same process, interleaved).")
    if any(isinstance(c, Cell) and c.flag for row in rows for c in row):
        notes.append("*: timed while other work loaded the machine (its load record); never ranked.")
    marks = {c.mark for row in rows for c in row if isinstance(c, Cell)}
    if marks:
        notes.append(f"**bold**: the best method at its target sparsity, shown better than the runner-up (paired "
                     f"95% interval for perplexity and accuracy, non-overlapping ranges for speed and memory); "
                     f"{DAGGER}: tied with the best. Structured rows are never ranked against unstructured ones.")
    return notes
