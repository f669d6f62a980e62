"""Runs a benchmark grid: one model load per model, cached calibration and evaluation tokens,
resume by content hash, failures recorded per cell while the grid goes on."""
from __future__ import annotations

import datetime
import math
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
from prunebench.walk import decoder_layers, on_device, prunable_linears

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


def _evaluate(session: _ModelSession, config: BenchmarkConfig, device: torch.device, progress: bool) -> dict:
    from prunebench.data import evaluation_window_cap
    from prunebench.evaluate import perplexity

    results = {}
    with on_device(session.model, device):
        for spec in config.perplexity:
            tokens = session.evaluation_tokens(spec.dataset, config)
            cap = evaluation_window_cap(spec.dataset, spec.max_windows)
            result = perplexity(session.model, tokens, spec.seqlen, cap, device=device, progress=progress)
            results[spec.label] = dict(result.to_dict(), dataset=spec.dataset)
    return results


def _run_cell(cell: Cell, session: _ModelSession, config: BenchmarkConfig, device: torch.device, progress: bool) -> dict:
    from prunebench.engine import prune
    from prunebench.evaluate import measured_sparsity

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
    record["perplexity"] = _evaluate(session, config, device, progress)
    tasks = config.tasks_for(cell.model)
    if tasks.names:
        from prunebench.zeroshot import evaluate_tasks

        record["tasks"] = evaluate_tasks(session.model, session.tokenizer, tasks, device, config.data_dir)
    finite = all(math.isfinite(p["perplexity"]) for p in record["perplexity"].values())
    record["status"] = "ok" if finite else "diverged"
    return record


def run_grid(config: BenchmarkConfig, results_dir: "str | Path", *, filters: dict | None = None, force: bool = False,
             fail_fast: bool = False, progress: bool = True, echo=tqdm.write) -> RunSummary:
    """Run every selected cell not already finished with the same content hash."""
    store = ResultsStore(results_dir)
    cells = select_cells(config, filters or {})
    device = config_device(config)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {config.device} asks for CUDA, but no GPU is visible; set device: cpu or auto.")
    summary = RunSummary()
    session: _ModelSession | None = None
    for cell in tqdm(cells, desc="cells", disable=not progress):
        provenance = cell_provenance(cell, config)
        cell_hash = content_hash(cell, config, provenance)
        with store.claim(cell.name) as claimed:
            if not claimed:
                summary.busy.append(cell.name)
                continue
            if not force and store.is_finished(cell.name, cell_hash):
                summary.skipped.append(cell.name)
                continue
            started = datetime.datetime.now(datetime.timezone.utc)
            record = {"name": cell.name, "hash": cell_hash, "cell": _cell_fields(cell, config), "provenance": provenance,
                      "seed": cell.seed, "started": started.isoformat()}
            load_at_start = sample_load()
            begin = time.perf_counter()
            try:
                if session is None or session.source != cell.model.source:
                    session = None  # free the previous model first
                    session = _ModelSession(cell, config)
                record.update(_run_cell(cell, session, config, device, progress))
            except KeyboardInterrupt:
                raise
            except Exception as error:  # one cell's failure (a plugin raising, a bad file) never stops the grid
                message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                record.update(status="failed", error=f"{type(error).__name__}: {message}", traceback=traceback.format_exc())
                summary.failed.append((cell.name, record["error"]))
            record["wall_seconds"] = time.perf_counter() - begin
            # This run keeps torch's threads busy; a load average above that is someone else's.
            record["load"] = load_record(load_at_start, sample_load(), own_load=torch.get_num_threads())
            record["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
            store.write(record)
            summary.ran.append(cell.name)
            echo(f"{record['status']:>8}  {cell.name}  {_headline(record)}")
            if fail_fast and record["status"] == "failed":
                break
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
    parts = [f"{label} ppl {p['perplexity']:.3f}" for label, p in record.get("perplexity", {}).items()]
    if "timings" in record:
        parts.append(f"prune {record['timings']['total']:.1f}s")
    return ", ".join(parts)
