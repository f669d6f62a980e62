"""Size and speed of a model relative to another measured in the same process: parameters, prefill
tokens/s at the evaluation window length and decode tokens/s, interleaved, with warm-up and repeats."""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping

import torch
from torch import nn


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def prefill_seconds(model: nn.Module, tokens: torch.Tensor) -> float:
    """One forward over `tokens` (batch x length) without a cache: the evaluation forward."""
    start = time.perf_counter()
    model(input_ids=tokens, use_cache=False)
    return time.perf_counter() - start


@torch.no_grad()
def decode_seconds(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    """Greedy decoding of `new_tokens` after `prompt` with the KV cache; only the decode steps are timed."""
    output = model(input_ids=prompt, use_cache=True)
    token = output.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(new_tokens):
        output = model(input_ids=token, use_cache=True, **_cache_of(output))
        token = output.logits[:, -1:].argmax(-1)
    return time.perf_counter() - start


def _cache_of(output) -> dict:
    """The KV cache to pass on, under the name this transformers version uses (cache, past_key_values)."""
    return {"cache": output["cache"]} if "cache" in output else {"past_key_values": output.past_key_values}


def _summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1],
            "stdev": statistics.stdev(ordered) if len(ordered) > 1 else 0.0, "samples": samples}


def measure_speed(models: Mapping[str, nn.Module], tokens: torch.Tensor, *, repeats: int = 5, warmup: int = 1,
                  decode_tokens: int = 32, decode_batches: tuple[int, ...] = (1, 4), prompt_length: int = 64) -> dict:
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
    for repeat in range(warmup + repeats):
        for case, (inputs, produced) in cases.items():
            for name, model in models.items():
                if case == "prefill":
                    elapsed = prefill_seconds(model, inputs)
                else:
                    elapsed = decode_seconds(model, inputs, decode_tokens)
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
