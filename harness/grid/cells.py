"""Expands a benchmark config into cells, each with a readable name and a content hash."""
from __future__ import annotations

import hashlib
import json
import types
from dataclasses import asdict, dataclass
from itertools import product

from .. import registry
from ..api import __version__
from ..api.records import DENSE
from ..store.results import safe_name
from .config import BenchmarkConfig, MethodSpec, ModelSpec
from .provenance import hashed_provenance, run_provenance


@dataclass(frozen=True)
class Cell:
    """One run: a model pruned by one method at one sparsity with one calibration set (or dense)."""

    suite: str
    model: ModelSpec
    method: MethodSpec | None  # None: the dense baseline
    sparsity: str | None
    calibration_dataset: str | None
    nsamples: int | None
    seqlen: int | None
    seed: int | None

    @property
    def method_label(self) -> str:
        return self.method.label if self.method else DENSE

    @property
    def name(self) -> str:
        if self.method is None:
            return f"model={safe_name(self.model.label)},method={DENSE}"
        return (f"model={safe_name(self.model.label)},method={safe_name(self.method.label)},sparsity={self.sparsity.replace(':', '-')},"
                f"calib={safe_name(self.calibration_dataset)}-{self.nsamples}x{self.seqlen},seed={self.seed}")

    def fields(self) -> dict:
        """The values `--only key=value` filters on."""
        return {"model": self.model.label, "method": self.method_label, "sparsity": self.sparsity or "",
                "seqlen": str(self.seqlen or ""), "seed": str(self.seed if self.seed is not None else ""),
                "calibration": self.calibration_dataset or "", "nsamples": str(self.nsamples or "")}

    def describe(self, config: BenchmarkConfig, metrics: bool = True) -> dict:
        """Everything that changes this cell's numbers (and nothing that does not); `metrics=False`
        leaves out evaluation.metrics, which a finished cell can gain later (`metric_descriptors`)."""
        evaluation = {"perplexity": [asdict(p) for p in config.perplexity],
                      "tasks": asdict(config.tasks_of(self))}
        if config.metrics and metrics:  # only when named, so grids without them keep their hashes
            evaluation["metrics"] = metric_descriptors(config, self)
        described = {"model": self.model.source, "dtype": config.dtype, "evaluation": evaluation}
        calibration = {"dataset": self.calibration_dataset, "nsamples": self.nsamples, "seqlen": self.seqlen,
                       "seed": self.seed}
        if self.method is not None and self.method.structured:
            # Its layer allocation is among its arguments; its layers are scored on the dense model
            # unless its entry asks otherwise (`MethodSpec.propagate`): the grid's `propagate` is not its.
            described.update(method=self.method.method, structured=True, arguments=self.method.args,
                             sparsity=self.sparsity, calibration=calibration)
            if self.method.propagate != "dense":  # only when asked (`prune --propagate`): others keep their hashes
                described["propagate"] = self.method.propagate
        elif self.method is not None:
            described.update(method=self.method.method, arguments=self.method.args, allocation=self.method.allocation,
                             sparsity=self.sparsity, propagate=config.propagate, calibration=calibration)
            if self.method.allocation == "owl":  # under the key OWL cells hashed before settings were general
                described["owl"] = dict(self.method.allocation_settings)
            elif self.method.allocation_settings:  # only when given, so other cells keep their hashes
                described["allocation_settings"] = dict(self.method.allocation_settings)
        return described


def metric_descriptors(config: BenchmarkConfig, cell: "Cell | None" = None) -> list[dict]:
    """evaluation.metrics as recorded (those `cell` runs, when given): each metric's name, settings and
    plugin version."""
    specs = config.metrics_for(cell)
    return [{"name": m.name, "settings": m.settings, "version": registry.get_metric(m.name).version} for m in specs]


def expand(config: BenchmarkConfig) -> list[Cell]:
    """Dense baselines first (one per model), then models x methods x sparsity x calibration sources x
    calibration shapes (windows x lengths, and each token budget's windows per length) x seeds, less what a model or method entry leaves out with its own
    methods/sparsity/lengths/seeds (a structured method runs its own ratios, when its entry gives
    them, instead of the grid's)."""
    cells = []
    for model in config.models:
        cells.append(Cell(config.suite, model, None, None, None, None, None, None))
        for method in config.methods:
            own = method.structured and method.only.sparsities is not None
            for sparsity, source, (windows, seqlen), seed in product(
                    method.only.sparsities if own else config.sparsities, config.calibration_sources,
                    config.calibration_shapes, config.seeds):
                if model.only.allows(method.label, sparsity, seqlen, seed) and \
                        method.only.allows(None, sparsity, seqlen, seed):
                    cells.append(Cell(config.suite, model, method, sparsity, source, windows, seqlen, seed))
    return cells


def plugin_version(method_name: str | None) -> str:
    """Version of the distribution that provides a method (prunebench itself for built-ins)."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    if method_name is None:
        return __version__
    plugin = registry.registered(registry.method_hook(method_name))[method_name].plugin
    module = registry.plugin_manager().get_plugin(plugin)
    top = (module.__name__ if isinstance(module, types.ModuleType) else type(module).__module__).split(".")[0]
    if top == "prunebench":
        return __version__
    try:
        return version(packages_distributions().get(top, [top])[0])
    except PackageNotFoundError:
        return "unknown"


def config_device(config: BenchmarkConfig):
    """The torch.device the config's `device` names (`auto`: CUDA when present, else CPU), unchecked: the
    driver of a Ray run names the device its workers will have (`compute_device` checks where cells run)."""
    import torch

    from ..models.walk import default_device

    return default_device() if config.device == "auto" else torch.device(config.device)


def cell_provenance(cell: Cell, config: BenchmarkConfig) -> dict:
    """What a cell's numbers depend on besides its config (`prunebench.grid.provenance.run_provenance`)."""
    return run_provenance(cell.method.method if cell.method else None, device=config_device(config),
                          batch_size=config.batch_size, calibration_dataset=cell.calibration_dataset,
                          evaluation_datasets=[spec.dataset for spec in config.perplexity], data_dir=config.data_dir)


def content_hash(cell: Cell, config: BenchmarkConfig, provenance: dict | None = None, metrics: bool = True) -> str:
    """Hash of what changes the numbers: the cell's config, method arguments, package and plugin
    versions, and its provenance (numerics and method versions, libraries, threads, device, batch
    size, data files) without the git revision; `provenance` defaults to `cell_provenance`.
    `metrics=False` gives the base hash: the same without evaluation.metrics."""
    provenance = provenance if provenance is not None else cell_provenance(cell, config)
    payload = {"cell": cell.describe(config, metrics), "prunebench": __version__,
               "plugin": plugin_version(cell.method.method if cell.method else None),
               "provenance": hashed_provenance(provenance)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
