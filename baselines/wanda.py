"""Wanda (Sun et al. 2023): score |W_ij| * ||X_j||, compared within each output row."""
from __future__ import annotations

from prunebench import PruningMethod, hookimpl


class Wanda(PruningMethod):
    name = "wanda"
    description = "score |W_ij| * sqrt(mean_seq sum_t x_tj^2); per-row groups; N:M per row"
    statistics = ("input_sq_norm",)
    arguments = {"group": "row"}

    def score(self, weight, stats, **args):
        return weight.abs() * stats["input_sq_norm"].sqrt().reshape(1, -1)


@hookimpl
def register_methods(register):
    register(Wanda())
