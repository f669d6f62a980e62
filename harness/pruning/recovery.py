"""LoRA recovery after structured pruning (peft), with an optional rank per decoder layer: the step
SAAP's and CFSP's papers add after removal, timed apart from pruning by the structured engine."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..api.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def capacity_ranks(importance: list[float], rank: int, parameters_per_rank: list[int]) -> list[int]:
    """LoRA ranks per layer in proportion to each layer's importance, at the trainable-parameter budget
    of rank `rank` everywhere: r_l = rank x I_l x sum_k p_k / sum_k I_k p_k, rounded, at least 1
    (p_l: the layer's trainable parameters per unit of rank, the sum of in + out over its adapted linears)."""
    if rank < 1:
        raise UsageError(f"Bad lora_rank {rank}: use a positive integer.")
    if len(importance) != len(parameters_per_rank) or not importance:
        raise UsageError("capacity_ranks needs one importance and one parameter count per layer.")
    if min(importance) < 0 or not sum(i * p for i, p in zip(importance, parameters_per_rank)):
        raise UsageError("LoRA capacity by importance needs non-negative layer importances, not all zero; "
                         "use lora_capacity=uniform.")
    scale = rank * sum(parameters_per_rank) / sum(i * p for i, p in zip(importance, parameters_per_rank))
    return [max(1, round(i * scale)) for i in importance]


def lora_parameters_per_rank(model: nn.Module) -> list[int]:
    """Per decoder layer: in + out features summed over the linears LoRA adapts."""
    from ..models.walk import decoder_layers

    return [sum(m.in_features + m.out_features for n, m in layer.named_modules() if n.split(".")[-1] in LORA_TARGETS)
            for layer in decoder_layers(model)]


def lora_recovery(model: nn.Module, calibration: torch.Tensor, device: torch.device, tokens: int, rank: int, lr: float,
                  layer_ranks: list[int] | None = None) -> dict:
    """LoRA on every decoder linear for `tokens` calibration tokens (cycling the windows), merged back
    into `model` in place; `layer_ranks` gives each decoder layer its own rank (else `rank` everywhere)."""
    import torch

    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UsageError("LoRA recovery needs peft: pip install 'prunebench[recovery]'.") from None
    start = time.perf_counter()
    pattern = {}
    if layer_ranks is not None:
        # peft matches a rank_pattern key against the end of a module's name.
        pattern = {f"layers.{index}.{part}.{name}": r for index, r in enumerate(layer_ranks)
                   for part, names in (("self_attn", LORA_TARGETS[:4]), ("mlp", LORA_TARGETS[4:])) for name in names}
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=list(LORA_TARGETS), rank_pattern=pattern,
                        alpha_pattern={key: 2 * r for key, r in pattern.items()})
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    peft_model.train()
    seen, steps, losses = 0, 0, []
    with torch.enable_grad():
        while seen < tokens:
            for window in calibration:
                batch = window.unsqueeze(0).to(device)
                loss = peft_model(input_ids=batch, labels=batch, use_cache=False).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(float(loss))
                seen, steps = seen + batch.numel(), steps + 1
                if seen >= tokens:
                    break
    merged = peft_model.merge_and_unload()
    merged.eval()
    if merged is not model:
        raise RuntimeError("peft returned a different model object; the pruned model was not updated in place")
    return {"tokens": seen, "steps": steps, "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
            "seconds": round(time.perf_counter() - start, 2), "rank": rank, "lr": lr, "trainable": trainable,
            **({"layer_ranks": layer_ranks} if layer_ranks is not None else {})}
