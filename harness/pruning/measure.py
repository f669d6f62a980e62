"""What a pruning pass measures of itself: seconds per section (one CUDA-synchronised stopwatch) and the
peak memory of a code region (resident memory on CPU, allocator peak on CUDA)."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def resident_bytes() -> int:
    """Current resident set size of this process."""
    return _read_status_kb("VmRSS") * 1024


def _read_status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_resident_peak() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0); unprivileged for one's own process.
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


@dataclass
class PeakMemory:
    device: str
    before_bytes: int = 0
    peak_bytes: int = 0

    @property
    def growth_bytes(self) -> int:
        return max(0, self.peak_bytes - self.before_bytes)


@contextmanager
def measure_peak_memory(device: torch.device):
    """Yield a PeakMemory filled in on exit: CUDA allocator peak, or process resident peak."""
    device = torch.device(device)
    record = PeakMemory(device=str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        record.before_bytes = torch.cuda.memory_allocated(device)
        yield record
        torch.cuda.synchronize(device)
        record.peak_bytes = torch.cuda.max_memory_allocated(device)
        return
    record.before_bytes = resident_bytes()
    if _reset_resident_peak():
        yield record
        record.peak_bytes = _read_status_kb("VmHWM") * 1024
        return
    # No clear_refs: sample the resident size from a thread instead.
    stop = threading.Event()
    samples = [record.before_bytes]

    def sample() -> None:
        while not stop.wait(0.005):
            samples.append(resident_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield record
    finally:
        stop.set()
        sampler.join()
        record.peak_bytes = max(samples + [resident_bytes()])


class Stopwatch:
    """Seconds per named section. CUDA work is synchronised at every boundary, so a section holds the
    kernels it launched; a section opened inside another pauses the outer one, so that no second is
    counted twice."""

    def __init__(self, device: "torch.device | str", sections: tuple[str, ...] = ()):
        self.device = torch.device(device)
        self.totals: dict[str, float] = dict.fromkeys(sections, 0.0)
        self._open: list[list] = []  # [section, when it (re)started]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def time(self, section: str):
        self.sync()
        now = time.perf_counter()
        if self._open:
            outer = self._open[-1]
            self.totals[outer[0]] = self.totals.get(outer[0], 0.0) + now - outer[1]
        self._open.append([section, now])
        try:
            yield
        finally:
            self.sync()
            now = time.perf_counter()
            name, started = self._open.pop()
            self.totals[name] = self.totals.get(name, 0.0) + now - started
            if self._open:
                self._open[-1][1] = now
