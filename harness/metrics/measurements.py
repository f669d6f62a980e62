"""Size, memory and speed of a model relative to another measured in the same process: parameters,
peak memory of a forward, prefill tokens/s at the evaluation window length and decode tokens/s,
interleaved, with warm-up and repeats; sparse execution paths (torch CSR on CPU, 2:4 semi-structured
on CUDA) as model copies to time beside the dense-format one."""
from __future__ import annotations

import copy
import gc
import os
import statistics
import sys
import time
from collections.abc import Mapping
from contextlib import contextmanager

import torch
from torch import nn

from ..models.sparse_checkpoint import is_two_four
from ..models.walk import decoder_layers, prunable_linears

# References to None held for torch's memory profile (peak_forward_bytes), which drops some it never took.
_NONE_REFERENCES: list[None] = []


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def prefill_seconds(model: nn.Module, tokens: torch.Tensor) -> float:
    """One forward over `tokens` (batch x length) without a cache: the evaluation forward."""
    _synchronize(tokens)
    start = time.perf_counter()
    model(input_ids=tokens, use_cache=False)
    _synchronize(tokens)
    return time.perf_counter() - start


@torch.no_grad()
def decode_seconds(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    """Greedy decoding of `new_tokens` after `prompt` with the KV cache; only the decode steps are timed."""
    output = model(input_ids=prompt, use_cache=True)
    token = output.logits[:, -1:].argmax(-1)
    _synchronize(prompt)
    start = time.perf_counter()
    for _ in range(new_tokens):
        output = model(input_ids=token, use_cache=True, **_cache_of(output))
        token = output.logits[:, -1:].argmax(-1)
    _synchronize(prompt)
    return time.perf_counter() - start


def _synchronize(tokens: torch.Tensor) -> None:
    """CUDA runs asynchronously: wait for queued kernels so the clock measures them."""
    if tokens.device.type == "cuda":
        torch.cuda.synchronize(tokens.device)


def _cache_of(output) -> dict:
    """The KV cache to pass on, under the name this transformers version uses (cache, past_key_values)."""
    return {"cache": output["cache"]} if "cache" in output else {"past_key_values": output.past_key_values}


def _summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1],
            "stdev": statistics.stdev(ordered) if len(ordered) > 1 else 0.0, "samples": samples}


