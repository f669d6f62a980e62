"""Sparsity targets: an unstructured ratio or an N:M pattern, parsed from user input."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class SparsityTarget:
    """Either `ratio` (fraction of weights zeroed) or `n`:`m` (n zeros in every m inputs).

    `exact_count`: prune round(numel * ratio) weights of each matrix even with per-row groups, some
    rows one more than others. Off by default, as Wanda prunes int(in * ratio) of every row; on for
    layer-wise allocations, whose ratios rarely give whole counts per row, so that the flooring
    would pull the model's sparsity below its target.
    """

    ratio: float
    n: int | None = None
    m: int | None = None
    exact_count: bool = False

    @property
    def is_n_m(self) -> bool:
        return self.m is not None

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.is_n_m else f"{self.ratio:g}"

    def with_ratio(self, ratio: float) -> "SparsityTarget":
        """The same kind of target at another ratio with an exact count (used by layer-wise allocation)."""
        if self.is_n_m:
            raise UsageError("Layer-wise sparsity allocation needs an unstructured ratio, not N:M.")
        return SparsityTarget(ratio=ratio, exact_count=True)


def parse_sparsity(value: "str | float | SparsityTarget") -> SparsityTarget:
    """Parse 0.5, '0.5' or '2:4'; reject ratios outside (0, 1) and N:M with N >= M."""
    if isinstance(value, SparsityTarget):
        return value
    text = str(value).strip()
    if ":" in text:
        parts = text.split(":")
        try:
            n, m = (int(p) for p in parts)
        except ValueError:
            raise UsageError(f"Bad sparsity '{text}': write N:M with integers, e.g. 2:4.") from None
        if not 0 < n < m:
            raise UsageError(f"Bad sparsity '{text}': N:M needs 0 < N < M, e.g. 2:4 or 4:8.")
        return SparsityTarget(ratio=n / m, n=n, m=m)
    try:
        ratio = float(text)
    except ValueError:
        raise UsageError(f"Bad sparsity '{text}': give a ratio in (0, 1) like 0.5, or N:M like 2:4.") from None
    if not 0.0 < ratio < 1.0:
        raise UsageError(f"Bad sparsity '{text}': the ratio must lie in (0, 1), e.g. 0.5.")
    return SparsityTarget(ratio=ratio)
