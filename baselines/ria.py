"""RIA (Zhang et al., ICLR 2024): relative importance times activation, with channel reallocation."""
from __future__ import annotations

from typing import TYPE_CHECKING

from prunebench import PruningMethod, hookimpl

if TYPE_CHECKING:
    import torch


def relative_importance(weight: torch.Tensor) -> torch.Tensor:
    """|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|: normalised over the column and over the row."""
    magnitude = weight.abs()
    return magnitude / magnitude.sum(dim=0, keepdim=True) + magnitude / magnitude.sum(dim=1, keepdim=True)


def snake_permutation(column_importance: torch.Tensor, m: int) -> torch.Tensor:
    """Column order that deals channels into groups of m, one per importance tier, in snake order.

    Columns sorted by importance form m tiers of width/m channels; tier t fills position t of every
    group, left to right for even t and right to left for odd t. Returns `perm` such that the
    permuted matrix is `scores[:, perm]`.
    """
    import torch

    width = column_importance.numel()
    groups = width // m
    order = torch.argsort(column_importance, descending=True, stable=True)
    tiers = order.view(m, groups).clone()
    tiers[1::2] = tiers[1::2].flip(dims=[1])
    return tiers.t().reshape(-1)  # group g, position t -> tiers[t, g]


class RIA(PruningMethod):
    name = "ria"
    description = "(|W|/colsum + |W|/rowsum) * ||X_j||^a; whole-matrix groups; N:M per row, optional reallocation"
    statistics = ("input_sq_norm",)
    arguments = {"group": "layer", "a": 0.5, "reallocation": False}

    def score(self, weight, stats, group="layer", a=0.5, reallocation=False):
        return relative_importance(weight) * stats["input_sq_norm"].sqrt().pow(a).reshape(1, -1)

    def select(self, weight, stats, context, **args):
        import torch

        scores = self.score(weight, stats, **args)
        target = context.target
        if not (args["reallocation"] and target.is_n_m):
            return context.make_mask(scores, target, args["group"])
        perm = snake_permutation(scores.sum(dim=0), target.m)
        permuted_mask = context.make_mask(scores[:, perm], target, args["group"])
        mask = torch.empty_like(permuted_mask)
        mask[:, perm] = permuted_mask
        return mask


@hookimpl
def register_methods(register):
    register(RIA())
