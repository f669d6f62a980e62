"""Runs a benchmark grid: one model load per model, cached calibration and evaluation tokens,
resume by content hash, failures recorded per cell while the grid goes on."""
from __future__ import annotations

import datetime
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from .. import registry
from ..api.errors import UsageError
from ..api.metric import DENSE, PRUNED, MetricContext
from ..api.records import UNSTRUCTURED, is_finished, is_structured_record, measured_contended, pruned_layout
from ..data.datasets import calibration_windows, evaluation_text, tokenize_text
from ..metrics.machine_load import load_record, sample_load
from ..metrics.perplexity import measured_sparsity, perplexity
from ..metrics.run import headline, run_metrics
from ..models.loading import check_fits_context, load_model
from ..models.walk import compute_device, decoder_layers, dense_twin, on_device, prunable_linears
from ..pruning.engine import prune
from ..store.results import ResultsStore
from .cells import (
    Cell,
    cell_provenance,
    content_hash,
    expand,
    metric_descriptors,
)
from .config import BenchmarkConfig
from .structured_cells import is_structured_cell, prune_structured_copy

UNSTRUCTURED_DETAILS = ("propagate", "allocation", "device", "linear_sparsity")  # what is not timed
FILTER_KEYS = ("model", "method", "sparsity", "seqlen", "seed", "calibration", "nsamples")


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def parse_filters(pairs: list[str]) -> dict[str, set[str]]:
    """`--only key=value` pairs; a key given twice matches either value."""
    filters: dict[str, set[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in FILTER_KEYS:
            raise UsageError(f"Bad --only '{pair}': write KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}.")
        filters.setdefault(key, set()).add(value)
    return filters


def select_cells(config: BenchmarkConfig, filters: dict[str, set[str]]) -> list[Cell]:
    """The grid's cells that pass the filters; a dense baseline stays when its model is selected."""
    chosen = []
    for cell in expand(config):
        fields = cell.fields()
        if cell.method is None:
            if "model" in filters and fields["model"] not in filters["model"]:
                continue
        elif any(fields[key] not in values for key, values in filters.items()):
            continue
        chosen.append(cell)
    return chosen


def cell_status(store: ResultsStore, cell: Cell, config: BenchmarkConfig) -> str:
    record = store.read(cell.name)
    if record is None:
        return "pending"
    if record.get("hash") != content_hash(cell, config):
        if extendable(record, content_hash(cell, config, metrics=False), force=False):
            return "done (metrics to add)"
        return "stale"
    return {"ok": "done", "diverged": "done (diverged)"}.get(record.get("status"), record.get("status", "pending"))


class _ModelSession:
    """One loaded model with its dense weights kept in memory, and token caches."""

    def __init__(self, cell: Cell, config: BenchmarkConfig):
        self.source = cell.model.source
        self.model, self.tokenizer = load_model(cell.model.source, config.dtype)
        # Only the prunable weights change; keep their dense values to restore between cells.
        self.weights = [linear.weight for layer in decoder_layers(self.model) for linear in prunable_linears(layer).values()]
        self.dense = [w.detach().clone() for w in self.weights]
        self.calibration: dict[tuple, torch.Tensor] = {}
        self.evaluation: dict[str, torch.Tensor] = {}

    def restore_dense(self) -> None:
        with torch.no_grad():
            for weight, dense in zip(self.weights, self.dense):
                weight.copy_(dense)

    def dense_copy(self) -> torch.nn.Module:
        """A copy of the model with the dense weights (for metrics that compare pruned with dense)."""
        return dense_twin(self.model, self.dense)

    def calibration_tokens(self, cell: Cell, config: BenchmarkConfig) -> torch.Tensor:
        key = (cell.calibration_dataset, cell.nsamples, cell.seqlen, cell.seed)
        if key not in self.calibration:
            # The session's model is dense here (restored before every cell), as `generated` needs.
            self.calibration[key] = calibration_windows(self.tokenizer, cell.calibration_dataset, cell.nsamples,
                                                        cell.seqlen, cell.seed, config.data_dir, model=self.model)
        return self.calibration[key]

    def evaluation_tokens(self, dataset: str, config: BenchmarkConfig) -> torch.Tensor:
        if dataset not in self.evaluation:
            self.evaluation[dataset] = tokenize_text(self.tokenizer, evaluation_text(dataset, config.data_dir))
        return self.evaluation[dataset]


def _evaluate(cell: Cell, session: _ModelSession, config: BenchmarkConfig, device: torch.device,
              progress: bool, model: torch.nn.Module, specs: list | None = None) -> tuple[dict, bool]:
    """The cell's metrics on `model` (from the registry, as the grid names them, or `specs`): (record
    fields, diverged). The session's model is dense whenever `model` is a structured copy."""
    context = MetricContext(model=model, tokenizer=session.tokenizer, device=device, data_dir=config.data_dir,
                            progress=progress, cell_kind=DENSE if cell.method is None else PRUNED,
                            sparsity=cell.sparsity, method=cell.method_label, cell=cell.name,
                            eval_seqlen=config.eval_seqlen,
                            evaluation_tokens=lambda dataset: session.evaluation_tokens(dataset, config),
                            dense_model=session.dense_copy, structured=is_structured_cell(cell))
    return run_metrics(config.metric_specs(cell) if specs is None else specs, context)


def _prune_cell(cell: Cell, session: _ModelSession, config: BenchmarkConfig, device: torch.device,
                progress: bool) -> tuple[dict, torch.nn.Module]:
    """Put the cell's model in place (dense weights, then the cell's pruning): the pruning part of its
    record, and the model to measure (the session's own, or a structured cell's pruned copy)."""
    lengths = {f"evaluation.perplexity[{i}].seqlen": spec.seqlen for i, spec in enumerate(config.perplexity)}
    if cell.method is not None:
        lengths["calibration length"] = cell.seqlen
    check_fits_context(session.model, cell.model.label, lengths)  # validate cannot see a hub or GGUF model's
    if is_structured_cell(cell):
        return prune_structured_copy(cell, session, config, device, progress)
    record: dict = {}
    session.restore_dense()
    if cell.method is not None:
        calibration = session.calibration_tokens(cell, config)
        report = prune(session.model, cell.method.method, cell.sparsity, calibration, batch_size=config.batch_size,
                       device=device, propagate=config.propagate, progress=progress, allocation=cell.method.allocation,
                       allocation_settings=dict(cell.method.allocation_settings), **cell.method.args)
        record.update(timings=report.timings, peak_memory_bytes=report.peak_memory_bytes,
                      memory_before_bytes=report.memory_before_bytes, notes=report.notes,
                      layer_targets=report.layer_targets, diagnostics=report.diagnostics)
        # What the report says beyond those (propagation and allocation as run, the device, per-linear
        # sparsity), as a structured cell keeps its report under its kind.
        record.update(kind=UNSTRUCTURED, **{UNSTRUCTURED: {key: value for key, value in report.to_dict().items()
                                                           if key in UNSTRUCTURED_DETAILS}})
    record["measured_sparsity"] = measured_sparsity(session.model)
    return record, session.model


def _run_cell(cell: Cell, session: _ModelSession, config: BenchmarkConfig, device: torch.device, progress: bool,
              measured=None) -> dict:
    record, model = _prune_cell(cell, session, config, device, progress)
    evaluated, diverged = _evaluate(cell, session, config, device, progress, model)
    if measured is not None:
        measured(model)
    record.update(evaluated)
    record["status"] = "diverged" if diverged else "ok"
    return record


def _extend_cell(cell: Cell, session: _ModelSession, config: BenchmarkConfig, device: torch.device, progress: bool,
                 previous: dict, remeasure: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """A finished cell's record with the grid's metrics it lacks: the cell is pruned again, checked to
    be the model the record measured (per-layer sparsity, or kept structures of a structured cell, and
    first perplexity window), then only the missing metrics run, and those named in `remeasure` run
    again (their new values replace the old, which the extension entry keeps). The rest of the record
    is kept. Returns the record and its `extensions` entry (which metrics ran, the re-pruning's timings)."""
    pruned, model = _prune_cell(cell, session, config, device, progress)
    _check_reproduced(cell, session, config, device, previous, pruned, model)
    done = previous.get("evaluation_metrics") or []
    missing = [spec for spec, described in zip(config.metrics_for(cell), metric_descriptors(config, cell))
               if described not in done or spec.name in remeasure]
    evaluated, diverged = _evaluate(cell, session, config, device, progress, model, specs=missing)
    record = {key: value for key, value in previous.items() if key not in ("schema", "hash")}
    for key, value in evaluated.items():
        record[key] = dict(record.get(key) or {}, **value) if isinstance(value, dict) else value
    if diverged:
        record["status"] = "diverged"
    extension = {"metrics": [spec.name for spec in missing], "prune_timings": pruned.get("timings")}
    if remeasure:
        extension["remeasured"] = {name: registry.get_metric(name).result_of(previous) for name in remeasure}
    return record, extension


def _check_reproduced(cell: Cell, session: _ModelSession, config: BenchmarkConfig, device: torch.device,
                      previous: dict, pruned: dict, model: torch.nn.Module) -> None:
    """Refuse to add metrics to a record whose model (`model`, pruned again) this run did not reproduce."""
    if pruned_layout(pruned) != pruned_layout(previous):
        what = "kept heads, channels or layers" if is_structured_record(pruned) else "per-layer sparsities"
        raise RuntimeError(f"re-pruning {cell.name} gave other {what} than its record; rerun the cell with --force.")
    spec = config.perplexity[0] if config.perplexity else None
    stored = ((previous.get("perplexity") or {}).get(spec.label) or {}).get("window_nlls") if spec else None
    if not stored:
        return
    with on_device(model, device):
        again = perplexity(model, session.evaluation_tokens(spec.dataset, config), spec.seqlen, 1,
                           device=device).window_nlls[0]
    if abs(again - stored[0]) > 1e-3 * max(1.0, abs(stored[0])):
        raise RuntimeError(f"re-pruning {cell.name} gave a first-window NLL of {again:.6f}, its record {stored[0]:.6f}; "
                           "rerun the cell with --force.")


class SessionCache:
    """The last cell's loaded model: consecutive cells of one model share one load (one per process)."""

    def __init__(self):
        self.session: _ModelSession | None = None

    def get(self, cell: Cell, config: BenchmarkConfig) -> _ModelSession:
        if self.session is None or self.session.source != cell.model.source:
            self.session = None  # free the previous model first
            self.session = _ModelSession(cell, config)
        return self.session


def execute_cell(cell: Cell, config: BenchmarkConfig, sessions: SessionCache, device: torch.device,
                 progress: bool = False, previous: dict | None = None, remeasure: tuple[str, ...] = (),
                 raise_errors: bool = False, measured=None) -> dict:
    """Run one cell where this process is and return the measured part of its record (started ..
    finished); a failing cell returns status "failed" with its error instead of raising. Executors
    call this (locally, or on a Ray worker) and the driver adds `record_header` and persists.

    With `previous` (a finished record of the same cell whose base hash matches, see `extendable`)
    only the metrics it lacks run; the result is that record with them added, and an `extensions`
    entry saying when and what. A failing extension keeps the record as it was and says why there.

    `raise_errors`: a failure raises instead (`prunebench prune`, one cell without a store, says it in
    one line); `measured(model)` is called with the model the cell measured (prune saves it)."""
    started = datetime.datetime.now(datetime.timezone.utc)
    result: dict = {"started": started.isoformat()}
    load_at_start = sample_load()
    begin = time.perf_counter()
    extension: dict = {}
    try:
        session = sessions.get(cell, config)
        if previous is None:
            result.update(_run_cell(cell, session, config, device, progress, measured))
        else:
            record, extension = _extend_cell(cell, session, config, device, progress, previous, remeasure)
            result = record
    except KeyboardInterrupt:
        raise
    except Exception as error:  # one cell's failure (a plugin raising, a bad file) never stops the grid
        if raise_errors:
            raise
        if previous is None:
            result.update(failed_fields(error, traceback.format_exc()))
        else:
            result = {key: value for key, value in previous.items() if key != "schema"}
            extension = failed_fields(error, traceback.format_exc())
    measured = {"wall_seconds": time.perf_counter() - begin,
                # This run keeps torch's threads busy; a load average above that is someone else's.
                "load": load_record(load_at_start, sample_load(), own_load=torch.get_num_threads()),
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    if previous is None:
        result.update(measured)
    else:
        result["extensions"] = list(previous.get("extensions", [])) + [dict(extension, started=started.isoformat(),
                                                                            **measured)]
    return result


def extendable(record: dict | None, base_hash: str, force: bool) -> bool:
    """Whether a stored record can gain the grid's new metrics instead of a rerun: it finished, and
    everything but evaluation.metrics is as it was (its base hash; a record from before base hashes
    were kept carries it as its hash when its grid named no metrics)."""
    if force or not is_finished(record):
        return False
    return record.get("base_hash", record.get("hash")) == base_hash


def contended_measurements(record: dict, names: tuple[str, ...]) -> tuple[str, ...]:
    """Of the timed metrics `names`, those this record holds as measured on a contended machine."""
    return tuple(name for name in names if registry.get_metric(name).result_of(record) is not None
                 and measured_contended(record, name))


def cell_plan(store: ResultsStore, cell: Cell, header: dict, force: bool, stamp,
              remeasure: tuple[str, ...] = ()) -> tuple[str, dict | None, tuple[str, ...]]:
    """What a run does with one cell: ("skip", None, ()), ("run", None, ()) for a whole run, or
    ("extend", its finished record, the metrics to re-measure) to add the grid's missing metrics
    and re-measure the `remeasure` metrics it measured on a contended machine."""
    previous = store.read(cell.name)
    if not extendable(previous, header["base_hash"], force):
        previous = None
    again = contended_measurements(previous, remeasure) if previous is not None else ()
    if not again and store.is_done(cell.name, header["hash"], force=force, stamp_at_start=stamp):
        return "skip", None, ()
    return ("extend", previous, again) if previous is not None else ("run", None, ())


def failed_fields(error: BaseException, trace: str) -> dict:
    """A failed cell's status, one-line error and traceback."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return {"status": "failed", "error": f"{type(error).__name__}: {message}", "traceback": trace}


def record_header(cell: Cell, config: BenchmarkConfig, cell_hash: str, provenance: dict) -> dict:
    """The part of a record the driver knows before the cell runs."""
    return {"name": cell.name, "hash": cell_hash, "base_hash": content_hash(cell, config, provenance, metrics=False),
            "evaluation_metrics": metric_descriptors(config, cell), "cell": _cell_fields(cell, config),
            "provenance": provenance, "seed": cell.seed}


def merge_record(header: dict, result: dict, previous: dict | None) -> dict:
    """A new record: the header, then what ran. An extended one keeps its original header (provenance
    of the run that measured it), taking the new hash only when its extension succeeded."""
    if previous is None:
        return dict(header, **result)
    record = dict(result)
    if "error" not in record["extensions"][-1]:
        record.update(hash=header["hash"], base_hash=header["base_hash"],
                      evaluation_metrics=header["evaluation_metrics"])
    return record


def finish_cell(store: ResultsStore, summary: RunSummary, record: dict, echo, extended: bool = False) -> None:
    """Persist a finished cell's record (and leaderboard row), count it and print its line; `extended`:
    the run added metrics to a finished record (a failed extension leaves its numbers as they were)."""
    store.write(record)
    summary.ran.append(record["name"])
    last = record["extensions"][-1] if extended else {}
    if record["status"] == "failed" or "error" in last:
        error = record.get("error") if record["status"] == "failed" else f"adding metrics: {last['error']}"
        summary.failed.append((record["name"], error))
        echo(f"{'failed':>8}  {record['name']}  {error}")
    elif extended:
        again = f" (re-measured {', '.join(last['remeasured'])})" if last.get("remeasured") else ""
        echo(f"{'extended':>8}  {record['name']}  +{', '.join(last['metrics'])}{again}: {_headline(record)}")
    else:
        echo(f"{record['status']:>8}  {record['name']}  {_headline(record)}")


class Executor(Protocol):
    """Where a grid's cells run. `run_grid` claims each cell, plans it (skip, run or extend) and persists
    its record; an executor only runs what it is given and hands back finished records."""

    def prepare(self, config: BenchmarkConfig, cells: list[Cell], progress: bool) -> None:
        """Check that the cells can run here (a device, a cluster) before any is claimed."""

    def provenance(self, cell: Cell, config: BenchmarkConfig) -> dict:
        """The provenance the cell will run under (it goes into its content hash)."""

    def submit(self, cell: Cell, config: BenchmarkConfig, header: dict, previous: dict | None,
               remeasure: tuple[str, ...], lock: ExitStack) -> None:
        """Start the cell; `lock` holds its claim until `run_grid` has written its record."""

    def completed(self, wait: bool) -> Iterator[tuple[dict, dict | None, ExitStack]]:
        """(record, the record it extends or None, lock) of finished cells; with `wait`, every submitted one."""

    def cancel(self) -> None:
        """Stop what is still running and release its claims (-x, an interrupt, a driver error)."""


class LocalExecutor:
    """Cells one after another in this process, consecutive cells of a model sharing one load."""

    def __init__(self) -> None:
        self.sessions = SessionCache()
        self.finished: list[tuple[dict, dict | None, ExitStack]] = []

    def prepare(self, config: BenchmarkConfig, cells: list[Cell], progress: bool) -> None:
        self.device = compute_device(config.device, f"device {config.device}", "set device: cpu or auto")
        self.progress = progress

    def provenance(self, cell: Cell, config: BenchmarkConfig) -> dict:
        return cell_provenance(cell, config)

    def submit(self, cell, config, header, previous, remeasure, lock) -> None:
        result = execute_cell(cell, config, self.sessions, self.device, self.progress, previous=previous,
                              remeasure=remeasure)
        self.finished.append((merge_record(header, result, previous), previous, lock))

    def completed(self, wait: bool):
        finished, self.finished = self.finished, []
        yield from finished

    def cancel(self) -> None:
        for _, _, lock in self.finished:
            lock.close()
        self.finished = []


def run_grid(config: BenchmarkConfig, results_dir: "str | Path", *, executor: Executor | None = None,
             filters: dict | None = None, force: bool = False, fail_fast: bool = False, progress: bool = True,
             echo=tqdm.write, remeasure: tuple[str, ...] = ()) -> RunSummary:
    """Run every selected cell not already finished with the same content hash, on `executor` (this
    process by default; `prunebench.grid.executors.RayExecutor` for a cluster); with `remeasure` (timed
    metrics of the grid), also measure those again where a finished cell measured them on a contended
    machine. A cell another process holds is tried once more at the end, in case that process died."""
    executor = executor if executor is not None else LocalExecutor()
    cells = select_cells(config, filters or {})
    executor.prepare(config, cells, progress)
    store = ResultsStore(results_dir)
    summary = RunSummary()
    # --force reruns the records there when this run began, not one another runner writes meanwhile.
    stamps = {cell.name: store.record_stamp(cell.name) for cell in cells}
    deferred: list[Cell] = []
    bar = tqdm(total=len(cells), desc="cells", disable=not progress)

    def submit(cell: Cell, last_try: bool) -> None:
        provenance = executor.provenance(cell, config)
        cell_hash = content_hash(cell, config, provenance)
        lock = ExitStack()
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
        try:
            executor.submit(cell, config, header, previous, again, lock)
        except BaseException:
            lock.close()
            raise

    def persist(wait: bool) -> bool:
        """Write the records of finished cells; True when -x stops the run."""
        for record, previous, lock in executor.completed(wait):
            try:
                finish_cell(store, summary, record, echo, extended=previous is not None)
            finally:
                lock.close()
            bar.update()
            if fail_fast and summary.failed and summary.failed[-1][0] == record["name"]:
                return True
        return False

    try:
        for last_try, batch in ((False, cells), (True, deferred)):
            for cell in list(batch):
                submit(cell, last_try)
                if persist(wait=False):
                    return summary
            if persist(wait=True):
                return summary
    finally:
        executor.cancel()
        bar.close()
    return summary


def _cell_fields(cell: Cell, config: BenchmarkConfig) -> dict:
    method = cell.method
    return {"suite": cell.suite, "model": cell.model.label, "model_source": cell.model.source,
            "method": cell.method_label, "method_name": method.method if method else "dense",
            "arguments": method.args if method else {}, "allocation": method.allocation if method else None,
            "sparsity": cell.sparsity, "calibration_dataset": cell.calibration_dataset, "nsamples": cell.nsamples,
            "seqlen": cell.seqlen, "seed": cell.seed, "propagate": config.propagate, "dtype": config.dtype}


def _headline(record: dict) -> str:
    if record["status"] == "failed":
        return record["error"]

    parts = headline(record)
    if "timings" in record:
        parts.append(f"prune {record['timings']['total']:.1f}s")
    return ", ".join(parts)
