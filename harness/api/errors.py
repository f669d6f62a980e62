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


class WriteError(UsageError):
    """A file could not be written (disk full, read-only, no permission). Writers that raise it have
    removed their temporary file, so nothing half-written is left behind."""


def cannot_write(path, error: OSError) -> WriteError:
    """The one-line answer to an OSError while writing `path`."""
    import errno

    reason = error.strerror or str(error) or type(error).__name__
    fix = "free some disk space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "check the permissions or give another path"
    return WriteError(f"Cannot write {path} ({reason}); nothing was half-written; {fix} and rerun.")


def plugin_failure(what: str, plugin: str, error: BaseException) -> UsageError:
    """A plugin's code raised while doing `what`: one line naming the plugin (the traceback is for --debug)."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    detail = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return UsageError(f"{what} failed in plugin {plugin} ({detail}); rerun with --debug for the traceback.")


def raised_in(error: BaseException, modules: set[str]) -> bool:
    """Whether code of one of `modules` is on `error`'s traceback (it raised there, or called what did)."""
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_globals.get("__name__") in modules:
            return True
        trace = trace.tb_next
    return False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C: locks are released and temporary
    files removed on the way out. A KeyboardInterrupt, so code that lets Ctrl-C through lets it through."""
