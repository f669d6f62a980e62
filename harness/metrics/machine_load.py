"""How loaded the machine is by other work, so that timings taken on a busy machine can be marked.

Read from /proc (Linux) without new dependencies: the CPU time all processes used over a short
window, minus this process's own, gives the share other processes took; the 1-minute load average
is recorded beside it. Where /proc is missing the shares are None and only the load average counts.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
PROC_SELF_STAT = Path("/proc/self/stat")
# Other processes using more than this many cores on average make a timing contended.
CONTENDED_CORES = 0.25
# A 1-minute load average this far above what this run itself puts on the machine is contended too.
LOADAVG_MARGIN = 1.0


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from the first line of /proc/stat."""
    try:
        fields = [int(v) for v in PROC_STAT.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already counted in user).
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = sum(fields[:8]) - idle
    return busy, busy + idle


def _own_ticks() -> int | None:
    """User + system clock ticks used by this process (all its threads) since it started."""
    try:
        text = PROC_SELF_STAT.read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def _loadavg1() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def sample_load(window: float = 0.25) -> dict:
    """{"loadavg1", "busy_cpu_share"}: busy_cpu_share is the share of all CPUs' time that OTHER
    processes used during a `window`-second sleep of this one (None where /proc is unavailable)."""
    machine_start, own_start = _machine_ticks(), _own_ticks()
    time.sleep(window)
    machine_end, own_end = _machine_ticks(), _own_ticks()
    share = None
    if None not in (machine_start, own_start, machine_end, own_end) and machine_end[1] > machine_start[1]:
        others = (machine_end[0] - machine_start[0]) - (own_end - own_start)
        share = min(1.0, max(0.0, others / (machine_end[1] - machine_start[1])))
    return {"loadavg1": _loadavg1(), "busy_cpu_share": share}


def is_contended(sample: dict, own_load: float, cpus: int | None = None) -> bool:
    """Whether other work loaded the machine: more than CONTENDED_CORES cores busy with other
    processes, or a load average clearly above `own_load` (the threads this run keeps busy)."""
    cpus = cpus or os.cpu_count() or 1
    share, loadavg = sample.get("busy_cpu_share"), sample.get("loadavg1")
    if share is not None and share * cpus > CONTENDED_CORES:
        return True
    return loadavg is not None and loadavg > own_load + LOADAVG_MARGIN


def load_record(start: dict, end: dict, own_load: float) -> dict:
    """The record's `load` field: both samples and whether either shows contention."""
    return {"start": start, "end": end,
            "contended": is_contended(start, own_load) or is_contended(end, own_load)}
