"""What the parity scripts need to run an authors' pruning loop as it is: import their package from a
checkout, and let their decoder-layer calls (hidden states, attention_mask, position_ids) work with
transformers >= 4.48, which expects the caller to pass the rotary position embeddings."""
from __future__ import annotations

import importlib
import sys

import torch


def import_authors(checkout: str, module: str):
    """`module` (e.g. "lib.prune") from the authors' checkout folder."""
    sys.path.insert(0, checkout)
    return importlib.import_module(module)


def with_position_embeddings(model: torch.nn.Module) -> None:
    """Each decoder layer computes its rotary embeddings from position_ids when the caller gives none."""
    rotary = model.model.rotary_emb
    for layer in model.model.layers:
        def forward(hidden, *rest, attention_mask=None, position_ids=None, _original=layer.forward, **kwargs):
            if position_ids is None:
                position_ids = torch.arange(hidden.shape[1]).unsqueeze(0)
            kwargs.setdefault("position_embeddings", rotary(hidden, position_ids))
            return _original(hidden, *rest, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        layer.forward = forward
