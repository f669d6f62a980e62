"""A model's weights as a user would ship them: dense safetensors, and compressed-tensors' sparse
formats (sparse-bitmask for unstructured sparsity, sparse-24-bitmask for 2:4), each written, read back
and compared weight by weight; which linears are not 2:4 as stored (and so stay bitmask)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .walk import decoder_layers, prunable_linears

BITMASK, SPARSE_24 = "sparse-bitmask", "sparse-24-bitmask"


def is_two_four(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive inputs of every row has at least 2 zeros (hardware 2:4)."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.reshape(weight.shape[0], -1, 4) == 0).sum(-1) >= 2).all())


def prunable_weight_names(model: torch.nn.Module) -> list[str]:
    """State-dict names of the decoder linears' weights (what pruning zeroes)."""
    ids = {id(linear.weight) for layer in decoder_layers(model) for linear in prunable_linears(layer).values()}
    return [name for name, parameter in model.named_parameters() if id(parameter) in ids]


def shared_free_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each storage once (tied embeddings are saved once, as safetensors requires)."""
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        state[name] = tensor.detach().to("cpu").contiguous().clone()
    return state


def _compressors():
    from compressed_tensors.compressors import (
        BitmaskCompressor,
        Sparse24BitMaskCompressor,
    )
    from compressed_tensors.config import BitmaskConfig, Sparse24BitMaskConfig

    return {BITMASK: BitmaskCompressor(config=BitmaskConfig()),
            SPARSE_24: Sparse24BitMaskCompressor(config=Sparse24BitMaskConfig(sparsity_structure="2:4"))}


def compress_state(state: dict[str, torch.Tensor], formats: dict[str, str]) -> dict[str, torch.Tensor]:
    """`state` with each weight named in `formats` replaced by its compressed tensors in that format."""
    compressors = _compressors()
    compressed = {}
    for name, tensor in state.items():
        if name in formats:
            compressed.update(compressors[formats[name]].compress_weight(name.removesuffix(".weight"), tensor))
        else:
            compressed[name] = tensor
    return compressed


def decompress_state(compressed: dict[str, torch.Tensor], formats: dict[str, str]) -> dict[str, torch.Tensor]:
    """The dense state back from `compress_state`'s output."""
    compressors = _compressors()
    prefixes = {name.removesuffix(".weight"): fmt for name, fmt in formats.items()}
    parts: dict[str, dict[str, torch.Tensor]] = {fmt: {} for fmt in compressors}
    state = {}
    for key, tensor in compressed.items():
        prefix = key.rsplit(".", 1)[0]
        if prefix in prefixes:
            parts[prefixes[prefix]][key] = tensor
        else:
            state[key] = tensor
    for fmt, part in parts.items():
        if part:
            state.update(dict(compressors[fmt].decompress_from_state_dict(part)))
    return state


def checkpoint_sizes(model: torch.nn.Module, sparsity: str | None, directory: str | Path | None = None) -> dict:
    """Parameters, non-zero parameters, and the bytes of the dense and the sparse safetensors file.

    With a 2:4 target every decoder linear that is 2:4 as stored goes into sparse-24-bitmask; those that
    are not (RIA's channel reallocation chooses the mask in a permuted input order) are listed and
    stored as sparse-bitmask. Both files are read back; a weight that changes raises.
    """
    from safetensors.torch import load_file, save_file

    state = shared_free_state(model)
    targets = prunable_weight_names(model)
    not_24 = [name for name in targets if not is_two_four(state[name])] if sparsity == "2:4" else []
    formats = {name: (BITMASK if sparsity != "2:4" or name in not_24 else SPARSE_24) for name in targets}
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(directory) if directory else Path(scratch)
        where.mkdir(parents=True, exist_ok=True)
        dense_path, sparse_path = where / "model.safetensors", where / "model-sparse.safetensors"
        save_file(state, str(dense_path), metadata={"format": "pt"})
        _check_same(state, load_file(str(dense_path)), "dense safetensors")
        save_file(compress_state(state, formats), str(sparse_path),
                  metadata={"format": "pt", "compression": "compressed-tensors"})
        _check_same(state, decompress_state(load_file(str(sparse_path)), formats), "compressed-tensors checkpoint")
        dense_bytes, sparse_bytes = dense_path.stat().st_size, sparse_path.stat().st_size
    return {"parameters": sum(t.numel() for t in state.values()),
            "nonzero_parameters": sum(int(t.count_nonzero()) for t in state.values()),
            "dense_bytes": dense_bytes, "sparse_bytes": sparse_bytes, "sparse_to_dense": sparse_bytes / dense_bytes,
            "sparse_format": SPARSE_24 if sparsity == "2:4" else BITMASK,
            "layers_not_2_4": [name.removesuffix(".weight") for name in not_24],
            "linears_2_4": sum(1 for f in formats.values() if f == SPARSE_24), "reloaded_equal": True}


def _check_same(original: dict, reloaded: dict, what: str) -> None:
    if set(original) != set(reloaded):
        raise RuntimeError(f"{what}: tensors {sorted(set(original) ^ set(reloaded))[:3]} lost or added on reload")
    for name, tensor in original.items():
        if not torch.equal(tensor, reloaded[name].to(tensor.dtype)):
            raise RuntimeError(f"{what}: {name} changed on reload")
