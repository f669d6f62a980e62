"""Magnitude pruning: score |W|, one threshold for the whole matrix (as Wanda's repository does)."""
from __future__ import annotations

from prunebench import PruningMethod, hookimpl, tied_at_cut


class Magnitude(PruningMethod):
    name = "magnitude"
    description = "score |W_ij|; unstructured: lowest of the whole matrix; N:M per row"
    arguments = {"group": "layer"}

    def score(self, weight, stats, **args):
        return weight.abs()

    def diagnose(self, weight, stats, context, **args):
        # Checkpoints dequantised from few bits (SmolLM2's GGUF) hold many equal |W|; where a tie
        # straddles the cut, position alone decides what is pruned. The report says how often.
        context.count("tied_at_cut", *tied_at_cut(weight.abs(), context.target, args.get("group", "layer")))


@hookimpl
def register_methods(register):
    register(Magnitude())
