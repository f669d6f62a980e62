"""The one exception type that reaches the user as a one-line message."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """Bad input: the message names the problem and the fix; the CLI prints it and exits 2."""


def did_you_mean(kind: str, name: str, known: Iterable[str], limit: int | None = None,
                 more: str = "") -> UsageError:
    """An 'Unknown <kind>' error with the closest known names, then the known names (at most `limit`
    of them; `more` says where to find the rest)."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    if limit is not None and len(known) > limit:
        rest = f" and {len(known) - limit} more" + (f" ({more})" if more else "")
        return UsageError(f"Unknown {kind} '{name}'.{hint} Known: {', '.join(known[:limit])}{rest}.")
    return UsageError(f"Unknown {kind} '{name}'.{hint} Known: {', '.join(known)}.")
