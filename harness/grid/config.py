"""The benchmarks.yaml schema: load with line numbers, validate completely, report every error at once."""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .. import registry
from ..api.allocation import resolve_settings
from ..api.errors import UsageError, did_you_mean
from ..api.metric import MetricSpec, check_settings
from ..api.options import DTYPES, PROPAGATIONS
from ..api.sparsity import parse_sparsity
from ..data.datasets import calibration_problem, dataset_problem
from ..metrics.quality import PERPLEXITY_PROTOCOLS, PerplexitySpec
from ..metrics.zeroshot import TaskSpec, unknown_tasks
from ..models import loading as models
from ..registry import allocation_for, allocation_names

TOP_KEYS = {"suite", "models", "methods", "sparsity", "calibration", "evaluation", "device", "dtype", "batch_size", "propagate",
            "resources"}
RESTRICTION_KEYS = {"sparsity", "lengths", "seeds"}  # an entry may run only part of the grid
MODEL_KEYS = {"alias", "id", "path", "methods", "resources", "tasks", "metrics"} | RESTRICTION_KEYS
RESOURCE_KEYS = {"cpus", "gpus", "memory_gb", "retries"}
METHOD_KEYS = {"method", "label", "args", "allocation", "tasks", "metrics"} | RESTRICTION_KEYS
# Each axis under one name of a pair: the dataset (or source) and nsamples (or windows) may be lists.
CALIBRATION_SYNONYMS = (("source", "dataset"), ("windows", "nsamples"), ("lengths", "length"), ("seeds", "seed"))
# tokens: fixed token budgets, each giving tokens / L windows at every length L (beside the fixed counts).
CALIBRATION_KEYS = {key for pair in CALIBRATION_SYNONYMS for key in pair} | {"tokens"}
EVALUATION_KEYS = {"perplexity", "tasks", "tasks_only", "metrics", "metrics_only", "data_dir"}
PERPLEXITY_KEYS = {"dataset", "seqlen", "max_windows", "protocol"}
TASK_KEYS = {"names", "num_fewshot", "limit", "batch_size", "path", "text_path"}


@dataclass(frozen=True)
class Restriction:
    """A subset of the grid's axes for one model or method entry (None: every value)."""

    methods: tuple[str, ...] | None = None  # method labels (models only)
    sparsities: tuple[str, ...] | None = None
    lengths: tuple[int, ...] | None = None
    seeds: tuple[int, ...] | None = None

    def allows(self, method: str | None, sparsity: str, length: int, seed: int) -> bool:
        return ((self.methods is None or method in self.methods) and (self.sparsities is None or sparsity in self.sparsities)
                and (self.lengths is None or length in self.lengths) and (self.seeds is None or seed in self.seeds))


@dataclass(frozen=True)
class Resources:
    """What one cell asks of a Ray worker (`prunebench run --executor ray`); the local executor ignores it."""

    cpus: int = 1  # Ray CPUs, and the cell's torch threads
    gpus: float = 0  # Ray GPUs (a fraction packs cells onto one GPU)
    memory_gb: float | None = None  # Ray memory reservation, for scheduling only
    retries: int = 0  # reruns of a cell whose worker died (node lost, killed for memory)


@dataclass(frozen=True)
class ModelSpec:
    label: str
    source: str  # what load_model takes: alias, directory, .gguf or hub id
    only: Restriction = Restriction()
    resources: Resources | None = None  # this model's cells' needs, instead of the grid's
    tasks: tuple[str, ...] | None = None  # the zero-shot tasks this model runs, when not all of the grid's
    metrics: tuple[str, ...] | None = None  # the evaluation.metrics its cells run, when not all of them


@dataclass(frozen=True)
class MethodSpec:
    label: str
    method: str
    args: dict = field(default_factory=dict)
    allocation: str = "uniform"
    allocation_settings: tuple = ()  # (name, value) pairs of the allocation's settings, as given (OWL: all of them)
    only: Restriction = Restriction()  # a structured method's sparsities are its own ratios, not a pick of the grid's
    structured: bool = False  # removes whole heads, channels or layers (prunebench.pruning.structured_engine)
    tasks: tuple[str, ...] | None = None  # the zero-shot tasks its cells run, instead of their model's
    propagate: str = "dense"  # a structured method's: its layers are scored on the dense model unless asked
    metrics: tuple[str, ...] | None = None  # the evaluation.metrics its cells run, instead of their model's