def measure_speed(models: Mapping[str, nn.Module], tokens: torch.Tensor, *, repeats: int = 5, warmup: int = 1,
                  decode_tokens: int = 32, decode_batches: tuple[int, ...] = (1, 4), prompt_length: int = 64,
                  settle: bool = True) -> dict:
    """Prefill and decode throughput of each model, runs interleaved model by model in every repeat.

    Interleaving puts each model under the same background load, so the per-repeat ratio to the
    first model (the reference) is paired; its median and range are reported with the raw seconds.
    `tokens` is one sequence of at least the prefill length (its length is the prefill length).
    """
    length = tokens.numel()
    prefill = tokens.reshape(1, -1)
    cases = {"prefill": (prefill, length)}
    for batch in decode_batches:
        cases[f"decode_b{batch}"] = (prefill[:, :prompt_length].repeat(batch, 1), decode_tokens * batch)
    seconds: dict[str, dict[str, list[float]]] = {name: {case: [] for case in cases} for name in models}

    def run(model, case, inputs) -> float:
        return prefill_seconds(model, inputs) if case == "prefill" else decode_seconds(model, inputs, decode_tokens)

    for repeat in range(warmup + repeats):
        for case, (inputs, produced) in cases.items():
            for name, model in models.items():
                # An untimed run of the same model and case first: a run right after another model's
                # carries that model's cache and allocator state (Gemma 3 270M: prefill 12% slower
                # right after the CSR model's decode, whichever model it was).
                if settle:
                    run(model, case, inputs)
                elapsed = run(model, case, inputs)
                if repeat >= warmup:
                    seconds[name][case].append(elapsed)
    reference = next(iter(models))
    result = {"threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup, "prefill_length": length,
              "decode_tokens": decode_tokens, "prompt_length": prompt_length,
              "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "models": {}}
    for name in models:
        entry = {}
        for case, (_, produced) in cases.items():
            own = seconds[name][case]
            ratios = [r / o for r, o in zip(seconds[reference][case], own)]  # > 1: faster than the reference
            entry[case] = {"seconds": _summary(own), "tokens_per_second": produced / statistics.median(own),
                           "speedup": _summary(ratios)}
        result["models"][name] = entry
    return result


def peak_forward_bytes(model: nn.Module, tokens: torch.Tensor) -> int:
    """Peak bytes held by torch's allocator during one forward over `tokens` (weights included).

    CUDA: the allocator's own peak. CPU: the resident set is no measure (freed blocks stay resident),
    so the profiler's memory timeline is replayed: tensors alive at the start, plus each allocation,
    minus each free, in order (torch.profiler's `_memory_profile`, private but the only CPU timeline).
    """
    device = tokens.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad():
            model(input_ids=tokens, use_cache=False)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    # torch's memory profile, once freed, has released references to None it never took (torch 2.13,
    # Python 3.11: 6 a call on a tiny model); over a long grid None's count reaches 0 and the
    # interpreter aborts ("Fatal Python error: none_dealloc"; SmolLM2's memory metric lost 8,422 a cell).
    # Give back what went missing (an extra reference to None is harmless); about 1 a call is
    # released after this returns and stays uncounted.
    none_references = sys.getrefcount(None)
    peak = _profiled_peak_bytes(model, tokens)
    gc.collect()
    _NONE_REFERENCES.extend([None] * max(0, none_references - sys.getrefcount(None)))
    return peak


def _profiled_peak_bytes(model: nn.Module, tokens: torch.Tensor) -> int:
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True)
    with _without_stderr():  # kineto prints "USDT: ... profiler_start" (and _stop) on every session
        prof.start()
    try:
        with torch.no_grad():
            model(input_ids=tokens, use_cache=False)
    finally:
        with _without_stderr():
            prof.stop()
    current = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action in (Action.PREEXISTING, Action.CREATE):
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return peak


@contextmanager
def _without_stderr():
    """File descriptor 2 sent to /dev/null for the block (C++ code writes there, not to sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class CSRLinear(nn.Module):
    """A linear whose weight is a torch sparse CSR matrix: y = W x through torch.sparse.mm."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_csr = linear.weight.detach().to_sparse_csr()
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.sparse.mm(self.weight_csr, flat.t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def sparse_copy(model: nn.Module, path: str) -> tuple[nn.Module, list[str]]:
    """A copy of `model` whose decoder linears run a sparse path: "csr" (CPU, torch sparse CSR) or
    "semi-structured" (CUDA, `to_sparse_semi_structured`; only linears that are 2:4 as stored).
    Returns the copy and the names of the linears left dense."""
    twin = copy.deepcopy(model)
    left_dense = []
    for index, layer in enumerate(decoder_layers(twin)):
        for name, linear in prunable_linears(layer).items():
            owner_name, _, attribute = name.rpartition(".")
            owner = layer.get_submodule(owner_name) if owner_name else layer
            if path == "csr":
                setattr(owner, attribute, CSRLinear(linear))
            elif path == "semi-structured" and is_two_four(linear.weight):
                from torch.sparse import to_sparse_semi_structured

                try:
                    linear.weight = nn.Parameter(to_sparse_semi_structured(linear.weight.detach()), requires_grad=False)
                except (RuntimeError, ValueError) as error:  # shape or dtype the kernels do not take
                    left_dense.append(f"layer {index} {name}: {str(error).splitlines()[0][:120]}")
            else:
                left_dense.append(f"layer {index} {name}")
    return twin, left_dense
