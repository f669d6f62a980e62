"""Perplexity (non-overlapping windows, as Wanda's and SparseGPT's code compute it) and measured sparsity of a model's prunable weights."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..api.errors import UsageError
from ..models.walk import decoder_layers, default_device, prunable_linears


@dataclass
class PerplexityResult:
    perplexity: float
    mean_nll: float
    windows: int
    window_length: int
    tokens: int
    seconds: float
    # Each window's mean token NLL, in window order: what the intervals in prunebench.metrics.uncertainty
    # resample, and what pairs two methods evaluated on the same windows. Non-finite values stay
    # here; the results store writes them as null. A tuple, so the default can be shared.
    window_nlls: tuple[float, ...] = ()

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("inf")

    def to_dict(self) -> dict:
        return dict(asdict(self), window_nlls=list(self.window_nlls))


def evaluation_windows(token_ids: torch.Tensor, window_length: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows (the tail dropped), the first `max_windows` of them if capped."""
    count = token_ids.numel() // window_length
    if max_windows is not None:
        count = min(count, max_windows)
    if count < 1:
        raise UsageError(
            f"Evaluation text has {token_ids.numel()} tokens, fewer than one window of {window_length}; "
            "use a smaller --eval-seqlen or a longer text."
        )
    return token_ids[: count * window_length].view(count, window_length)


@torch.no_grad()
def perplexity(
    model,
    token_ids: torch.Tensor,
    window_length: int,
    max_windows: int | None = None,
    *,
    batch_size: int = 1,
    device: "str | torch.device | None" = None,
    progress: bool = False,
) -> PerplexityResult:
    """exp(mean over windows of the window's mean next-token NLL), as Wanda and SparseGPT compute it."""
    windows = evaluation_windows(token_ids, window_length, max_windows)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    window_nlls = []
    start = time.perf_counter()
    for batch in tqdm(torch.split(windows, batch_size), desc="perplexity", disable=not progress, leave=False):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        # Per-window mean NLL of predicting tokens 2..L from their prefixes, in float32.
        nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), reduction="none"
        ).view(batch.shape[0], -1)
        window_nlls.append(nll.mean(dim=1).cpu())
    seconds = time.perf_counter() - start
    per_window = torch.cat(window_nlls).double()
    mean_nll = per_window.mean().item()
    return PerplexityResult(
        perplexity=math.exp(mean_nll) if math.isfinite(mean_nll) and mean_nll < 700 else float("inf"),
        mean_nll=mean_nll,
        windows=windows.shape[0],
        window_length=window_length,
        tokens=windows.numel(),
        seconds=seconds,
        window_nlls=tuple(per_window.tolist()),
    )


def zero_fraction(linears) -> float:
    """Fraction of zero weights over the given linears."""
    zeros = total = 0
    for linear in linears:
        zeros += int((linear.weight == 0).sum())
        total += linear.weight.numel()
    return zeros / total if total else 0.0


def measured_sparsity(model) -> dict:
    """Fraction of zero weights in the prunable linears: per decoder layer and overall."""
    layers = [list(prunable_linears(layer).values()) for layer in decoder_layers(model)]
    return {
        "overall": zero_fraction(linear for linears in layers for linear in linears),
        "per_layer": [zero_fraction(linears) for linears in layers],
    }


__all__ = ["PerplexityResult", "default_device", "evaluation_windows", "measured_sparsity", "perplexity"]
