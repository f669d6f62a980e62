"""A structured grid cell: heads, FFN channels or decoder layers are removed physically, so shapes
change and the session's dense weights cannot be restored in place as an unstructured cell's are.
The cell prunes a copy of the dense model instead, and its metrics measure that copy."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from ..api.records import STRUCTURED, TOP_LEVEL
from ..models.walk import on_device
from ..pruning.structured_engine import structured_prune

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .cells import Cell
    from .config import BenchmarkConfig


def is_structured_cell(cell: Cell) -> bool:
    return cell.method is not None and cell.method.structured


def prune_structured_copy(cell: Cell, session, config: BenchmarkConfig, device: torch.device,
                          progress: bool) -> tuple[dict, nn.Module]:
    """A pruned copy of the session's dense model and the pruning part of the cell's record: its timings
    and memory, and under "structured" the report (parameters before and after, removed fraction of the
    prunable parameters, kept heads and channels per layer, removed layers, layer importances)."""
    session.restore_dense()  # the last cell may have been an unstructured one, pruned in place
    model = copy.deepcopy(session.model)
    calibration = session.calibration_tokens(cell, config)
    # Gradient methods (LLM-Pruner, SAAP) run whole-model backwards: the copy goes to the device whole.
    with on_device(model, device):
        report = structured_prune(model, cell.method.method, cell.sparsity, calibration, batch_size=config.batch_size,
                                  device=device, propagate=cell.method.propagate, progress=progress, **cell.method.args)
    details = report.to_dict()
    record = {"kind": STRUCTURED, **{key: details.pop(key) for key in TOP_LEVEL}, STRUCTURED: details}
    return record, model
