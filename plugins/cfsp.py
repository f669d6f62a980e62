"""CFSP (Wang et al., COLING 2025), a plugin: FFN channels removed by a coarse-to-fine activation score
from one dense forward pass, no gradients; attention is left whole.

`cfsp` is the authors' method as their code runs it (github.com/wyxscir/CFSP, lib/prune.py `prune_cfsp`,
lib/block_metrics.py; defaults of start.sh: `--local_metrics three_w_one_wa --global_metrics angular
--a 1 --b 1 --c 1`):
- Coarse: layer importance I_l = SUM over every calibration token of arccos(cos(h_in, h_out)) / pi (a NaN
  cosine read as 0.5; one that rounds above 1 read as 1, where their arccos gives NaN), on the dense model. x_l = (I_l - mean I) / 1e4, k_l = sigmoid(a x_l); when
  max(k) / mean(k) (1 - s) >= 1, deviations from mean(k) shrink by f = mean(k) (1/(1-s) - 1) /
  (max(k) - mean(k)) / 1.05; keep_l = k_l / mean(k) (1 - s). The fixed 1e4 makes the allocation's
  temperature grow with the number of calibration tokens: at 128 x 128 tokens it is nearly uniform.
- Fine: per channel k, the mean over hidden rows h of (|W_down| a^b / its column sum + |W_up^T| / its
  column sum + |W_gate^T| / its column sum) a_k^c, a_k = sqrt of Wanda's mean of ||X_k||^2 at the down
  projection's input. Every term is normalised by its own sum over h, so the score is 3 a_k^c / H: the
  channels rank by the down projection's input norm alone (computed as their code computes it, in
  float32, so its roundings break near-ties alike).
- Kept per layer: every channel scoring at least the threshold sorted_desc[int(K keep_l)] (ties kept),
  or with round_to > 1 (their `--cuda_friendly`: 128) sorted_desc[int((K keep_l + round_to/2) / round_to)
  round_to - 1]. `--sparsity` s is the fraction of FFN channels removed (their `pruning_ratio`), not of
  the prunable parameters.

`cfsp-normalized` is prunebench's earlier reading under its own name: importance the token MEAN of the
angle, standardised (z-score), keep ratios by sigmoid(temperature z) with the parameter-weighted mean
at the sparsity; channel score ||X_k|| times the mean of the channel's L1 magnitudes in down, gate and
up, each divided by its mean over channels.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prunebench import (
    LayerAllocation,
    LayerScores,
    StructuredMethod,
    UsageError,
    capacity_ranks,
    hookimpl,
    lora_parameters_per_rank,
    lora_recovery,
    mean_preserving_ratios,
    token_cosines,
)

if TYPE_CHECKING:  # torch loads with the first tensor, not with the plugin (fast `validate`)
    import torch


def angular_importance(hidden_in, hidden_out) -> float:
    """Mean over tokens of the angle between a layer's input and output hidden states, over pi."""
    import torch

    return float(torch.arccos(token_cosines(hidden_in, hidden_out).clamp(-1, 1)).mean() / math.pi)