@dataclass
class BenchmarkConfig:
    suite: str
    models: list[ModelSpec]
    methods: list[MethodSpec]
    sparsities: list[str]
    calibration_sources: list[str]  # calibration.source: the corpora windows are drawn from (an axis)
    windows: list[int]  # calibration.windows: how many windows (an axis apart from their length)
    lengths: list[int]
    seeds: list[int]
    perplexity: list[PerplexitySpec]
    tasks: TaskSpec
    data_dir: str | None
    device: str
    dtype: str
    batch_size: int
    propagate: str
    path: Path | None = None
    resources: Resources = Resources()
    metrics: tuple = ()  # prunebench.api.metric.MetricSpec: the metrics named in evaluation.metrics
    token_budgets: tuple = ()  # calibration.tokens: each length also gets tokens / length windows
    metrics_only: Restriction = Restriction()  # evaluation.metrics_only: the pruned cells evaluation.metrics run on
    tasks_only: Restriction = Restriction()  # evaluation.tasks_only: the pruned cells the zero-shot tasks run on

    @property
    def calibration_shapes(self) -> list[tuple[int, int]]:
        """(windows, length) of every calibration set: each fixed count at each length, then each token
        budget's tokens / length windows at each length; a shape both give is listed once."""
        shapes = [(w, l) for w in self.windows for l in self.lengths]
        shapes += [(tokens // l, l) for tokens in self.token_budgets for l in self.lengths]
        return list(dict.fromkeys(shapes))

    @property
    def eval_seqlen(self) -> int:
        """The evaluation window length: the first perplexity evaluation's (what memory and speed use)."""
        return self.perplexity[0].seqlen if self.perplexity else 512

    def tasks_for(self, model: ModelSpec, method: MethodSpec | None = None) -> TaskSpec:
        """The zero-shot settings a cell uses: the grid's, less the tasks its model entry leaves out; a
        method entry's own `tasks` replaces its model's for that method's cells."""
        names = method.tasks if method is not None and method.tasks is not None else model.tasks
        return self.tasks if names is None else replace(self.tasks, names=names)

    def tasks_of(self, cell) -> TaskSpec:
        """The zero-shot settings of one grid cell: `tasks_for` its entries, and no tasks where
        evaluation.tasks_only leaves its pruned cell out."""
        tasks = self.tasks_for(cell.model, cell.method)
        if cell.method is not None and not self.tasks_only.allows(cell.method.label, cell.sparsity, cell.seqlen, cell.seed):
            return replace(tasks, names=())
        return tasks

    def metric_specs(self, cell=None) -> list:
        """Every metric a cell (None: any) runs: the perplexity and tasks shorthand first, then
        evaluation.metrics (`metrics_for`)."""
        tasks = self.tasks if cell is None else self.tasks_of(cell)
        specs = [MetricSpec("perplexity", asdict(spec)) for spec in self.perplexity]
        if tasks.names:
            specs.append(MetricSpec("zero-shot", dict(asdict(tasks), names=list(tasks.names))))
        return specs + list(self.metrics_for(cell))

    def metrics_for(self, cell=None) -> tuple:
        """The evaluation.metrics a cell (a grid Cell; None: any) runs: none where evaluation.metrics_only
        leaves its pruned cell out (a dense cell runs them all), else its method entry's `metrics` pick,
        else its model entry's, else all of them."""
        if cell is None:
            return self.metrics
        if cell.method is not None and not self.metrics_only.allows(cell.method.label, cell.sparsity, cell.seqlen,
                                                                    cell.seed):
            return ()
        names = cell.method.metrics if cell.method is not None and cell.method.metrics is not None else cell.model.metrics
        return self.metrics if names is None else tuple(m for m in self.metrics if m.name in names)

    def cell_resources(self, model: ModelSpec) -> Resources:
        return model.resources or self.resources


class _Errors:
    """Collects 'file:line: where: message' errors; raises them together."""

    def __init__(self, path: str, lines: dict):
        self.path, self.lines, self.messages = path, lines, []  # messages: (line or 0, text)

    def add(self, where: tuple, message: str) -> None:
        known, line = where, self.lines.get(where)
        while line is None and known:
            known = known[:-1]
            line = self.lines.get(known)
        location = f"{self.path}:{line}" if line else self.path
        self.messages.append((line or 0, f"{location}: {_dotted(where)}: {message}" if where else f"{location}: {message}"))

    def raise_if_any(self) -> None:
        """One problem: one line. Several: a count, then one problem per line, in file order."""
        if len(self.messages) == 1:
            raise UsageError(self.messages[0][1])
        if self.messages:
            ordered = [text for _, text in sorted(self.messages, key=lambda m: m[0])]
            raise UsageError(f"{len(ordered)} problems in the config:\n" + "\n".join(ordered))


def _dotted(where: tuple) -> str:
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _to_python(node, where=(), lines=None, duplicates=None):
    """Convert a composed YAML node to Python, recording each path's line number and, in
    `duplicates`, each mapping key given twice as (where, first line, second line)."""
    lines[where] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in result and duplicates is not None:
                duplicates.append((where + (key,), lines[where + (key,)], line))
            lines[where + (key,)] = line
            result[key] = _to_python(value_node, where + (key,), lines, duplicates)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, where + (i,), lines, duplicates) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node):
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _unknown_keys(errors: _Errors, mapping: dict, allowed: set, where: tuple) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" Did you mean: {close[0]}?" if close else f" Allowed: {', '.join(sorted(allowed))}."
            errors.add(where + (key,), f"unknown key '{key}'.{hint}")


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _entries(errors: _Errors, value, where: tuple, shorthand: str, allowed: set, hint: str):
    """Yield (where, mapping) for each entry of a list whose items are a name or a mapping."""
    for i, entry in enumerate(_as_list(value)):
        if isinstance(entry, str):
            entry = {shorthand: entry}
        if not isinstance(entry, dict):
            errors.add(where + (i,), hint)
            continue
        _unknown_keys(errors, entry, allowed, where + (i,))
        yield where + (i,), entry


