"""Structured baselines (a plugin): magnitude of a group, Wanda-sp, FLAP with
bias compensation, LLM-Pruner's first-order Taylor importance, ShortGPT's block-influence layer removal."""
from __future__ import annotations

from typing import TYPE_CHECKING

from prunebench import (
    Accumulator,
    LayerScores,
    Statistic,
    StructuredMethod,
    UsageError,
    add_output_bias,
    group_sum,
    hookimpl,
    token_cosines,
)

if TYPE_CHECKING:  # torch loads with the first tensor, not with the plugin (fast `validate`)
    import torch

BOTH_KINDS = ("heads", "channels")


def input_norms(evidence) -> dict[str, torch.Tensor]:
    """||X_j||_2 of each linear's input feature j (up to the constant number of sequences)."""
    return {name: stats["input_sq_norm"].double().sqrt().cpu() for name, stats in evidence.stats.items()}


def weights(structure) -> dict[str, torch.Tensor]:
    return {name: linear.weight.detach().double().cpu() for name, linear in structure.linears.items()}


class GroupMagnitude(StructuredMethod):
    name = "magnitude-sp"
    description = "L2 norm of all weights of the coupled structure; no calibration"

    def score_layer(self, evidence, **args):
        squares = {name: w.square() for name, w in weights(evidence.structure).items()}
        return LayerScores({kind: group_sum(evidence.structure, squares, kind).sqrt() for kind in BOTH_KINDS})


class WandaSP(StructuredMethod):
    name = "wanda-sp"
    description = "sum over the group's weights of |W_ij| * ||X_j||; sides=both (input rows and output columns) or output"
    statistics = ("input_sq_norm",)
    arguments = {"sides": "both"}

    def score_layer(self, evidence, sides, **args):
        if sides not in ("both", "output"):
            raise UsageError(f"Bad wanda-sp.sides '{sides}': use both or output.")
        norms = input_norms(evidence)
        per_weight = {name: w.abs() * norms[name].reshape(1, -1) for name, w in weights(evidence.structure).items()
                      if sides == "both" or name in ("o_proj", "down_proj")}
        return LayerScores({kind: group_sum(evidence.structure, per_weight, kind) for kind in BOTH_KINDS})


class _Moments(Accumulator):
    """Per input feature: mean and sample variance over calibration tokens, summed in float64."""

    def __init__(self, width: int, device: torch.device):
        import torch

        self.count = 0
        self.total = torch.zeros(width, dtype=torch.float64, device=device)
        self.squares = torch.zeros(width, dtype=torch.float64, device=device)

    def add(self, inputs, outputs, nsequences):
        inputs = inputs.double()
        self.count += inputs.shape[0]
        self.total += inputs.sum(dim=0)
        self.squares += inputs.square().sum(dim=0)

    def result(self):
        import torch

        mean = self.total / self.count
        variance = (self.squares - self.count * mean.square()) / max(1, self.count - 1)
        return torch.stack([mean, variance.clamp_min(0)])


class InputMoments(Statistic):
    name = "input_moments"
    description = "per input feature j: [mean, sample variance] over calibration tokens (FLAP's fluctuation)"

    def accumulator(self, linear, device, arguments):
        return _Moments(linear.in_features, device)


class FLAP(StructuredMethod):
    name = "flap"
    description = ("fluctuation: token variance of input j * ||W[:, j]||^2 of o_proj/down_proj; standardised per kind, "
                   "ranked model-wide; removed inputs' means folded into the output bias")
    statistics = ("input_moments",)
    allocation = "global"
    arguments = {"compensate_bias": True}

    def score_layer(self, evidence, **args):
        structure = evidence.structure
        per_weight, extras = {}, {}
        for name in ("o_proj", "down_proj"):
            mean, variance = evidence.stats[name]["input_moments"].double().cpu()
            column_norms = structure.linears[name].weight.detach().double().cpu().square()
            per_weight[name] = column_norms * variance.reshape(1, -1)
            extras[name] = mean
        return LayerScores({kind: group_sum(structure, per_weight, kind) for kind in BOTH_KINDS}, extras=extras)

    def compensate(self, structure, removed, scores, compensate_bias, **args):
        if not compensate_bias:
            return
        import torch

        for kind, name in (("heads", "o_proj"), ("channels", "down_proj")):
            if kind not in removed:
                continue
            gone = removed[kind]
            if kind == "heads":
                width = structure.head_dim * structure.groups
                gone = (gone.reshape(-1, 1) * width + torch.arange(width)).reshape(-1)
            linear = structure.linears[name]
            # The removed inputs are replaced by their calibration mean: a constant the bias absorbs.
            delta = linear.weight.detach().double().cpu()[:, gone] @ scores.extras[name][gone]
            add_output_bias(linear, delta)


def taylor_terms(structure) -> dict[str, torch.Tensor]:
    """w * dL/dw for every linear of the layer (gradients from the engine's calibration backward)."""
    terms = {}
    for name, linear in structure.linears.items():
        if linear.weight.grad is None:
            raise RuntimeError(f"no gradient on {name}: the engine computes them for needs_gradients methods")
        terms[name] = linear.weight.detach().double().cpu() * linear.weight.grad.double().cpu()
    return terms


def vector_and_element(structure) -> dict[str, dict[str, torch.Tensor]]:
    """LLM-Pruner's two first-order readings per kind: |sum over the group of w g| and sum of |w g|."""
    terms = taylor_terms(structure)
    absolute = {name: t.abs() for name, t in terms.items()}
    return {kind: {"vector": group_sum(structure, terms, kind).abs(), "element": group_sum(structure, absolute, kind)}
            for kind in BOTH_KINDS}


class LLMPrunerTaylor(StructuredMethod):
    name = "llm-pruner"
    description = ("first-order Taylor group importance from LM-loss gradients: |sum w*g| (vector) or sum |w*g| "
                   "(element); whole-model gradients of the dense model, so propagate does not apply")
    needs_gradients = True
    arguments = {"reading": "vector", "checkpointing": False}

    def score_layer(self, evidence, reading, **args):
        if reading not in ("vector", "element"):
            raise UsageError(f"Bad llm-pruner.reading '{reading}': use vector or element.")
        both = vector_and_element(evidence.structure)
        return LayerScores({kind: both[kind][reading] for kind in BOTH_KINDS})


def block_influence(hidden_in, hidden_out) -> float:
    """ShortGPT's BI: 1 - mean over tokens of cos(h_in, h_out)."""
    return float(1 - token_cosines(hidden_in, hidden_out).mean())


class ShortGPT(StructuredMethod):
    name = "shortgpt"
    description = "remove whole decoder layers of lowest block influence 1 - mean cos(h_in, h_out)"
    kinds = ("layers",)
    needs_hidden = True

    def score_layer(self, evidence, **args):
        return LayerScores(importance=block_influence(evidence.hidden_in, evidence.hidden_out))


@hookimpl
def register_statistics(register):
    register(InputMoments())


@hookimpl
def register_structured_methods(register):
    for method in (GroupMagnitude(), WandaSP(), FLAP(), LLMPrunerTaylor(), ShortGPT()):
        register(method)
