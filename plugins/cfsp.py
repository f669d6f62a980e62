"""CFSP (Wang et al., COLING 2025), a plugin: FFN channels pruned with a
coarse-to-fine activation score from one dense forward pass, no gradients.

Coarse: layer importance = mean over calibration tokens of arccos(cos(h_in, h_out)) / pi (the
paper sums over tokens; with a fixed token count the two rank and standardise alike). Keep ratios
follow a sigmoid of the standardised importance, scaled so the parameter-weighted mean removal is
the sparsity. Fine: channel k's score is ||X_k||_2 of the down projection's input times the mean of
its normalised L1 magnitudes in down_proj (column k) and gate/up_proj (row k).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prunebench import LayerAllocation, LayerScores, StructuredMethod, hookimpl, mean_preserving_ratios, token_cosines

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


class CFSP(StructuredMethod):
    name = "cfsp"
    description = "FFN channels: angle-based block importance, sigmoid allocation, activation x relative magnitude"
    kinds = ("channels",)
    statistics = ("input_sq_norm",)
    needs_hidden = True
    allocation = "cfsp-sigmoid"
    arguments = {"temperature": 1.0}

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


@hookimpl
def register_allocations(register):
    register(SigmoidAllocation())