def _positive_int(errors, value, where, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.add(where, f"must be a positive integer, not {value!r}.")
        return 1
    return value


def load_config(path: "str | Path") -> BenchmarkConfig:
    """Parse and validate a benchmarks file; every problem is reported in one UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Config file not found: {path}. Give the path of a benchmarks YAML file.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not UTF-8 text (byte {error.start}: {error.object[error.start:error.start + 1]!r}); "
                         f"re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8.") from None
    except OSError as error:
        raise UsageError(f"Cannot read {path}: {error.strerror}. Check the file's permissions.") from None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UsageError(f"{where}: not valid YAML ({getattr(error, 'problem', error)}); fix the syntax.") from None
    lines: dict = {}
    duplicates: list = []
    raw = _to_python(node, (), lines, duplicates) if node is not None else None
    return validate_config(raw, str(path), lines, path, duplicates)


def validate_config(raw: Any, name: str = "<config>", lines: dict | None = None, path: Path | None = None,
                    duplicates: list | None = None) -> BenchmarkConfig:
    """The config a raw YAML mapping describes, each section checked by its own function; every problem
    found is reported at once (`_Errors`), with its file line."""
    errors = _Errors(name, lines or {})
    _check_top_level(errors, raw, duplicates)
    suite = _suite(errors, raw, path)
    models = _models(errors, raw)
    methods = _methods(errors, raw)
    sparsities = _sparsities(errors, raw, methods)
    sources, windows, lengths, seeds, budgets = _calibration(errors, raw)
    evaluation = _evaluation(errors, raw)
    perplexity = _perplexity(errors, evaluation)
    _check_calibration_sources(errors, raw, sources, perplexity, _data_dir(evaluation, path))
    tasks = _tasks(errors, evaluation, models, methods)
    metrics = _metrics(errors, evaluation.get("metrics") or [])
    metrics_only, tasks_only = _only(errors, evaluation, "metrics_only"), _only(errors, evaluation, "tasks_only")
    device, dtype, propagate, batch_size, resources = _machine(errors, raw, models)
    for key in ("models", "methods", "sparsity"):
        if key in raw and not _as_list(raw[key]):
            errors.add((key,), "must not be empty.")
    _check_restrictions(errors, raw, models, methods, sparsities, lengths, seeds)
    _check_metric_picks(errors, models, methods, metrics)
    for i, model in enumerate(models):
        _check_model_fits(errors, model, i, sparsities, lengths, perplexity, raw)
    errors.raise_if_any()
    return BenchmarkConfig(suite, models, methods, sparsities, sources, windows, lengths, seeds,
                           perplexity, tasks, _data_dir(evaluation, path), device, dtype, batch_size, propagate, path,
                           resources, metrics, tuple(budgets), metrics_only, tasks_only)


def _check_top_level(errors: _Errors, raw: Any, duplicates: list | None) -> None:
    """Keys given twice, a top level that is not a mapping (fatal), unknown and missing keys."""
    for where, first, second in duplicates or []:
        errors.add(where, f"key '{where[-1]}' is given twice (lines {first} and {second}); keep one.")
    if not isinstance(raw, dict):
        errors.add((), "the top level must be a mapping with suite, models, methods, sparsity, calibration, evaluation.")
        errors.raise_if_any()
    _unknown_keys(errors, raw, TOP_KEYS, ())
    for required in ("models", "methods", "sparsity", "calibration"):
        if required not in raw:
            errors.add((), f"missing required key '{required}'.")


def _suite(errors: _Errors, raw: dict, path: Path | None) -> str:
    suite = str(raw.get("suite", path.stem if path else "benchmarks"))
    if not suite.strip() or suite in (".", "..") or any(sep in suite for sep in "/\\") or Path(suite).is_absolute():
        errors.add(("suite",), f"suite '{suite}' is not a plain name (it names results/<suite>); "
                   "use letters, digits, '-', '_' or '.', without '/' or '..'.")
    return suite


def _models(errors: _Errors, raw: dict) -> list[ModelSpec]:
    """models: aliases, hub ids, local directories and GGUF files, each with its own resources and tasks."""
    model_aliases = registry.registered("register_models")
    models = []
    for where, entry in _entries(errors, raw.get("models", []), ("models",), "id", MODEL_KEYS,
                                 "each model is a name or a mapping with alias, id or path."):
        key = next((k for k in ("path", "id", "alias") if entry.get(k)), None)
        if key is None:
            errors.add(where, "give id (alias or hub id) or path.")
            continue
        source = str(entry[key])
        local = key == "path" or source.startswith((".", "~", "/")) or source.endswith(".gguf")
        if local and not Path(source).expanduser().exists():
            errors.add(where + (key,), f"path not found: {source}.")
        elif local and Path(source).expanduser().is_dir() and not (Path(source).expanduser() / "config.json").is_file():
            errors.add(where + (key,), f"{source} is not a model directory (no config.json); give a Hugging Face "
                       "model directory, a .gguf file, an alias or a hub id.")
        elif not local and "/" not in source and source not in model_aliases:
            close = difflib.get_close_matches(source, list(model_aliases), n=1, cutoff=0.6)
            hint = f" Did you mean: {close[0]}?" if close else f" Known: {', '.join(sorted(model_aliases))}."
            errors.add(where + (key,), f"unknown model alias '{source}'.{hint} A hub id is owner/name; a local "
                       "directory is given with path:.")
        label = str(entry.get("alias") or source)
        if any(m.label == label for m in models):
            errors.add(where, f"model '{label}' is listed twice; list each model once.")
        model_resources = _resources(errors, entry["resources"], where + ("resources",)) if "resources" in entry else None
        model_tasks = tuple(str(t) for t in _as_list(entry["tasks"])) if "tasks" in entry else None
        models.append(ModelSpec(label=label, source=source, only=_restriction(entry), resources=model_resources,
                                tasks=model_tasks, metrics=_metric_pick(entry)))
    return models


def _methods(errors: _Errors, raw: dict) -> list[MethodSpec]:
    """methods: registered names (unstructured or structured), labels, arguments and allocations."""
    methods_registered = registry.registered("register_methods")
    structured_registered = registry.registered("register_structured_methods")
    methods, labels = [], set()
    for where, entry in _entries(errors, raw.get("methods", []), ("methods",), "method", METHOD_KEYS,
                                 "each method is a name or a mapping with method, label, args, allocation."):
        if "method" not in entry:
            errors.add(where, "missing key 'method': name the pruning method.")
            continue
        name = str(entry["method"])
        label = str(entry.get("label", name))
        if label in labels:
            errors.add(where + ("label",), f"label '{label}' is used twice; give each entry a distinct label.")
        labels.add(label)
        args = entry.get("args") or {}
        if not isinstance(args, dict):
            errors.add(where + ("args",), "args must be a mapping of argument: value.")
            args = {}
        structured = name in structured_registered and name not in methods_registered
        if structured:
            args = _structured_arguments(errors, where, structured_registered[name].item, entry, args)
        elif name not in methods_registered:
            errors.add(where + ("method",), str(did_you_mean("method", name, [*methods_registered,
                                                                             *structured_registered])))
        else:
            try:
                args = methods_registered[name].item.resolve_arguments(args)
            except UsageError as error:
                errors.add(where + ("args",), str(error))
        allocation_name, settings = _allocation(errors, where, None if structured else entry.get("allocation"))
        method_tasks = tuple(str(t) for t in _as_list(entry["tasks"])) if "tasks" in entry else None
        methods.append(MethodSpec(label, name, args, allocation_name, tuple(sorted(settings.items())),
                                  _restriction(entry), structured, method_tasks, metrics=_metric_pick(entry)))
    return methods


def _allocation(errors: _Errors, where: tuple, allocation: Any) -> tuple[str, dict]:
    """An unstructured entry's allocation: a registered name, or a mapping with name and its settings
    (None: uniform; a structured entry's allocation is one of its arguments, so its caller passes None)."""
    allocation = allocation or {"name": "uniform"}
    if isinstance(allocation, str):
        allocation = {"name": allocation}
    if not isinstance(allocation, dict):
        errors.add(where + ("allocation",), f"allocation must be a name ({', '.join(allocation_names('unstructured'))}) "
                   f"or a mapping with name and its settings, not {allocation!r}.")
        allocation = {}
    allocation_name = str(allocation.get("name", "uniform"))
    try:
        found = allocation_for(allocation_name, "unstructured", "a method entry's allocation")
    except UsageError as error:
        errors.add(where + ("allocation", "name"), str(error))
        found = None
    settings = {key: value for key, value in allocation.items() if key != "name"}
    if found is not None:
        try:  # OWL's settings are kept with their defaults filled in: its cells have always hashed them
            settings = resolve_settings(found, settings) if settings or allocation_name == "owl" else {}
        except UsageError as error:
            errors.add(where + ("allocation",), str(error))
    return allocation_name, settings


def _sparsities(errors: _Errors, raw: dict, methods: list[MethodSpec]) -> list[str]:
    """sparsity: ratios and N:M patterns, none that a method's allocation or kind cannot take."""
    sparsities = []
    for i, value in enumerate(_as_list(raw.get("sparsity", []))):
        try:
            target = parse_sparsity(value)
            if str(target) in sparsities:
                errors.add(("sparsity", i), f"sparsity {target} is listed twice; list each value once.")
            sparsities.append(str(target))
            # An OWL method restricted to ratios (its own `sparsity:`) never meets this N:M value.
            for m in methods:
                if target.is_n_m and m.allocation != "uniform" and not m.structured and \
                        (m.only.sparsities is None or str(target) in m.only.sparsities):
                    errors.add(("sparsity", i), f"{target} is N:M but method '{m.label}' uses the {m.allocation} allocation, "
                               "which needs a ratio; give that entry its own sparsity: [ratios].")
            for method in (m for m in methods if m.structured and m.only.sparsities is None and target.is_n_m):
                errors.add(("sparsity", i), f"{target} is N:M, but structured method '{method.method}' takes a ratio "
                           f"(it removes whole heads, channels or layers); give its entry its own ratios, e.g. "
                           f"{{method: {method.method}, sparsity: [0.5]}}.")
        except UsageError as error:
            errors.add(("sparsity", i), str(error))
    return sparsities


def _calibration(errors: _Errors, raw: dict) -> tuple[list[str], list[int], list[int], list[int], list[int]]:
    """calibration: (sources, windows, lengths, seeds, token budgets), each an axis of the grid (a budget
    gives each length tokens / length windows; without `windows` the budgets alone set the counts)."""
    calibration = raw.get("calibration") or {}
    if not isinstance(calibration, dict):
        errors.add(("calibration",), "must be a mapping with source, windows, lengths, seeds.")
        calibration = {}
    _unknown_keys(errors, calibration, CALIBRATION_KEYS, ("calibration",))
    for name, synonym in CALIBRATION_SYNONYMS:
        if name in calibration and synonym in calibration:
            errors.add(("calibration", synonym), f"'{synonym}' and '{name}' name the same axis; keep one ({name}).")
    sources_key = _axis_key(calibration, "source", "dataset")
    sources = [str(v) for v in _as_list(calibration.get(sources_key, "pydoc"))]  # checked with the evaluation
    windows_key = _axis_key(calibration, "windows", "nsamples")
    budgets = [_positive_int(errors, v, _axis_where(calibration, "tokens", i))
               for i, v in enumerate(_as_list(calibration.get("tokens", [])))]
    default_windows = [] if budgets and windows_key not in calibration else 128
    windows = [_positive_int(errors, v, _axis_where(calibration, windows_key, i))
               for i, v in enumerate(_as_list(calibration.get(windows_key, default_windows)))]
    lengths_key = _axis_key(calibration, "lengths", "length")
    lengths = [_positive_int(errors, v, ("calibration", lengths_key, i))
               for i, v in enumerate(_as_list(calibration.get(lengths_key, 128)))]
    for i, tokens in enumerate(budgets):
        for length in lengths:
            if isinstance(tokens, int) and isinstance(length, int) and length > 0 and tokens % length:
                errors.add(_axis_where(calibration, "tokens", i),
                           f"a budget of {tokens} tokens is not a whole number of {length}-token windows; "
                           f"give a multiple of every length (e.g. {tokens - tokens % length + length}).")
    seeds_key = _axis_key(calibration, "seeds", "seed")
    seeds = _as_list(calibration.get(seeds_key, 0))
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, int):
            errors.add(("calibration", seeds_key, i), f"a seed is an integer, not {seed!r}.")
    axes = [(sources_key, sources), (windows_key, windows), (lengths_key, lengths), (seeds_key, seeds),
            ("tokens", budgets)]
    for key, values in axes:
        if not values and (key in calibration or key in (sources_key, lengths_key, seeds_key)):
            errors.add(("calibration", key), "must not be empty; give at least one value.")
        for i, value in enumerate(values):
            if value in values[:i]:
                errors.add(("calibration", key, i), f"{value!r} is listed twice; list each value once.")
    return sources, windows, lengths, seeds, budgets


def _axis_where(calibration: dict, key: str, index: int) -> tuple:
    """Where value `index` of a calibration axis is: its list item, or the key when one value is given."""
    return ("calibration", key, index) if isinstance(calibration.get(key), list) else ("calibration", key)


def _axis_key(calibration: dict, name: str, synonym: str) -> str:
    """Which of two names of one calibration axis the config uses (`name` unless only `synonym` is given)."""
    return synonym if synonym in calibration and name not in calibration else name


def _check_calibration_sources(errors: _Errors, raw: dict, sources: list[str], perplexity: list, data_dir) -> None:
    """A calibration source must not be evaluation text: WikiText-2's test split, or a local corpus the
    grid also scores perplexity on."""
    calibration = raw.get("calibration") if isinstance(raw.get("calibration"), dict) else {}
    key = _axis_key(calibration, "source", "dataset")
    evaluated = {spec.dataset for spec in perplexity}
    for i, source in enumerate(sources):
        _add_problem(errors, _axis_where(calibration, key, i), calibration_problem(source, data_dir, evaluated))


def _evaluation(errors: _Errors, raw: dict) -> dict:
    evaluation = raw.get("evaluation") or {}
    if not isinstance(evaluation, dict):
        errors.add(("evaluation",), "must be a mapping with perplexity (and tasks).")
        evaluation = {}
    _unknown_keys(errors, evaluation, EVALUATION_KEYS, ("evaluation",))
    return evaluation


def _perplexity(errors: _Errors, evaluation: dict) -> list[PerplexitySpec]:
    perplexity = []
    for where, entry in _entries(errors, evaluation.get("perplexity", []), ("evaluation", "perplexity"), "dataset",
                                 PERPLEXITY_KEYS, "each perplexity evaluation is a dataset name or a mapping "
                                 "with dataset, seqlen, max_windows (or protocol)."):
        dataset = str(entry.get("dataset", ""))
        _add_problem(errors, where + ("dataset",), dataset_problem(dataset, "evaluation"))
        if "protocol" in entry:
            perplexity += _protocol_spec(errors, entry, dataset, where)
            continue
        perplexity.append(PerplexitySpec(dataset, _positive_int(errors, entry.get("seqlen", 512), where + ("seqlen",)),
                                         _window_cap(errors, entry.get("max_windows"), where + ("max_windows",))))
    return perplexity


def _protocol_spec(errors: _Errors, entry: dict, dataset: str, where: tuple) -> list[PerplexitySpec]:
    """A named published protocol (`protocol: llm-pruner`) instead of seqlen and max_windows."""
    name = entry["protocol"]
    if name not in PERPLEXITY_PROTOCOLS:
        errors.add(where + ("protocol",), f"unknown perplexity protocol {name!r}; use one of "
                   f"{', '.join(sorted(PERPLEXITY_PROTOCOLS))}, or give seqlen and max_windows instead.")
        return []
    given = sorted(set(entry) & {"seqlen", "max_windows"})
    if given:
        errors.add(where + ("protocol",), f"protocol {name} fixes {' and '.join(given)}; leave "
                   f"{'them' if len(given) > 1 else 'it'} out or drop the protocol.")
        return []
    return [PerplexitySpec(dataset, **PERPLEXITY_PROTOCOLS[name])]


def _tasks(errors: _Errors, evaluation: dict, models: list[ModelSpec], methods: list[MethodSpec]) -> TaskSpec:
    """evaluation.tasks: lm-eval task names and settings; model and method entries pick among the names."""
    tasks_raw = evaluation.get("tasks") or {}
    if isinstance(tasks_raw, list):
        tasks_raw = {"names": tasks_raw}
    if not isinstance(tasks_raw, dict):
        errors.add(("evaluation", "tasks"), f"tasks must be a list of lm-eval task names or a mapping with "
                   f"{', '.join(sorted(TASK_KEYS))}, not {tasks_raw!r}.")
        tasks_raw = {}
    _unknown_keys(errors, tasks_raw, TASK_KEYS, ("evaluation", "tasks"))
    tasks = TaskSpec(tuple(str(t) for t in _as_list(tasks_raw.get("names", []))),
                     _non_negative_int(errors, tasks_raw.get("num_fewshot", 0), ("evaluation", "tasks", "num_fewshot")),
                     _positive_int(errors, tasks_raw.get("limit"), ("evaluation", "tasks", "limit"), True),
                     _positive_int(errors, tasks_raw.get("batch_size", 1), ("evaluation", "tasks", "batch_size")),
                     tasks_raw.get("path"), tasks_raw.get("text_path"))
    if tasks.names:
        for i, message in unknown_tasks(tasks):
            errors.add(("evaluation", "tasks", "names", i), message)
    for i, model in enumerate(models):
        for name in sorted(set(model.tasks or ()) - set(tasks.names)):
            errors.add(("models", i, "tasks"), f"task '{name}' is not in evaluation.tasks.names "
                       f"({', '.join(tasks.names) or 'none'}); a model entry can only leave tasks out.")
    for i, method in enumerate(methods):
        for name in sorted(set(method.tasks or ()) - set(tasks.names)):
            errors.add(("methods", i, "tasks"), f"task '{name}' is not in evaluation.tasks.names "
                       f"({', '.join(tasks.names) or 'none'}); a method entry can only choose among them.")
    return tasks


def _machine(errors: _Errors, raw: dict, models: list[ModelSpec]) -> tuple[str, str, str, int, Resources]:
    """device, dtype, propagate, batch_size and Ray resources."""
    device = str(raw.get("device", "auto"))
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):  # torch.device("cudafoo") would fail only at run time
        errors.add(("device",), f"unknown device '{device}'; use auto, cpu or cuda[:N].")
    resources = _resources(errors, raw.get("resources") or {}, ("resources",))
    gpus = max(r.gpus for r in [resources] + [m.resources for m in models if m.resources])
    if device.startswith("cpu") and gpus:
        errors.add(("resources",) if resources.gpus else ("models",), "asks for GPUs but device is cpu; set device: "
                   "auto or cuda, or gpus: 0.")
    dtype = str(raw["dtype"]) if "dtype" in raw else default_dtype(device, gpus)
    if dtype not in DTYPES:
        errors.add(("dtype",), f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}.")
    propagate = str(raw.get("propagate", "pruned"))
    if propagate not in PROPAGATIONS:
        errors.add(("propagate",), f"unknown propagation '{propagate}'; use one of {', '.join(PROPAGATIONS)}.")
    batch_size = _positive_int(errors, raw.get("batch_size", 8), ("batch_size",))
    return device, dtype, propagate, batch_size, resources