def channel_scores(norms: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """||X_k|| * (d_k/mean d + g_k/mean g + u_k/mean u) / 3 with d, g, u the L1 norms of down column k, gate/up row k."""
    magnitudes = [down.abs().sum(dim=0), gate.abs().sum(dim=1), up.abs().sum(dim=1)]
    relative = sum(m / m.mean() for m in magnitudes) / 3
    return norms * relative


def angular_importance_sum(hidden_in, hidden_out) -> float:
    """The authors' block_influence summed over tokens: sum_t arccos(cos(h_in, h_out)) / pi, NaN as 0.5, float32
    (`hidden_in`, `hidden_out`: the layer's input and output hidden states, one tensor per calibration batch)."""
    import torch

    x = torch.cat([h.reshape(-1, h.shape[-1]) for h in hidden_in]).float()  # the layer's batches, token rows
    y = torch.cat([h.reshape(-1, h.shape[-1]) for h in hidden_out]).float()
    cosine = ((x * y).sum(dim=-1) / (x.norm(dim=-1) * y.norm(dim=-1))).nan_to_num(nan=0.5)
    # A cosine that rounds above 1 (a token the layer leaves almost unchanged) is read as 1: arccos of
    # it is NaN, which would make the layer's sum, and the authors' whole allocation, NaN.
    return float((torch.arccos(cosine.clamp(-1.0, 1.0)) / torch.pi).sum())


def three_w_one_wa(a: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, b: float,
                   c: float) -> torch.Tensor:
    """The authors' fine score per FFN channel (`three_w_one_wa`), in float32 as their code computes it:
    mean over h of (|W_down| a^b / colsum + |W_up^T| / colsum + |W_gate^T| / colsum) a^c (= 3 a^c / H)."""
    a = a.float().reshape(1, -1)
    under = down.float().abs() * a ** b
    up_t, gate_t = up.float().t().abs(), gate.float().t().abs()
    metric = (under / under.sum(dim=0) + up_t / up_t.sum(dim=0) + gate_t / gate_t.sum(dim=0)) * a ** c
    return metric.mean(dim=0)


class CFSP(StructuredMethod):
    name = "cfsp"
    description = ("FFN channels, the authors' CFSP: summed angular block importance, sigmoid((I - mean I)/1e4) "
                   "allocation with the /1.05 cap, channels ranked by down_proj's input norm (three_w_one_wa)")
    kinds = ("channels",)
    statistics = ("input_sq_norm",)
    needs_hidden = True
    allocation = "cfsp"
    # Recovery (off by default; not in the authors' code): LoRA for recover_tokens calibration tokens with
    # lora_capacity "importance" (each layer's rank in proportion to its coarse importance, our reading of
    # the paper's importance-guided fine-tuning) or "uniform", at the same trainable-parameter budget.
    arguments = {"a": 1.0, "b": 1.0, "c": 1.0, "recover_tokens": 0, "lora_rank": 8, "lora_lr": 1e-4,
                 "lora_capacity": "importance"}
    version = "2"  # 1 was today's cfsp-normalized under this name

    def recover(self, model, calibration, device, recover_tokens=0, lora_rank=8, lora_lr=1e-4,
                lora_capacity="importance", layer_importance=(), **args):
        if lora_capacity not in ("importance", "uniform"):
            raise UsageError(f"Bad cfsp.lora_capacity '{lora_capacity}': use importance or uniform.")
        if recover_tokens <= 0:
            return None
        ranks = None
        if lora_capacity == "importance":
            ranks = capacity_ranks(list(layer_importance), lora_rank, lora_parameters_per_rank(model))
        return {"capacity": lora_capacity,
                **lora_recovery(model, calibration, device, recover_tokens, lora_rank, lora_lr, ranks)}

    def score_layer(self, evidence, a=1.0, b=1.0, c=1.0, **args):
        mlp = evidence.structure.mlp
        norms = evidence.stats["down_proj"]["input_sq_norm"].float().sqrt().cpu()
        weights = [m.weight.detach().cpu() for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
        return LayerScores({"channels": three_w_one_wa(norms, *weights, b, c).double()},
                           importance=angular_importance_sum(evidence.hidden_in, evidence.hidden_out))


def authors_keep_ratios(importance: list[float], sparsity: float, a: float) -> list[float]:
    """Per-layer keep ratios of FFN channels, exactly as prune_cfsp computes them (float64 Python floats)."""
    middle = sum(importance) / len(importance)
    k = [1 / (1 + math.exp(-((value - middle) / 1e4) * a)) for value in importance]
    average = sum(k) / len(k)
    highest = max(k)
    if highest / average * (1 - sparsity) >= 1:  # the most important layer would keep more than all
        factor = (average * (1 / (1 - sparsity) - 1)) / (highest - average) / 1.05
        k = [average + (v - average) * factor if v > average else average - (average - v) * factor for v in k]
        average = sum(k) / len(k)
    return [v / average * (1 - sparsity) for v in k]


def authors_kept_count(scores: torch.Tensor, keep: float, round_to: int) -> int:
    """Channels at or above prune_cfsp's threshold: sorted_desc[int(K keep)], or with rounding (their
    cuda_friendly) sorted_desc[int((K keep + round_to/2) / round_to) round_to - 1]; ties are kept."""
    import torch

    ordered = torch.sort(scores, descending=True).values
    total = ordered.numel()
    if round_to > 1:
        index = int((total * keep + round_to // 2) / round_to) * round_to - 1  # -1 (nothing kept): all stay, as theirs
    else:
        index = int(total * keep)
    if index >= total:
        raise UsageError(f"CFSP would keep {index + 1} of {total} FFN channels of a layer; lower a or the sparsity.")
    return int((scores >= ordered[index]).sum())


class AuthorsAllocation(LayerAllocation):
    name = "cfsp"
    description = ("CFSP as its authors run it: keep ratios of FFN channels from sigmoid(a (I_l - mean I) / 1e4) of the "
                   "summed angular importance, capped (/1.05), mean keep 1 - s; kept counts by their threshold rule")

    def allocate(self, plan, a=1.0, round_to=1, **args):
        if plan.kinds != ("channels",):
            raise UsageError("Allocation 'cfsp' removes FFN channels only; use it with a channels-only method (cfsp).")
        keeps = authors_keep_ratios([s.importance for s in plan.scores], plan.sparsity, a)
        counts = []
        for index, (keep, scores) in enumerate(zip(keeps, plan.scores)):
            kept = authors_kept_count(scores.scores["channels"], keep, round_to)
            counts.append({"channels": plan.layers[index].counts["channels"] - kept})
        return counts


class CFSPNormalized(CFSP):
    name = "cfsp-normalized"
    description = ("FFN channels, prunebench's earlier CFSP reading (not the authors'): token-mean angular importance "
                   "z-scored, sigmoid(temperature z) allocation, activation x relative magnitude")
    allocation = "cfsp-sigmoid"
    arguments = {"temperature": 1.0}
    version = "1"

    def score_layer(self, evidence, **args):
        mlp = evidence.structure.mlp
        norms = evidence.stats["down_proj"]["input_sq_norm"].double().sqrt().cpu()
        weights = [m.weight.detach().double().cpu() for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
        return LayerScores({"channels": channel_scores(norms, *weights)},
                           importance=angular_importance(evidence.hidden_in, evidence.hidden_out))


def sigmoid_removal_ratios(importance: list[float], sparsity: float, temperature: float,
                           parameters: list[int]) -> list[float]:
    """Removal ratios 1 - k_l, k_l proportional to sigmoid(temperature * z_l) with mean keep 1 - sparsity."""
    import torch

    values = torch.tensor(importance, dtype=torch.float64)
    spread = values.std() if values.numel() > 1 else torch.tensor(0.0)
    z = (values - values.mean()) / spread if spread > 0 else torch.zeros_like(values)
    keep = torch.sigmoid(temperature * z)
    weights = torch.tensor(parameters, dtype=torch.float64)
    keep = keep * (1 - sparsity) * weights.sum() / (keep * weights).sum()
    return (1 - keep).tolist()


class SigmoidAllocation(LayerAllocation):
    name = "cfsp-sigmoid"
    description = "CFSP: keep ratios follow a sigmoid of the standardised layer importance (mean keep 1 - s)"

    def allocate(self, plan, temperature=1.0, **args):
        ratios = sigmoid_removal_ratios([s.importance for s in plan.scores], plan.sparsity, temperature,
                                        [layer.parameters for layer in plan.layers])
        # mean_preserving_ratios rescales exactly to the budget and caps layers that cannot give more.
        return plan.counts_for_ratios(mean_preserving_ratios(plan, ratios))


@hookimpl
def register_structured_methods(register):
    register(CFSP())
    register(CFSPNormalized())


@hookimpl
def register_allocations(register):
    register(AuthorsAllocation())
    register(SigmoidAllocation())
