"""The Ray executor: each grid cell a Ray task with the resources the config asks, run where Ray
places it, while the driver claims, resumes and persists exactly as the local runner does.

The worker loads the model and the calibration tokens itself (nothing large crosses the network)
and returns the measured part of the record (`prunebench.grid.runner.execute_cell`) with the provenance
it ran under; the driver writes record.json and the leaderboard row as each task finishes.
"""
from __future__ import annotations

import os
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path

from tqdm.auto import tqdm

from ..api.errors import UsageError
from ..models.walk import compute_device
from ..store.results import ResultsStore
from .cells import Cell, cell_provenance, content_hash
from .config import BenchmarkConfig, Resources
from .runner import (
    RunSummary,
    SessionCache,
    cell_plan,
    execute_cell,
    failed_fields,
    finish_cell,
    merge_record,
    record_header,
    select_cells,
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


def run_grid_ray(config: BenchmarkConfig, results_dir: "str | Path", *, filters: dict | None = None,
                 force: bool = False, fail_fast: bool = False, progress: bool = True, echo=tqdm.write,
                 address: str | None = None, remeasure: tuple[str, ...] = ()) -> RunSummary:
    """`prunebench.grid.runner.run_grid` with the cells as Ray tasks: same records, resume, locks and summary.

    `address` is passed to `ray.init` (None: a Ray started here; "auto": the running cluster;
    "ray://host:port": a cluster through Ray Client). A Ray already initialised is used as it is.
    """
    cells = select_cells(config, filters or {})
    for model in {cell.model for cell in cells}:
        if config.device.startswith("cuda") and not config.cell_resources(model).gpus:
            raise UsageError(f"device {config.device} needs a GPU in every cell, but the cells of model '{model.label}' "
                             "ask Ray for no GPU (Ray hides the GPUs a task did not ask for); set resources: {gpus: 1}.")
    ray = import_ray()
    store = ResultsStore(results_dir)
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UsageError(f"Cannot reach the Ray cluster at {address or 'a new local Ray'} ({first}); "
                             "start one with 'ray start --head' or give --address ray://host:port.") from None
    task = ray.remote(run_cell_task)
    environment = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}
    summary = RunSummary()
    # --force reruns the records there when this run began, not one another runner writes meanwhile.
    stamps = {cell.name: store.record_stamp(cell.name) for cell in cells}
    deferred: list[Cell] = []  # held by another process: tried once more at the end, in case it died
    pending: dict = {}  # ObjectRef -> (header, the ExitStack that holds the cell's lock)
    bar = tqdm(total=len(cells), desc="cells", disable=not progress)

    def submit(cell: Cell, last_try: bool) -> None:
        resources = config.cell_resources(cell.model)
        provenance = expected_provenance(cell, config, resources)
        cell_hash = content_hash(cell, config, provenance)
        lock = ExitStack()
        # The driver holds every submitted cell's lock until its record is written, as `run_grid` does.
        if not lock.enter_context(store.claim(cell.name)):
            lock.close()
            if last_try:
                summary.busy.append(cell.name)
                bar.update()
            else:
                deferred.append(cell)
            return
        header = record_header(cell, config, cell_hash, provenance)
        action, previous, again = cell_plan(store, cell, header, force, stamps[cell.name], remeasure)
        if action == "skip":
            lock.close()
            summary.skipped.append(cell.name)
            bar.update()
            return
        options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_retries": resources.retries}
        if resources.memory_gb:
            options["memory"] = int(resources.memory_gb * 2**30)
        if environment:
            options["runtime_env"] = {"env_vars": environment}
        reference = task.options(**options).remote(cell, config, resources.cpus, previous, again)
        pending[reference] = (header, previous, lock)

    def drain() -> bool:
        """Persist records as their tasks finish; True when -x stops the run."""
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            header, previous, lock = pending.pop(done[0])
            try:
                record = _record(ray, done[0], header, previous)
                finish_cell(store, summary, record, echo, extended=previous is not None)
            finally:
                lock.close()
            bar.update()
            if fail_fast and summary.failed and summary.failed[-1][0] == record["name"]:
                return True
        return False

    try:
        for cell in cells:
            submit(cell, last_try=False)
        if not drain():
            for cell in list(deferred):
                submit(cell, last_try=True)
            drain()
    finally:
        for reference, (_, _, lock) in pending.items():  # -x, an interrupt or a driver error: stop the rest
            ray.cancel(reference, force=True)
            lock.close()
        bar.close()
    return summary


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