def _data_dir(evaluation: dict, path: Path | None) -> str | None:
    """evaluation.data_dir, relative to the config file's folder when it exists there."""
    data_dir = evaluation.get("data_dir")
    if data_dir and path is not None and not Path(data_dir).is_absolute():
        data_dir = str((path.parent / data_dir).resolve()) if (path.parent / data_dir).exists() else data_dir
    return data_dir


def _only(errors: _Errors, evaluation: dict, key: str) -> Restriction:
    """evaluation.metrics_only / tasks_only: the pruned cells evaluation.metrics / the zero-shot tasks run
    on (methods, sparsity, lengths, seeds; a dense cell runs them all)."""
    raw = evaluation.get(key) or {}
    if not isinstance(raw, dict) or set(raw) - RESTRICTION_KEYS - {"methods"}:
        errors.add(("evaluation", key), f"{key} is a mapping with methods, sparsity, lengths and seeds: the pruned "
                   "cells it keeps.")
        return Restriction()
    return _restriction(raw)


def _metric_pick(entry: dict) -> tuple[str, ...] | None:
    """A model or method entry's `metrics`: the names of evaluation.metrics its cells run ([]: none)."""
    return tuple(str(name) for name in _as_list(entry["metrics"])) if "metrics" in entry else None


def _check_metric_picks(errors: _Errors, models: list, methods: list, metrics: tuple) -> None:
    """Each entry's `metrics` must name metrics of evaluation.metrics."""
    named = [m.name for m in metrics]
    for key, specs in (("models", models), ("methods", methods)):
        for i, spec in enumerate(specs):
            for name in spec.metrics or ():
                if name not in named:
                    errors.add((key, i, "metrics"), f"'{name}' is not in evaluation.metrics "
                               f"({', '.join(named) or 'none named'}); an entry picks from those.")


