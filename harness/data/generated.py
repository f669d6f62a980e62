"""Calibration text sampled from the dense model itself (self-generated calibration, as in Williams,
Chrysostomou & Aletras 2025 and Ji et al. 2025): each window is the model's own continuation of its
beginning-of-text token, sampled from the full softmax at a fixed temperature. Made once per model,
setting and seed, and cached on disk."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..api.cache import CACHE_ENV, cache_dir
from ..api.errors import UsageError

if TYPE_CHECKING:
    import torch

# What the windows depend on besides the model; recorded in every cell's provenance. Bump "version"
# when the sampling changes, so no cache or record made the old way is reused.
GENERATION = {"version": 1, "temperature": 1.0, "top_k": None, "top_p": None, "prompt": "the tokenizer's BOS token",
              "batch": 8, "sampler": "inverse CDF of the float64 softmax, one torch.Generator per window"}


def describe() -> str:
    settings = ", ".join(f"{key} {value}" for key, value in GENERATION.items() if key != "sampler")
    return f"text sampled from the dense model ({settings}; {GENERATION['sampler']})"


def model_fingerprint(model) -> str:
    """sha256 of the model's config and a strided sample of every parameter: cheap, and it changes when
    any weight tensor is replaced or retrained."""
    import torch

    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            flat = parameter.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)].to(device="cpu", dtype=torch.float64)
            digest.update(name.encode() + str(tuple(parameter.shape)).encode() + sample.numpy().tobytes())
    return digest.hexdigest()


def _window_generator(seed: int, index: int):
    import torch

    # One stream per window, so a window does not depend on how many others are asked for.
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


def _sample(logits: torch.Tensor, generators: list) -> torch.Tensor:
    """One token per row of `logits` (rows, vocab) by inverse CDF of softmax(logits / temperature) in float64."""
    import torch

    probabilities = torch.softmax(logits.to("cpu", torch.float64) / GENERATION["temperature"], dim=-1)
    cumulative = probabilities.cumsum(dim=-1)
    draws = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    tokens = torch.searchsorted(cumulative, (draws * cumulative[:, -1]).unsqueeze(1)).squeeze(1)
    return tokens.clamp_(max=logits.shape[-1] - 1)


def generate_windows(model, tokenizer, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """(nsamples, seqlen) token ids: BOS, then seqlen - 1 tokens the model samples after it."""
    import torch

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise UsageError("Self-generated calibration needs a tokenizer with a BOS (or EOS) token to start from; "
                         "this one has neither: calibrate on a corpus instead.")
    device = next(model.parameters()).device
    windows = []
    # transformers 5 renames past_key_values to cache; the old name serves every version we support.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
        for first in range(0, nsamples, GENERATION["batch"]):
            rows = range(first, min(first + GENERATION["batch"], nsamples))
            generators = [_window_generator(seed, i) for i in rows]
            ids = torch.full((len(rows), 1), start, dtype=torch.long, device=device)
            tokens, cache = ids, None
            for _ in range(seqlen - 1):
                out = model(input_ids=tokens, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                tokens = _sample(out.logits[:, -1, :], generators).to(device).unsqueeze(1)
                ids = torch.cat([ids, tokens], dim=1)
            windows.append(ids.cpu())
    return torch.cat(windows)


def _cache_file(model, nsamples: int, seqlen: int, seed: int) -> Path:
    import torch

    key = {"model": model_fingerprint(model), "dtype": str(next(model.parameters()).dtype), "nsamples": nsamples,
           "seqlen": seqlen, "seed": seed, "generation": GENERATION, "torch": torch.__version__.split("+")[0]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir() / "generated" / f"{digest}.pt"


def cached_windows(model, tokenizer, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """`generate_windows`, read from the cache when this model made them before with these settings."""
    import torch

    if nsamples < 1 or seqlen < 2:
        raise UsageError(f"Bad calibration size {nsamples} x {seqlen}: self-generated windows need at least one "
                         "window of 2 tokens (BOS and one sampled token).")
    file = _cache_file(model, nsamples, seqlen, seed)
    if file.is_file():
        return torch.load(file, weights_only=True)
    windows = generate_windows(model, tokenizer, nsamples, seqlen, seed)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        staging = file.with_suffix(".tmp")
        torch.save(windows, staging)
        staging.replace(file)
    except OSError as error:  # the windows are still good; only the cache is lost
        warnings.warn(f"could not cache generated calibration in {file.parent} ({error.strerror}); "
                      f"set ${CACHE_ENV} to a writable directory.", stacklevel=2)
    return windows
