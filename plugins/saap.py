"""`saap-standin`: SAAP's scoring (Zheng et al. 2024, arXiv 2412.15127; no public code) with a layer
rule of our own, so it carries its own name. Coupled heads and FFN channels are scored from LM-loss
gradients, vector-wise |sum w g| and element-wise sum |w g|, fused with homoscedastic uncertainty
weights, as the paper states. The paper chooses the layers to prune by an "importance-fluctuation
indicator" whose definition we could not read (the stored copies of the paper reachable here hold its
abstract and opening sections only), so the layers are chosen by a stand-in: rank layers by their mean
fused score and leave the most important `protect` share whole. Optional LoRA recovery (peft), off by
default; the paper's group-wise fine-tuning with quantised weights is not implemented.

Uncertainty weights: the fused score I = I_vec / (2 s1^2) + I_elem / (2 s2^2) + log(s1 s2) with
learned noise scales. Minimising the summed fused loss over the structures of a kind in s1, s2 has
the closed form s_k^2 = mean of I_k over those structures (what gradient descent on the learned
scales converges to), so the scales are fitted that way, model-wide per kind; the log term is then
one constant per kind and leaves every ranking unchanged.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prunebench import (LayerAllocation, LayerScores, StructuredMethod, UsageError, hookimpl, lora_recovery,
                        mean_preserving_ratios)
from prunebench.baselines.structured import BOTH_KINDS, vector_and_element

if TYPE_CHECKING:  # torch loads with the first tensor, not with the plugin (fast `validate`)
    import torch


def uncertainty_fusion(vector: torch.Tensor, element: torch.Tensor, vector_scale2: float,
                       element_scale2: float) -> torch.Tensor:
    """I_vec / (2 s1^2) + I_elem / (2 s2^2) + log(s1 s2)."""
    return vector / (2 * vector_scale2) + element / (2 * element_scale2) + 0.5 * math.log(vector_scale2 * element_scale2)


class SAAP(StructuredMethod):
    name = "saap-standin"
    description = ("SAAP's scores with our own layer rule (not the authors' method: their importance-fluctuation "
                   "indicator is not implemented): heads + FFN channels, gradient vector- and element-wise importance "
                   "fused by homoscedastic uncertainty; the most important `protect` share of layers left whole; "
                   "optional LoRA recovery (recover_tokens > 0); whole-model gradients of the dense model, so "
                   "propagate does not apply")
    needs_gradients = True
    allocation = "saap-standin-rank"
    arguments = {"protect": 0.25, "checkpointing": False, "recover_tokens": 0, "lora_rank": 8, "lora_lr": 1e-4}

    def score_layer(self, evidence, **args):
        both = vector_and_element(evidence.structure)
        return LayerScores(extras={f"{kind}_{reading}": both[kind][reading] for kind in BOTH_KINDS
                                   for reading in ("vector", "element")})

    def finalize(self, scores, **args):
        import torch

        for kind in BOTH_KINDS:
            scales = {r: float(torch.cat([s.extras[f"{kind}_{r}"] for s in scores]).mean()) or 1.0
                      for r in ("vector", "element")}
            for layer in scores:
                layer.scores[kind] = uncertainty_fusion(layer.extras[f"{kind}_vector"], layer.extras[f"{kind}_element"],
                                                        scales["vector"], scales["element"])
        for layer in scores:
            layer.importance = float(sum(layer.scores[k].mean() for k in BOTH_KINDS) / len(BOTH_KINDS))
        return scores

    def recover(self, model, calibration, device, recover_tokens, lora_rank, lora_lr, **args):
        if recover_tokens <= 0:
            return None
        return lora_recovery(model, calibration, device, recover_tokens, lora_rank, lora_lr)


def ranked_removal_ratios(importance: list[float], sparsity: float, protect: float) -> list[float]:
    """Weights 1 for the least important (1 - protect) share of layers, 0 for the most important."""
    if not 0 <= protect < 1:
        raise UsageError(f"Bad saap-standin.protect {protect}: the share of layers left whole must be in [0, 1).")
    order = sorted(range(len(importance)), key=lambda i: (importance[i], i))
    pruned = max(1, math.ceil(len(importance) * (1 - protect)))
    weights = [0.0] * len(importance)
    for index in order[:pruned]:
        weights[index] = 1.0
    return weights


class RankedAllocation(LayerAllocation):
    name = "saap-standin-rank"
    description = ("a stand-in for SAAP's layer choice (not the paper's indicator): layers ranked by importance, the "
                   "most important share (protect) stays whole, the rest share the budget")

    def allocate(self, plan, protect=0.25, **args):
        weights = ranked_removal_ratios([s.importance for s in plan.scores], plan.sparsity, protect)
        return plan.counts_for_ratios(mean_preserving_ratios(plan, weights))


@hookimpl
def register_structured_methods(register):
    register(SAAP())


@hookimpl
def register_allocations(register):
    register(RankedAllocation())