def _metrics(errors: _Errors, raw: Any) -> tuple:
    """evaluation.metrics: a list of metric names or mappings {name: ..., setting: value}, each checked
    against its registered metric (unknown names and settings get a did-you-mean)."""
    where = ("evaluation", "metrics")
    if not isinstance(raw, list):
        errors.add(where, f"metrics is a list of metric names or mappings with name and settings, not {raw!r}.")
        return ()
    known = registry.registered("register_metrics")
    specs = []
    for i, entry in enumerate(raw):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.add(where + (i,), f"a metric is a name or a mapping with name and its settings, not {entry!r}.")
            continue
        name = entry["name"]
        if name not in known:
            errors.add(where + (i, "name"), str(did_you_mean("metric", name, known)))
            continue
        settings, problems = check_settings(known[name].item, {k: v for k, v in entry.items() if k != "name"})
        for key, message in problems:
            errors.add(where + (i,) + ((key,) if key else ()), message)
        if not problems:
            specs.append(MetricSpec(name, settings))
    return tuple(specs)


def default_dtype(device: str, gpus: float = 0) -> str:
    """float16 where cells run on CUDA (as the Wanda and SparseGPT authors load models), else float32;
    `gpus`: what a cell asks of a Ray worker, whose GPU the driver may not have."""
    if device.startswith("cuda") or (device == "auto" and gpus > 0):
        return "float16"
    if device == "auto":
        import torch

        return "float16" if torch.cuda.is_available() else "float32"
    return "float32"


