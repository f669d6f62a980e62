"""Runs a benchmark grid: one model load per model, cached calibration and evaluation tokens,
resume by content hash, failures recorded per cell while the grid goes on."""
from __future__ import annotations

import datetime
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from prunebench.config import BenchmarkConfig
from prunebench.errors import UsageError
from prunebench.grid import Cell, cell_provenance, config_device, content_hash, expand
from prunebench.machine_load import load_record, sample_load
from prunebench.store import ResultsStore
from prunebench.walk import decoder_layers, prunable_linears

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
        return "stale"
    return {"ok": "done", "diverged": "done (diverged)"}.get(record.get("status"), record.get("status", "pending"))


class _ModelSession:
    """One loaded model with its dense weights kept in memory, and token caches."""

    def __init__(self, cell: Cell, config: BenchmarkConfig):
        from prunebench.models import load_model

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
        import copy

        twin = copy.deepcopy(self.model)
        twin_weights = [linear.weight for layer in decoder_layers(twin) for linear in prunable_linears(layer).values()]
        with torch.no_grad():
            for weight, dense in zip(twin_weights, self.dense):
                weight.copy_(dense)
        return twin

    def calibration_tokens(self, cell: Cell, config: BenchmarkConfig) -> torch.Tensor:
        from prunebench.data import calibration_windows

        key = (cell.calibration_dataset, cell.nsamples, cell.seqlen, cell.seed)
        if key not in self.calibration:
            self.calibration[key] = calibration_windows(self.tokenizer, cell.calibration_dataset, cell.nsamples,
                                                        cell.seqlen, cell.seed, config.data_dir)
        return self.calibration[key]

    def evaluation_tokens(self, dataset: str, config: BenchmarkConfig) -> torch.Tensor:
        from prunebench.data import evaluation_text, tokenize_text

        if dataset not in self.evaluation:
            self.evaluation[dataset] = tokenize_text(self.tokenizer, evaluation_text(dataset, config.data_dir))
        return self.evaluation[dataset]


def _evaluate(cell: Cell, session: _ModelSession, config: BenchmarkConfig, device: torch.device,
              progress: bool) -> tuple[dict, bool]:
    """The cell's metrics (from the registry, as the grid names them): (record fields, diverged)."""
    from prunebench.metrics import DENSE, PRUNED, MetricContext, run_metrics

    context = MetricContext(model=session.model, tokenizer=session.tokenizer, device=device, data_dir=config.data_dir,
                            progress=progress, cell_kind=DENSE if cell.method is None else PRUNED,
                            sparsity=cell.sparsity, method=cell.method_label, cell=cell.name,
                            eval_seqlen=config.eval_seqlen,
                            evaluation_tokens=lambda dataset: session.evaluation_tokens(dataset, config),
                            dense_model=session.dense_copy)
    return run_metrics(config.metric_specs(cell.model), context)


