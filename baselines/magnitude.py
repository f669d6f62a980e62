"""Magnitude pruning: score |W|, one threshold for the whole matrix (REFERENCE.md section 3)."""
from __future__ import annotations

from prunebench import PruningMethod, hookimpl


class Magnitude(PruningMethod):
    name = "magnitude"
    description = "score |W_ij|; unstructured: lowest of the whole matrix; N:M per row"
    arguments = {"group": "layer"}

    def score(self, weight, stats, **args):
        return weight.abs()


@hookimpl
def register_methods(register):
    register(Magnitude())
