"""The Ray executor: each grid cell a Ray task with the resources the config asks, run where Ray
places it, while the driver (`prunebench.grid.runner.run_grid`) claims, resumes and persists exactly as
for the local executor.

The worker loads the model and the calibration tokens itself (nothing large crosses the network)
and returns the measured part of the record (`prunebench.grid.runner.execute_cell`) with the provenance
it ran under; the driver writes record.json and the leaderboard row as each task finishes.
"""
from __future__ import annotations

import os
import sys
import traceback

from ..api.errors import UsageError
from ..models.walk import compute_device
from .cells import Cell, cell_provenance, content_hash
from .config import BenchmarkConfig, Resources
from .runner import (
    SessionCache,
    execute_cell,
    failed_fields,
    merge_record,
)

RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install 'prunebench[ray]'."
# Settings that change what a cell computes travel to the workers (path values must name the same
# files on every node: a shared filesystem).
FORWARDED_ENVIRONMENT = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "PRUNEBENCH_LOAD_PLUGINS", "PRUNEBENCH_DATA_DIR",
                         "PRUNEBENCH_CACHE", "PRUNEBENCH_LASTWORD_TEXT")

# One per worker process: the cells of one model that Ray sends to the same worker share a load.
_WORKER_SESSIONS = SessionCache()


def import_ray():
    """Ray, or a UsageError saying how to install it (Ray is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def cell_device(config: BenchmarkConfig, resources: Resources) -> str:
    """The device a cell runs on in a Ray task: Ray hides the GPUs a task did not ask for."""
    if config.device != "auto":
        return config.device
    return "cuda" if resources.gpus > 0 else "cpu"


def expected_provenance(cell: Cell, config: BenchmarkConfig, resources: Resources) -> dict:
    """The provenance a worker will report (its threads and device), for the driver's resume check."""
    return dict(cell_provenance(cell, config), torch_threads=resources.cpus, device=cell_device(config, resources))


def run_cell_task(cell: Cell, config: BenchmarkConfig, threads: int, previous: dict | None = None,
                  remeasure: tuple[str, ...] = ()) -> dict:
    """What a Ray task runs: the cell in this worker, with the provenance and content hash it ran under."""
    import torch

    torch.set_num_threads(threads)  # the CPUs Ray reserved, not the node's core count
    device = compute_device(config.device, f"device {config.device} (on this Ray worker)",
                            "ask for one with resources: {gpus: 1}")
    provenance = cell_provenance(cell, config)
    return {"provenance": provenance, "hash": content_hash(cell, config, provenance),
            "result": execute_cell(cell, config, _WORKER_SESSIONS, device, progress=False, previous=previous,
                                   remeasure=remeasure)}


class RayExecutor:
    """Each cell a Ray task with the resources the config asks; `run_grid` claims, resumes and persists
    exactly as it does for the local executor.

    `address` is passed to `ray.init` (None: a Ray started here; "auto": the running cluster;
    "ray://host:port": a cluster through Ray Client). A Ray already initialised is used as it is.
    """

    def __init__(self, address: str | None = None):
        self.address = address
        self.pending: dict = {}  # ObjectRef -> (header, the record it extends, the ExitStack holding its claim)

    def prepare(self, config: BenchmarkConfig, cells: list[Cell], progress: bool) -> None:
        for model in {cell.model for cell in cells}:
            if config.device.startswith("cuda") and not config.cell_resources(model).gpus:
                raise UsageError(f"device {config.device} needs a GPU in every cell, but the cells of model "
                                 f"'{model.label}' ask Ray for no GPU (Ray hides the GPUs a task did not ask for); "
                                 "set resources: {gpus: 1}.")
        self.ray = ray = import_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise UsageError(f"Cannot reach the Ray cluster at {self.address or 'a new local Ray'} ({first}); "
                                 "start one with 'ray start --head' or give --address ray://host:port.") from None
        self.task = ray.remote(run_cell_task)
        self.environment = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}

    def provenance(self, cell: Cell, config: BenchmarkConfig) -> dict:
        return expected_provenance(cell, config, config.cell_resources(cell.model))

    def submit(self, cell, config, header, previous, remeasure, lock) -> None:
        resources = config.cell_resources(cell.model)
        options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_retries": resources.retries}
        if resources.memory_gb:
            options["memory"] = int(resources.memory_gb * 2**30)
        if self.environment:
            options["runtime_env"] = {"env_vars": self.environment}
        reference = self.task.options(**options).remote(cell, config, resources.cpus, previous, remeasure)
        self.pending[reference] = (header, previous, lock)

    def completed(self, wait: bool):
        """Records as their tasks finish; only when asked to wait (cells are all submitted first)."""
        while wait and self.pending:
            done, _ = self.ray.wait(list(self.pending), num_returns=1)
            header, previous, lock = self.pending.pop(done[0])
            try:
                record = _record(self.ray, done[0], header, previous)
            except BaseException:
                lock.close()
                raise
            yield record, previous, lock

    def cancel(self) -> None:
        for reference, (_, _, lock) in self.pending.items():
            self.ray.cancel(reference, force=True)
            lock.close()
        self.pending = {}


def _record(ray, reference, header: dict, previous: dict | None = None) -> dict:
    """The cell's record from its finished task; a task that died (worker killed, node lost) is a failed
    cell, or, when it was adding metrics to `previous`, a failed extension of that record."""
    try:
        returned = ray.get(reference)
    except ray.exceptions.RayError as error:
        cause = getattr(error, "cause", None) or error
        trace = str(error) if isinstance(error, ray.exceptions.RayTaskError) else traceback.format_exc()
        if previous is not None:
            return dict(previous, extensions=list(previous.get("extensions", [])) + [failed_fields(cause, trace)])
        return dict(header, **failed_fields(cause, trace))
    if previous is not None:
        return merge_record(dict(header, hash=returned["hash"]), returned["result"], previous)
    if returned["hash"] != header["hash"]:
        print(f"prunebench: {header['name']} ran with other provenance than the driver expected (threads, device "
              "or library versions of the worker); its record holds the worker's, so a rerun will repeat it",
              file=sys.stderr)
    return dict(header, hash=returned["hash"], provenance=returned["provenance"], **returned["result"])
