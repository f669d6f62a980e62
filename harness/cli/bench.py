"""`prunebench bench`: pruning speed, pruning memory and evaluation throughput, as ratios."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tabulate import tabulate

from ..api.sparsity import parse_sparsity
from ..data.datasets import (
    calibration_documents,
    evaluation_text,
    sample_calibration,
    tokenize_text,
)
from ..metrics.perplexity import evaluation_windows, perplexity
from ..models.loading import check_fits_context, load_model
from ..models.walk import capture_inputs, compute_device, default_device, walk_layers
from ..pruning.engine import prune


@torch.no_grad()
def bare_forward_tokens_per_second(model, windows: torch.Tensor, device: torch.device) -> float:
    """The baseline: a plain transformers forward loop with a token-level cross entropy."""
    start = time.perf_counter()
    for window in windows:
        batch = window.unsqueeze(0).to(device)
        logits = model(batch).logits
        F.cross_entropy(logits[0, :-1].float(), batch[0, 1:])
    return windows.numel() / (time.perf_counter() - start)


@torch.no_grad()
def forward_through_layers(model, calibration: torch.Tensor, *, batch_size: int = 8,
                           device: "str | torch.device | None" = None) -> float:
    """Seconds for one plain forward of `calibration` through the decoder layers (the benchmark's unit)."""
    device = torch.device(device) if device is not None else default_device()
    start = time.perf_counter()
    captured = capture_inputs(model, calibration, batch_size, device)
    for _ in walk_layers(model, captured, device):
        pass  # the walk runs each layer and feeds its outputs on
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run_bench(args) -> dict:
    target = parse_sparsity(args.sparsity)
    device = compute_device(args.device, f"--device {args.device}", "use --device cpu")
    model, tokenizer = load_model(args.model)
    # Past the context OPT raises an IndexError and LLaMA runs on silently: refuse before any timing.
    check_fits_context(model, args.model, {"--seqlen": args.seqlen, "--eval-seqlen": args.eval_seqlen})
    model.to(device)
    calibration = sample_calibration(tokenizer, calibration_documents("pydoc"), args.nsamples, args.seqlen)
    eval_ids = tokenize_text(tokenizer, evaluation_text(args.eval_dataset, args.data_dir))
    windows = evaluation_windows(eval_ids, args.eval_seqlen, args.eval_windows)

    # Pruning first, right after loading (and a tiny warm-up forward), so that the resident memory
    # before it is the loaded model and nothing freed earlier hides the growth.
    model(input_ids=calibration[:1, :16].to(device), use_cache=False)
    report = prune(model, args.method, target, calibration, device=device, progress=False)
    growth = max(0, report.peak_memory_bytes - report.memory_before_bytes)
    # One plain forward through the decoder layers (same FLOPs on the pruned weights), best of two.
    forward_seconds = min(forward_through_layers(model, calibration, device=device) for _ in range(2))
    # Evaluation throughput, interleaved (ours, bare, ours, bare, ...) after a warm-up, best of three:
    # the two loops do the same work, so the best of each is the least noisy comparison.
    perplexity(model, eval_ids, args.eval_seqlen, 1, device=device)
    ours, bare = [], []
    for _ in range(3):
        ours.append(perplexity(model, eval_ids, args.eval_seqlen, args.eval_windows, device=device).tokens_per_second)
        bare.append(bare_forward_tokens_per_second(model, windows, device))
    figures = {
        "plain forward through layers (s)": forward_seconds,
        "pruning total (s)": report.timings["total"],
        f"pruning / plain forward (target <= {3.0 if report.method == 'sparsegpt' else 1.5})":
            report.timings["total"] / forward_seconds,
        "peak memory growth / model bytes (target <= 0.1)": growth / model_bytes(model),
        "eval tokens/s, prunebench": max(ours),
        "eval tokens/s, bare transformers loop": max(bare),
        "eval throughput ratio (target >= 0.95)": max(ours) / max(bare),
    }
    print(f"bench: {args.model}, {args.method} {target}, {args.nsamples} x {args.seqlen} calibration tokens, "
          f"{windows.shape[0]} x {args.eval_seqlen} evaluation tokens, device {device}")
    print(tabulate([[k, f"{v:.3f}"] for k, v in figures.items()], headers=["figure", "value"], tablefmt="github"))
    print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings.items()))
    return figures
