"""A structured grid cell: heads, FFN channels or decoder layers are removed physically, so shapes
change and the session's dense weights cannot be restored in place as an unstructured cell's are.
The cell prunes a copy of the dense model instead, and its metrics measure that copy."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from prunebench.config import BenchmarkConfig
    from prunebench.grid import Cell

STRUCTURED = "structured"  # a record's "kind"
# StructuredReport fields kept at the top of the record, where unstructured records have them too
# (the timing tables, the run line and the cell pages read them there).
TOP_LEVEL = ("timings", "peak_memory_bytes", "memory_before_bytes", "notes")


def is_structured_cell(cell: Cell) -> bool:
    return cell.method is not None and cell.method.structured


def is_structured_record(record: dict) -> bool:
    return record.get("kind") == STRUCTURED


def prune_structured_copy(cell: Cell, session, config: BenchmarkConfig, device: torch.device,
                          progress: bool) -> tuple[dict, nn.Module]:
    """A pruned copy of the session's dense model and the pruning part of the cell's record: its timings
    and memory, and under "structured" the report (parameters before and after, removed fraction of the
    prunable parameters, kept heads and channels per layer, removed layers, layer importances)."""
    from prunebench.structured_engine import structured_prune
    from prunebench.walk import on_device

    session.restore_dense()  # the last cell may have been an unstructured one, pruned in place
    model = copy.deepcopy(session.model)
    calibration = session.calibration_tokens(cell, config)
    # Gradient methods (LLM-Pruner, SAAP) run whole-model backwards: the copy goes to the device whole.
    with on_device(model, device):
        report = structured_prune(model, cell.method.method, cell.sparsity, calibration, batch_size=config.batch_size,
                                  device=device, progress=progress, **cell.method.args)
    details = report.to_dict()
    record = {"kind": STRUCTURED, **{key: details.pop(key) for key in TOP_LEVEL}, STRUCTURED: details}
    return record, model


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