def _resources(errors: _Errors, raw, where: tuple) -> Resources:
    if not isinstance(raw, dict):
        errors.add(where, f"must be a mapping with {', '.join(sorted(RESOURCE_KEYS))}, not {raw!r}.")
        return Resources()
    _unknown_keys(errors, raw, RESOURCE_KEYS, where)
    cpus = _positive_int(errors, raw.get("cpus", 1), where + ("cpus",))
    gpus = raw.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0 or \
            (gpus > 1 and gpus != int(gpus)):
        errors.add(where + ("gpus",), f"must be a whole number of GPUs or a fraction below 1, not {gpus!r}.")
        gpus = 0
    memory = raw.get("memory_gb")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float))
                               or not math.isfinite(memory) or memory <= 0):
        errors.add(where + ("memory_gb",), f"must be a positive number of gigabytes, not {memory!r}.")
        memory = None
    retries = _non_negative_int(errors, raw.get("retries", 0), where + ("retries",))
    return Resources(cpus, gpus, float(memory) if memory is not None else None, retries)


def _restriction(entry: dict) -> Restriction:
    def values(key, convert):
        return None if key not in entry else tuple(convert(v) for v in _as_list(entry[key]))

    def sparsity(value):
        try:
            return str(parse_sparsity(value))
        except UsageError:
            return str(value)

    return Restriction(values("methods", str), values("sparsity", sparsity), values("lengths", lambda v: v),
                       values("seeds", lambda v: v))


