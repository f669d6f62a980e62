"""The record schema: what a finished cell's record.json holds, its constants and its accessors.

A record is a JSON mapping. The driver writes its header (name, hash, base_hash, evaluation_metrics,
cell, provenance, seed); the cell adds what it measured (timings, peak_memory_bytes, notes,
measured_sparsity, or for a structured cell kind and structured; every metric's result under
metrics[name] or its own record_key), then status and the load it ran under. A metric's `tables`
receives records, so their reading lives here, beside the other types a plugin receives."""
from __future__ import annotations

FINISHED = ("ok", "diverged")  # statuses of a cell whose numbers count
DENSE, UNSTRUCTURED, STRUCTURED = "dense", "unstructured", "structured"  # the kinds of cell (a record's "kind")
# StructuredReport fields kept at the top of the record, where unstructured records have them too
# (the timing tables, the run line and the cell pages read them there).
TOP_LEVEL = ("timings", "peak_memory_bytes", "memory_before_bytes", "notes")


def is_finished(record: dict | None) -> bool:
    return bool(record) and record.get("status") in FINISHED


def is_structured_record(record: dict) -> bool:
    return record.get("kind") == STRUCTURED


def unstructured_records(records: list[dict]) -> list[dict]:
    """The records of dense and unstructured cells (what every table and plot but the structured ones show)."""
    return [r for r in records if not is_structured_record(r)]


def pruned_layout(record: dict):
    """What a re-pruned cell must reproduce of its record: the kept heads and channels per layer and the
    removed layers of a structured cell, the per-layer measured sparsity of an unstructured one."""
    if is_structured_record(record):
        details = record.get(STRUCTURED) or {}
        return {"kept": details.get("kept"), "removed_layers": details.get("removed_layers")}
    return (record.get("measured_sparsity") or {}).get("per_layer")


def parameters_kept(record: dict) -> float | None:
    """The fraction of the dense model's parameters a structured cell's model has (embeddings included)."""
    details = record.get(STRUCTURED) or {}
    before, after = details.get("parameters_before"), details.get("parameters_after")
    return after / before if before and after is not None else None


def run_contended(record: dict) -> bool:
    """Whether the cell's own run (its pruning and first metrics) shared the machine with other work."""
    return bool(record.get("contended", (record.get("load") or {}).get("contended", False)))


def measured_contended(record: dict, metric_name: str) -> bool:
    """Whether the run that measured this metric of the record shared the machine with other work:
    the extension that added the metric, else the cell's own run."""
    for extension in reversed(record.get("extensions") or []):
        if metric_name in extension.get("metrics", []):
            return bool((extension.get("load") or {}).get("contended", False))
    return run_contended(record)


# Records run under a method name that a later release gave to another reading: (name, method_version
# recorded) -> the name the reading has now. Tables and pages show the reading's present name, so an
# old record never passes for the authors' method.
RENAMED_READINGS = {("cfsp", None): "cfsp-normalized", ("saap", None): "saap-standin"}


def with_reading_names(records: list[dict]) -> list[dict]:
    """The records, those of a renamed reading relabelled (shallow copies: the store's files are untouched)."""
    shown = []
    for record in records:
        cell = record.get("cell") or {}
        key = (cell.get("method"), (record.get("provenance") or {}).get("method_version"))
        if key in RENAMED_READINGS:
            record = {**record, "cell": {**cell, "method": RENAMED_READINGS[key], "recorded_as": cell["method"]}}
        shown.append(record)
    return shown
