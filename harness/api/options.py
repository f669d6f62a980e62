"""The closed choice lists that the command line, the grid config and the engine share (no torch here)."""
from __future__ import annotations

PROPAGATIONS = ("pruned", "dense")  # what feeds the next decoder layer: the pruned or the dense outputs
DTYPES = ("float32", "float16", "bfloat16")  # the torch dtype names a model loads in