def _check_restrictions(errors, raw, models, methods, sparsities, lengths, seeds) -> None:
    """Each entry's `methods`/`sparsity`/`lengths`/`seeds` must pick from the grid's own values."""
    axes = {"methods": [m.label for m in methods], "sparsity": sparsities, "lengths": lengths, "seeds": seeds}
    for section, specs in (("models", models), ("methods", methods)):
        entries = _as_list(raw.get(section, []))
        for i, spec in enumerate(specs):
            only = spec.only
            chosen = {"methods": only.methods, "sparsity": only.sparsities, "lengths": only.lengths, "seeds": only.seeds}
            for key, picked in chosen.items():
                if picked is None or (key == "sparsity" and getattr(spec, "structured", False)):
                    continue  # a structured method's ratios are checked with its entry (_structured_sparsities)
                unknown = [v for v in picked if v not in axes[key]]
                if unknown or not picked:
                    index = i if i < len(entries) else len(entries) - 1
                    errors.add((section, index, key), f"{', '.join(map(repr, unknown)) or 'an empty list'} is not among "
                               f"the grid's {key} ({', '.join(map(str, axes[key]))}); pick from those.")


def _structured_arguments(errors: _Errors, where: tuple, method, entry: dict, args: dict) -> dict:
    """A structured entry's arguments with defaults filled in (its layer allocation among them), and
    its own sparsities, which must be ratios: structured removal cannot give an N:M pattern."""
    # Allocations that serve structured pruning (one that names no tracks serves it; OWL does not).
    allocations = [name for name, found in registry.registered("register_allocations").items()
                   if "structured" in getattr(found.item, "tracks", ("structured",))]
    if "allocation" in entry:
        errors.add(where + ("allocation",), f"'{method.name}' is a structured method: its layer allocation is an "
                   f"argument, args: {{allocation: NAME}} ({', '.join(sorted(allocations))}); OWL is for "
                   "unstructured methods.")
    if "sparsity" in entry:
        _structured_sparsities(errors, where + ("sparsity",), method.name, entry["sparsity"])
    try:
        args = method.resolve_arguments(args)
    except UsageError as error:
        errors.add(where + ("args",), str(error))
        return args
    if args["allocation"] not in allocations:
        errors.add(where + ("args", "allocation"), str(did_you_mean("layer allocation", str(args["allocation"]),
                                                                    allocations)))
    return args