def _run_cell(cell: Cell, session: _ModelSession, config: BenchmarkConfig, device: torch.device, progress: bool) -> dict:
    from prunebench.engine import prune
    from prunebench.evaluate import measured_sparsity

    from prunebench.models import check_fits_context

    lengths = {f"evaluation.perplexity[{i}].seqlen": spec.seqlen for i, spec in enumerate(config.perplexity)}
    if cell.method is not None:
        lengths["calibration length"] = cell.seqlen
    check_fits_context(session.model, cell.model.label, lengths)  # validate cannot see a hub or GGUF model's
    record: dict = {}
    session.restore_dense()
    if cell.method is not None:
        calibration = session.calibration_tokens(cell, config)
        report = prune(session.model, cell.method.method, cell.sparsity, calibration, batch_size=config.batch_size,
                       device=device, propagate=config.propagate, progress=progress, allocation=cell.method.allocation,
                       owl_m=cell.method.owl_m, owl_lambda=cell.method.owl_lambda, **cell.method.args)
        record.update(timings=report.timings, peak_memory_bytes=report.peak_memory_bytes,
                      memory_before_bytes=report.memory_before_bytes, notes=report.notes,
                      layer_targets=report.layer_targets, diagnostics=report.diagnostics)
    record["measured_sparsity"] = measured_sparsity(session.model)
    evaluated, diverged = _evaluate(cell, session, config, device, progress)
    record.update(evaluated)
    record["status"] = "diverged" if diverged else "ok"
    return record


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
                 progress: bool = False) -> dict:
    """Run one cell where this process is and return the measured part of its record (started ..
    finished); a failing cell returns status "failed" with its error instead of raising. Executors
    call this (locally, or on a Ray worker) and the driver adds `record_header` and persists."""
    started = datetime.datetime.now(datetime.timezone.utc)
    result: dict = {"started": started.isoformat()}
    load_at_start = sample_load()
    begin = time.perf_counter()
    try:
        result.update(_run_cell(cell, sessions.get(cell, config), config, device, progress))
    except KeyboardInterrupt:
        raise
    except Exception as error:  # one cell's failure (a plugin raising, a bad file) never stops the grid
        result.update(failed_fields(error, traceback.format_exc()))
    result["wall_seconds"] = time.perf_counter() - begin
    # This run keeps torch's threads busy; a load average above that is someone else's.
    result["load"] = load_record(load_at_start, sample_load(), own_load=torch.get_num_threads())
    result["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    return result


def failed_fields(error: BaseException, trace: str) -> dict:
    """A failed cell's status, one-line error and traceback."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return {"status": "failed", "error": f"{type(error).__name__}: {message}", "traceback": trace}


def record_header(cell: Cell, config: BenchmarkConfig, cell_hash: str, provenance: dict) -> dict:
    """The part of a record the driver knows before the cell runs."""
    return {"name": cell.name, "hash": cell_hash, "cell": _cell_fields(cell, config), "provenance": provenance,
            "seed": cell.seed}


def finish_cell(store: ResultsStore, summary: RunSummary, record: dict, echo) -> None:
    """Persist a finished cell's record (and leaderboard row), count it and print its line."""
    if record["status"] == "failed":
        summary.failed.append((record["name"], record["error"]))
    store.write(record)
    summary.ran.append(record["name"])
    echo(f"{record['status']:>8}  {record['name']}  {_headline(record)}")


def run_grid(config: BenchmarkConfig, results_dir: "str | Path", *, filters: dict | None = None, force: bool = False,
             fail_fast: bool = False, progress: bool = True, echo=tqdm.write) -> RunSummary:
    """Run every selected cell not already finished with the same content hash."""
    store = ResultsStore(results_dir)
    cells = select_cells(config, filters or {})
    device = config_device(config)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {config.device} asks for CUDA, but no GPU is visible; set device: cpu or auto.")
    summary = RunSummary()
    sessions = SessionCache()
    # --force reruns the records there when this run began, not one another runner writes meanwhile.
    stamps = {cell.name: store.record_stamp(cell.name) for cell in cells}
    deferred: list[Cell] = []  # held by another process: tried once more at the end, in case it died
    for cell in tqdm(_then_deferred(cells, deferred), total=len(cells), desc="cells", disable=not progress):
        provenance = cell_provenance(cell, config)
        cell_hash = content_hash(cell, config, provenance)
        with store.claim(cell.name) as claimed:
            if not claimed:
                if cell in deferred:
                    summary.busy.append(cell.name)
                else:
                    deferred.append(cell)
                continue
            if store.is_done(cell.name, cell_hash, force=force, stamp_at_start=stamps[cell.name]):
                summary.skipped.append(cell.name)
                continue
            record = dict(record_header(cell, config, cell_hash, provenance),
                          **execute_cell(cell, config, sessions, device, progress))
            finish_cell(store, summary, record, echo)
            if fail_fast and record["status"] == "failed":
                break
    return summary


def _then_deferred(cells: list[Cell], deferred: list[Cell]):
    """Every cell, then once more each cell deferred during the first pass."""
    yield from cells
    yield from list(deferred)


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
    from prunebench.metrics import headline

    parts = headline(record)
    if "timings" in record:
        parts.append(f"prune {record['timings']['total']:.1f}s")
    return ", ".join(parts)
