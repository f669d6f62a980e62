"""Output fidelity of a pruned model to its dense model: a metric plugin written against the public API only.

On the first `windows` non-overlapping `seqlen`-token windows from the start of the dataset's tokenized
evaluation text (WikiText-2 test by default), every position of every window predicted:

- top-1 agreement: share of positions where argmax of the pruned logits equals argmax of the dense logits;
- top-5 agreement: share of positions where the DENSE model's top-1 token is among the pruned model's
  top 5 tokens (not the overlap of the two top-5 sets);
- KL: mean over positions of KL(dense || pruned) = sum_v p_dense(v) (log p_dense(v) - log p_pruned(v)),
  log-probabilities by log_softmax of the logits in float64 (terms with p_dense(v) = 0 count 0).

The dense logits are computed once per dense model and kept in this process (on the CPU, in the model's
dtype: windows x seqlen x vocabulary numbers) under a fingerprint of the model that needs no dense copy (the
input and output embeddings, which pruning leaves alone: shapes, dtype, float64 sums and strided elements)
with the device, dtype and the exact token windows; one model's entries at a time. So the second cell of the
same model does not call `context.dense_model()`.
"""
from __future__ import annotations

import hashlib

from prunebench import (
    PRUNED,
    Metric,
    MetricContext,
    Value,
    evaluation_windows,
    hookimpl,
    on_device,
    window_problems,
)

TOP_K = 5
FINGERPRINT_SAMPLES = 16  # strided elements of each embedding in the fingerprint

# {"model": fingerprint of the dense model or None, "entries": {(device, dtype, windows hash): [logits per window]}}
_DENSE_LOGITS: dict = {"model": None, "entries": {}}


def clear_dense_cache() -> None:
    """Forget the cached dense logits (the next cell computes them again from `context.dense_model()`)."""
    _DENSE_LOGITS["model"] = None
    _DENSE_LOGITS["entries"] = {}


def _tensor_fingerprint(tensor) -> tuple:
    import torch

    flat = tensor.detach().reshape(-1)
    step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
    samples = tuple(flat[::step][:FINGERPRINT_SAMPLES].to(torch.float64).tolist())
    return tuple(tensor.shape), str(tensor.dtype), float(flat.to(torch.float64).sum()), samples


def model_fingerprint(model) -> tuple:
    """What identifies the dense model behind a pruned one without rebuilding it: the model class, the
    vocabulary size and the input and output embeddings (which neither unstructured nor structured pruning
    changes)."""
    output = model.get_output_embeddings()
    embeddings = model.get_input_embeddings()
    return (type(model).__name__, embeddings.num_embeddings, _tensor_fingerprint(embeddings.weight),
            None if output is None else _tensor_fingerprint(output.weight))


def _logits(model, batch, device) -> list:
    """Each window's logits (seqlen, vocabulary) on the CPU, one window per forward."""
    import torch

    with torch.no_grad(), on_device(model, device):
        return [model(window[None].to(device), use_cache=False).logits[0].cpu() for window in batch]


def dense_logits(context: MetricContext, batch) -> list:
    """The dense model's logits of each window: cached, else from `context.dense_model()` (then cached)."""
    import torch

    fingerprint = model_fingerprint(context.model)
    if _DENSE_LOGITS["model"] != fingerprint:
        clear_dense_cache()  # another model: drop the last one's logits before computing these
        _DENSE_LOGITS["model"] = fingerprint
    windows_hash = hashlib.sha256(batch.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()
    key = (str(torch.device(context.device)), str(context.model.dtype), tuple(batch.shape), windows_hash)
    entries = _DENSE_LOGITS["entries"]
    if key not in entries:
        dense = context.dense_model()
        entries[key] = _logits(dense, batch, torch.device(context.device))
        del dense
    return entries[key]


class Fidelity(Metric):
    """Top-1 agreement (argmax pruned == argmax dense), top-5 agreement (the DENSE top-1 token among the
    pruned model's top 5) and mean KL(dense || pruned) in float64, over every position of held-out windows."""

    name = "fidelity"
    description = ("agreement with the dense model on held-out windows, every position: top1 = share where argmax "
                   "pruned logits == argmax dense logits; top5 = share where the dense top-1 token is among the "
                   "pruned top 5; kl = mean KL(dense || pruned) in float64 (dense logits cached per model)")
    higher_is_better = True
    unit = "agreement"
    applies_to = (PRUNED,)
    needs_tokenizer = True
    settings = {"dataset": "wikitext2", "windows": 4, "seqlen": 256}
    values = (Value("top1", "top-1 agreement", True, "%", 100.0),
              Value("top5", "dense top-1 in top-5", True, "%", 100.0),
              Value("kl", "KL(dense‖pruned)", False, "nats", 1.0, 4))

    def check(self, settings: dict) -> list[str]:
        return window_problems(self.name, settings)

    def compute(self, context: MetricContext, dataset: str, windows: int, seqlen: int) -> dict:
        import torch

        batch = evaluation_windows(context, dataset, windows, seqlen)
        reference = dense_logits(context, batch)
        device = torch.device(context.device)
        top1 = top5 = positions = 0
        kl = torch.zeros((), dtype=torch.float64)
        with torch.no_grad(), on_device(context.model, device):
            for window, dense in zip(batch, reference):
                pruned = context.model(window[None].to(device), use_cache=False).logits[0]
                dense = dense.to(pruned.device)
                dense_top = dense.argmax(dim=-1)
                top1 += int((pruned.argmax(dim=-1) == dense_top).sum())
                best = pruned.topk(min(TOP_K, pruned.shape[-1]), dim=-1).indices
                top5 += int((best == dense_top[:, None]).any(dim=-1).sum())
                log_dense = torch.log_softmax(dense.to(torch.float64), dim=-1)
                log_pruned = torch.log_softmax(pruned.to(torch.float64), dim=-1)
                p_dense = log_dense.exp()
                terms = torch.where(p_dense > 0, p_dense * (log_dense - log_pruned), torch.zeros_like(p_dense))
                kl += terms.sum().cpu()
                positions += window.numel()
        return {"top1": top1 / positions, "top5": top5 / positions, "kl": float(kl) / positions,
                "positions": positions, "windows": int(batch.shape[0]), "seqlen": int(batch.shape[1]),
                "dataset": dataset}

    def headline(self, result: dict) -> list[str]:
        return [f"fidelity top1 {100 * result['top1']:.1f}% top5 {100 * result['top5']:.1f}% KL {result['kl']:.4f}"]


@hookimpl
def register_metrics(register):
    register(Fidelity())
