"""Turns a structured budget into per-layer removal counts: the plan every allocation reads, the
rounding rules, and the built-in allocations (a plugin): uniform, which also serves unstructured
pruning (every layer at the target), and FLAP's global ranking."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..api.allocation import LayerAllocation
from ..api.errors import UsageError
from ..api.hookspecs import hookimpl
from ..api.structured import LayerScores


@dataclass
class LayerBudget:
    """One layer's structures: how many of each kind and what one of each costs in parameters."""

    counts: dict[str, int]
    unit_parameters: dict[str, int]
    parameters: int  # all prunable parameters of the layer (also kinds the method leaves alone)


@dataclass
class Plan:
    """Everything an allocation may read: the budget, each layer's structures and scores."""

    sparsity: float  # fraction of the prunable parameters to remove
    kinds: tuple[str, ...]
    layers: list[LayerBudget]
    scores: list[LayerScores]
    round_to: int = 1

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    def max_ratio(self, index: int) -> float:
        """The largest fraction of layer `index` that can go while one head and `round_to` channels stay."""
        layer = self.layers[index]
        removable = 0
        for kind in self.kinds:
            keep = self.round_to if kind == "channels" else 1
            removable += max(0, layer.counts[kind] - keep) * layer.unit_parameters[kind]
        return removable / layer.parameters

    def counts_for_ratios(self, ratios: list[float]) -> list[dict[str, int]]:
        """Per layer, removal counts that take about `ratios[l]` of the layer's prunable parameters.

        Heads go in proportion (rounded half up); channels then make up the rest of the layer's
        parameter budget, so the layer lands near its ratio despite coarse heads. Channel counts
        kept are multiples of `round_to`. Removing every head or channel of a layer is refused.
        """
        result = []
        for index, (layer, ratio) in enumerate(zip(self.layers, ratios)):
            budget = ratio * layer.parameters
            removed: dict[str, int] = {}
            if "heads" in self.kinds:
                share = ratio if "channels" in self.kinds else budget / (layer.counts["heads"] * layer.unit_parameters["heads"])
                heads = math.floor(share * layer.counts["heads"] + 0.5)
                if heads >= layer.counts["heads"]:
                    raise UsageError(f"Sparsity {self.sparsity:g} would remove every attention head of layer {index} "
                                     f"({layer.counts['heads']} key/value groups); lower the sparsity.")
                removed["heads"] = heads
                budget -= heads * layer.unit_parameters["heads"]
            if "channels" in self.kinds:
                total = layer.counts["channels"]
                channels = max(0.0, budget / layer.unit_parameters["channels"])
                kept = round_kept(total - channels, self.round_to)
                if kept <= 0:
                    raise UsageError(f"Sparsity {self.sparsity:g} would remove every FFN channel of layer {index}; "
                                     "lower the sparsity (or the rounding).")
                removed["channels"] = max(0, total - kept)
            result.append(removed)
        return result

    def most_removable(self) -> float:
        """The largest fraction of all prunable parameters that can go while every layer keeps one
        head and `round_to` channels."""
        return sum(self.max_ratio(i) * layer.parameters for i, layer in enumerate(self.layers)) / self.parameters

    def check_reachable(self) -> None:
        """Refuse a budget no allocation can meet (layout only: callable before any scoring)."""
        if self.sparsity > self.most_removable() + 1e-9:
            raise UsageError(f"Sparsity {self.sparsity:g} cannot be reached while every layer keeps a head and "
                             f"a channel; the most is {self.most_removable():.3f}.")

    def capped(self, ratios: list[float]) -> list[float]:
        """`ratios` clipped to [0, max_ratio] per layer, the excess spread over the others (mean kept)."""
        caps = [self.max_ratio(i) for i in range(len(self.layers))]
        weights = [layer.parameters for layer in self.layers]
        target = sum(r * w for r, w in zip(ratios, weights))
        if target > sum(c * w for c, w in zip(caps, weights)) + 1e-9:
            raise UsageError(f"Sparsity {self.sparsity:g} cannot be reached while every layer keeps a head and "
                             f"a channel; the most is {self.most_removable():.3f}.")
        ratios = [min(max(r, 0.0), c) for r, c in zip(ratios, caps)]
        for _ in range(len(ratios)):  # water-filling: each pass fills at least one more layer to its cap
            missing = target - sum(r * w for r, w in zip(ratios, weights))
            free = [i for i, (r, c) in enumerate(zip(ratios, caps)) if r < c - 1e-12]
            if abs(missing) < 1e-6 * target or not free:
                break
            room = sum(weights[i] for i in free)
            ratios = [min(c, r + missing / room) if i in free else r for i, (r, c) in enumerate(zip(ratios, caps))]
        return ratios


def round_kept(kept: float, multiple: int) -> int:
    """The kept count rounded to the nearest multiple of `multiple` (1: to the nearest integer)."""
    return int(math.floor(kept / multiple + 0.5)) * multiple


def mean_preserving_ratios(plan: Plan, weights: list[float]) -> list[float]:
    """Per-layer ratios proportional to `weights` whose parameter-weighted mean is the sparsity, capped."""
    params = [layer.parameters for layer in plan.layers]
    scale = plan.sparsity * sum(params) / sum(w * p for w, p in zip(weights, params))
    return plan.capped([w * scale for w in weights])


class Uniform(LayerAllocation):
    name = "uniform"
    description = "every layer loses the same fraction of its prunable parameters (unstructured: every layer at the target)"
    tracks = ("unstructured", "structured")
    needs_scores = False

    def layer_sparsities(self, model, calibration, target, settings, *, batch_size, device, progress):
        from ..models.walk import decoder_layers

        return [target] * len(decoder_layers(model))  # the target itself: N:M stays a pattern, counts as given

    def allocate(self, plan, **args):
        return plan.counts_for_ratios(mean_preserving_ratios(plan, [1.0] * len(plan.layers)))


class GlobalRanking(LayerAllocation):
    name = "global"
    description = "FLAP's adaptive structure: scores standardised per kind, lowest removed model-wide"

    def allocate(self, plan, **args):
        import torch

        entries = []  # (standardised score, layer, kind, unit parameters)
        for kind in plan.kinds:
            values = torch.cat([s.scores[kind].double() for s in plan.scores])
            mean, std = values.mean(), values.std() if values.numel() > 1 else torch.tensor(1.0)
            for index, layer_scores in enumerate(plan.scores):
                standard = (layer_scores.scores[kind].double() - mean) / (std if std > 0 else 1.0)
                entries += [(float(v), index, kind) for v in standard]
        entries.sort(key=lambda e: e[0])
        removed = [{kind: 0 for kind in plan.kinds} for _ in plan.layers]
        budget = plan.sparsity * plan.parameters
        for _, index, kind in entries:
            if budget <= 0:
                break
            layer = plan.layers[index]
            keep = plan.round_to if kind == "channels" else 1
            if layer.counts[kind] - removed[index][kind] <= keep:
                continue  # each layer keeps at least one head and `round_to` channels
            removed[index][kind] += 1
            budget -= layer.unit_parameters[kind]
        if budget > 0:
            raise UsageError(f"Sparsity {plan.sparsity:g} would remove every attention head or FFN channel of some "
                             "layers; lower the sparsity.")
        if "channels" in plan.kinds and plan.round_to > 1:
            for index, layer in enumerate(plan.layers):
                total = layer.counts["channels"]
                kept = max(plan.round_to, round_kept(total - removed[index]["channels"], plan.round_to))
                removed[index]["channels"] = total - kept
        return removed


@hookimpl
def register_allocations(register):
    register(Uniform())
    register(GlobalRanking())
