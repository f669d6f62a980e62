"""Coupled structures of a decoder layer (GQA-aware attention heads, FFN channels) and their physical
removal into smaller nn.Linear modules.

An attention unit is one key/value head with the group of query heads that share it: its q/k/v
output rows and its o_proj input columns. Removing a lone query head would leave groups of unequal
size, which grouped-query attention cannot express, so a key/value group is the smallest unit. An
FFN channel is one gate/up output row and the matching down_proj input column.
"""
from __future__ import annotations

import torch
from torch import nn

from ..api.errors import UsageError
from ..api.structured import ATTENTION_NAMES, MLP_NAMES, LayerStructure
from .walk import decoder_layers


def read_structure(index: int, layer: nn.Module) -> LayerStructure:
    """The coupled structures of one decoder layer, or a one-line UsageError if they cannot be read."""
    attention = getattr(layer, "self_attn", None)
    mlp = getattr(layer, "mlp", None)
    family = type(layer).__name__
    if attention is None or mlp is None or not all(isinstance(getattr(attention, n, None), nn.Linear) for n in ATTENTION_NAMES) \
            or not all(isinstance(getattr(mlp, n, None), nn.Linear) for n in MLP_NAMES):
        raise UsageError(f"Cannot read the head layout of {family} (layer {index}): structured pruning needs "
                         "self_attn.q/k/v/o_proj and mlp.gate/up/down_proj (LLaMA-shaped families).")
    head_dim = getattr(attention, "head_dim", None)
    groups = getattr(attention, "num_key_value_groups", None)
    q, k, v, o = (getattr(attention, n) for n in ATTENTION_NAMES)
    if not head_dim or not groups or k.out_features % head_dim or v.out_features != k.out_features \
            or q.out_features != k.out_features * groups or o.in_features != q.out_features:
        raise UsageError(f"Cannot read the head layout of {family} (layer {index}): head_dim={head_dim}, "
                         f"groups={groups}, q/k/v/o widths {q.out_features}/{k.out_features}/{v.out_features}/{o.in_features}.")
    gate, up, down = (getattr(mlp, n) for n in MLP_NAMES)
    if not gate.out_features == up.out_features == down.in_features:
        raise UsageError(f"Cannot read the FFN layout of {family} (layer {index}): gate/up/down widths differ.")
    return LayerStructure(index, layer, attention, mlp, int(head_dim), int(groups))


def read_structures(model: nn.Module) -> list[LayerStructure]:
    """Every decoder layer's coupled structures."""
    return [read_structure(index, layer) for index, layer in enumerate(decoder_layers(model))]


def _sliced(linear: nn.Linear, rows: torch.Tensor | None = None, columns: torch.Tensor | None = None) -> nn.Linear:
    """A new, smaller nn.Linear holding the kept rows (outputs) and columns (inputs)."""
    weight = linear.weight.data
    if rows is not None:
        weight = weight.index_select(0, rows.to(weight.device))
    if columns is not None:
        weight = weight.index_select(1, columns.to(weight.device))
    smaller = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                        device=weight.device, dtype=weight.dtype)
    smaller.weight.data = weight.contiguous()
    if linear.bias is not None:
        bias = linear.bias.data
        smaller.bias.data = (bias.index_select(0, rows.to(bias.device)) if rows is not None else bias).clone()
    return smaller


def _expand(units: torch.Tensor, width: int) -> torch.Tensor:
    """Indices of every row of the kept units, each `width` rows wide."""
    return (units.reshape(-1, 1) * width + torch.arange(width)).reshape(-1)


def keep_heads(structure: LayerStructure, kept: torch.Tensor) -> None:
    """Keep only the key/value groups `kept` (sorted indices) and their query heads and o_proj columns."""
    kept = kept.sort().values.cpu()
    attention = structure.attention
    q_rows = _expand(kept, structure.head_dim * structure.groups)
    kv_rows = _expand(kept, structure.head_dim)
    attention.q_proj = _sliced(attention.q_proj, rows=q_rows)
    attention.k_proj = _sliced(attention.k_proj, rows=kv_rows)
    attention.v_proj = _sliced(attention.v_proj, rows=kv_rows)
    attention.o_proj = _sliced(attention.o_proj, columns=q_rows)


def keep_channels(structure: LayerStructure, kept: torch.Tensor) -> None:
    """Keep only the FFN channels `kept`: gate/up rows and down_proj columns."""
    kept = kept.sort().values.cpu()
    mlp = structure.mlp
    mlp.gate_proj = _sliced(mlp.gate_proj, rows=kept)
    mlp.up_proj = _sliced(mlp.up_proj, rows=kept)
    mlp.down_proj = _sliced(mlp.down_proj, columns=kept)


def keep_layers(model: nn.Module, kept: list[int]) -> None:
    """Keep only the decoder layers `kept`; renumber their cache indices and shorten the config."""
    layers = decoder_layers(model)
    kept = sorted(kept)
    config = model.config
    for index in sorted(set(range(len(layers))) - set(kept), reverse=True):
        del layers[index]  # ModuleList renumbers its children; the container object stays the model's
    survivors = list(layers)
    for new_index, layer in enumerate(survivors):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index  # the KV cache is indexed by position in the stack
    config.num_hidden_layers = len(survivors)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in kept]


def prunable_parameters(model: nn.Module) -> int:
    """Weights and biases of every decoder-layer linear (what structured sparsity is a fraction of)."""
    return sum(p.numel() for layer in decoder_layers(model) for m in layer.modules()
               if isinstance(m, nn.Linear) for p in m.parameters(recurse=False))


def sync_config(model: nn.Module) -> bool:
    """Make the config describe the pruned layers; True when every layer has the same shape and no
    bias the family's config cannot say (then the model saves as a plain checkpoint of its family)."""
    shapes = [s.shape() for s in read_structures(model)]
    config = model.config
    first = shapes[0]
    uniform = all(s == first for s in shapes) and not first["o_proj_bias"] and not first["down_proj_bias"]
    config.head_dim = read_structure(0, decoder_layers(model)[0]).head_dim  # fixed: heads may change
    if uniform:
        config.num_attention_heads = first["num_attention_heads"]
        config.num_key_value_heads = first["num_key_value_heads"]
        config.intermediate_size = first["intermediate_size"]
        if hasattr(config, "layer_shapes"):
            del config.layer_shapes
    else:
        config.layer_shapes = shapes
    return uniform