def _structured_sparsities(errors: _Errors, where: tuple, name: str, raw) -> None:
    values = _as_list(raw)
    if not values:
        errors.add(where, "must not be empty; give the ratios this method runs, e.g. [0.2, 0.3, 0.5].")
    seen = set()
    for i, value in enumerate(values):
        try:
            target = parse_sparsity(value)
        except UsageError as error:
            errors.add(where + (i,), str(error))
            continue
        if target.is_n_m:
            errors.add(where + (i,), f"{target} is N:M, but '{name}' is a structured method (it removes whole heads, "
                       "channels or layers) and takes a ratio of the prunable parameters; give e.g. 0.5.")
        elif str(target) in seen:
            errors.add(where + (i,), f"sparsity {target} is listed twice; list each value once.")
        seen.add(str(target))


def _window_cap(errors, value, where):
    """A positive window count, or `all` (also the default) for every window of the split."""
    if value is None or value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.add(where, f"must be a positive integer or all, not {value!r}.")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _finite_number(errors, value, where) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        errors.add(where, f"must be a finite number, not {value!r}.")
        return 0.0
    return float(value)


def _non_negative_int(errors, value, where):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        errors.add(where, f"must be a non-negative integer, not {value!r}.")
        return 0
    return value


def _add_problem(errors: _Errors, where: tuple, problem: str | None) -> None:
    if problem:
        errors.add(where, problem)


def model_facts(source: str) -> dict | None:
    """A model's linear input widths and context length from its config, read without weights:
    the tiny aliases build theirs, other aliases have config.json in the cache once converted, and
    local directories have their own. None when it cannot be read cheaply (hub ids, GGUF files)."""
    import json

    factories = {"tiny-llama": models.tiny_llama_config, "tiny-opt": models.tiny_opt_config}
    try:
        if source in factories:
            config = factories[source]().to_dict()
        else:
            aliases = registry.registered("register_models")
            directory = models.cache_dir() / "models" / source if source in aliases else Path(source).expanduser()
            if not (directory / "config.json").is_file():
                return None
            config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError, ImportError):
        return None
    if not isinstance(config, dict):  # valid JSON but a list, a number...: config.get would crash
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(config), "a number")
        raise UsageError(f"{directory / 'config.json'} is not a model config (it holds {kind}, not a JSON object); "
                         "give a directory written by save_pretrained, or fix its config.json.")
    text_config = config.get("text_config")
    config = text_config if isinstance(text_config, dict) and text_config else config
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (hidden // heads if isinstance(hidden, int) and heads else None)
    widths = {hidden, config.get("intermediate_size") or config.get("ffn_dim"),
              heads * head_dim if isinstance(heads, int) and isinstance(head_dim, int) else None}
    return {"widths": sorted(w for w in widths if isinstance(w, int) and w > 0),
            "context": config.get("max_position_embeddings")}


def _check_model_fits(errors: _Errors, model: ModelSpec, index: int, sparsities, lengths, perplexity, raw) -> None:
    """N:M must divide the model's linear widths; calibration and evaluation lengths must fit its context."""
    facts = model_facts(model.source)
    if facts is None:
        return
    for i, sparsity in enumerate(sparsities):
        target = parse_sparsity(sparsity)
        bad = [w for w in facts["widths"] if target.is_n_m and w % target.m]
        if bad and (model.only.sparsities is None or sparsity in model.only.sparsities):
            errors.add(("sparsity", i), f"{sparsity} needs M={target.m} to divide model '{model.label}''s linear input "
                       f"widths ({', '.join(map(str, facts['widths']))}); pick an M that divides them all (e.g. 2:4).")
    context = facts["context"]
    if not isinstance(context, int):
        return
    calibration = raw.get("calibration") if isinstance(raw.get("calibration"), dict) else {}
    key = _axis_key(calibration, "lengths", "length")
    for i, length in enumerate(lengths):
        if length > context and (model.only.lengths is None or length in model.only.lengths):
            errors.add(("calibration", key, i), f"calibration length {length} is longer than model '{model.label}''s "
                       f"context ({context} tokens); use at most {context}.")
    for i, spec in enumerate(perplexity):
        if spec.seqlen > context:
            errors.add(("evaluation", "perplexity", i, "seqlen"), f"seqlen {spec.seqlen} is longer than model "
                       f"'{model.label}''s context ({context} tokens); use at most {context}.")
