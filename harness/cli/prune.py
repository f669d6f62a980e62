"""`prunebench prune`: one model pruned by one method (unstructured or structured), evaluated against its
dense self, measured with any registered metric, saved; the record it prints and writes carries the run's
provenance, for both kinds."""
from __future__ import annotations

import math
from pathlib import Path

import yaml
from tabulate import tabulate

from .. import registry
from ..api.allocation import resolve_settings
from ..api.errors import UsageError, did_you_mean
from ..api.metric import DENSE, PRUNED, MetricSpec, check_settings
from ..api.records import STRUCTURED, UNSTRUCTURED, is_structured_record
from ..api.sparsity import parse_sparsity
from ..api.tables import Cell, cell_parts
from ..data.datasets import calibration_problem, dataset_problem
from ..grid.cells import cell_provenance, content_hash, expand
from ..grid.config import BenchmarkConfig, MethodSpec, ModelSpec, Restriction, model_facts
from ..metrics.quality import PerplexitySpec
from ..metrics.zeroshot import TaskSpec, load_tasks
from ..models.checkpoints import save_structured
from ..models.loading import check_fits_context, check_lengths_fit, parse_dtype, save_pruned
from ..registry import allocation_for, allocation_names
from ..store.results import check_writable, write_json_atomically


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _ppl(value: float | None) -> str:
    return "-" if value is None else (f"{value:.3f}" if math.isfinite(value) else "inf")


def run_prune(args, method_args: dict) -> dict:
    """One grid cell without a store (and its dense baseline unless --no-dense-eval), for both kinds:
    validate everything cheap first, then load once, run the cells as `prunebench run` runs them, print
    the summary, write {"dense": record, "pruned": record} (the grid's record shape) and save the model."""
    from ..grid.runner import SessionCache, execute_cell, merge_record, record_header
    from ..models.walk import compute_device
    from ..pruning.engine import check_n_m_fits
    from ..pruning.structured_engine import check_budget

    # Outputs that cannot be written fail now, not after the pruning.
    if args.save:
        check_writable(args.save, "--save", directory=True)
    if args.json:
        check_writable(args.json, "--json", directory=False)
    config, method = _one_cell_config(args, method_args)
    device = compute_device(config.device, f"--device {args.device}", "use --device cpu")
    _note_if_nothing_is_kept(args)  # after the cheap checks (a typo gets its error alone), before the work

    structured = config.methods[0].structured
    cells = [cell for cell in expand(config) if cell.method is not None or not args.no_dense_eval]
    sessions = SessionCache()
    session = sessions.get(cells[-1], config)
    # What a hub id or GGUF file (no config.json to read before loading) and the loaded shapes allow.
    check_fits_context(session.model, args.model, _lengths(args))
    if structured:
        check_budget(session.model, method, args.sparsity, config.methods[0].args)
    else:
        check_n_m_fits(session.model, parse_sparsity(args.sparsity))
    kept: list = []
    records = {}
    for cell in cells:
        provenance = cell_provenance(cell, config)
        header = record_header(cell, config, content_hash(cell, config, provenance), provenance)
        try:
            result = execute_cell(cell, config, sessions, device, progress=True, raise_errors=True,
                                  measured=kept.append if cell.method is not None else None)
        except Exception as error:
            failure = registry.method_failure(error, method, args.debug)
            if failure is None:
                raise
            raise failure from error
        records[PRUNED if cell.method is not None else DENSE] = merge_record(header, result, None)
    output = {DENSE: records.get(DENSE), PRUNED: records[PRUNED]}
    if args.save and structured:
        output["saved"] = dict(save_structured(kept[-1], session.tokenizer, args.save), directory=str(args.save))
    _print_summary(output)
    if args.json:
        write_json_atomically(Path(args.json), output)  # non-finite numbers become null
    if args.save and not structured:
        save_pruned(kept[-1], session.tokenizer, args.save)
        print(f"saved the pruned model to {args.save}")
    return output


def _lengths(args) -> dict:
    return {"--seqlen": args.seqlen, **({"--eval-seqlen": args.eval_seqlen} if args.eval_dataset else {})}


def _one_cell_config(args, method_args: dict):
    """The one-model, one-method grid the options describe, checked as the command line names things;
    nothing is loaded. Returns (config, the method)."""
    metric_specs = parse_metric_options(args.metric)  # an unknown metric or setting: refused before any loading
    if args.speed_repeats:  # the older spelling of --metric speed:repeats=N
        if "speed" in {spec.name for spec in metric_specs}:
            raise UsageError("--speed-repeats and --metric speed both time the model; give --metric speed only.")
        metric_specs += parse_metric_options([f"speed:repeats={args.speed_repeats}"])
    # Lengths beyond the model's context, from its config.json where that is cheap (aliases, local directories).
    context = (model_facts(args.model) or {}).get("context")
    check_lengths_fit(context if isinstance(context, int) else None, args.model, _lengths(args))
    structured = registry.is_structured(args.method)
    if structured:
        method_spec, method = _structured_method(args, method_args)
    else:
        method_spec, method = _unstructured_method(args, method_args)
    # An unknown dataset, or evaluation text given as calibration, is refused before any loading.
    problem = calibration_problem(args.calib_dataset, args.data_dir, {args.eval_dataset} - {None})
    if args.eval_dataset:
        problem = dataset_problem(args.eval_dataset, "evaluation") or problem
    if problem:
        raise UsageError(problem)
    perplexity = [PerplexitySpec(args.eval_dataset, args.eval_seqlen, args.eval_windows)] if args.eval_dataset else []
    tasks = TaskSpec()
    if args.tasks:
        tasks = TaskSpec(tuple(t.strip() for t in args.tasks.split(",") if t.strip()), args.num_fewshot, args.limit,
                         args.tasks_batch_size, args.tasks_path)
        load_tasks(tasks, args.data_dir)  # a task without data fails now, before any pruning
    parse_dtype(args.dtype)
    config = BenchmarkConfig(
        suite="prune", models=[ModelSpec(args.model, args.model)], methods=[method_spec],
        sparsities=[method_spec.only.sparsities[0] if structured else args.sparsity],
        calibration_sources=[args.calib_dataset], windows=[args.nsamples], lengths=[args.seqlen], seeds=[args.seed],
        perplexity=perplexity, tasks=tasks, data_dir=args.data_dir, device=args.device or "auto", dtype=args.dtype,
        batch_size=args.batch_size, propagate=args.propagate or "pruned", metrics=tuple(metric_specs))
    return config, method


def _unstructured_method(args, method_args: dict):
    method = registry.get_method(args.method)
    arguments = method.resolve_arguments(method_args)
    target = parse_sparsity(args.sparsity)
    args.sparsity = str(target)  # as the record and the cell name spell it (2:4, 0.5)
    allocation, allocation_settings = parse_allocation_option(args.allocation)  # a typo: refused before loading
    if target.is_n_m and allocation != "uniform":
        raise UsageError(f"--allocation {args.allocation} needs a sparsity ratio, not N:M {target}; use --allocation uniform.")
    return MethodSpec(method.name, method.name, arguments, allocation, tuple(allocation_settings.items())), method


def _structured_method(args, method_args: dict):
    from ..pruning.structured_engine import check_propagation, check_target, structured_allocation

    method = registry.get_structured_method(args.method)
    arguments = method.resolve_arguments(method_args)
    check_target(method, args.sparsity)
    propagate = args.propagate or "dense"  # structured methods score on the dense model unless asked
    check_propagation(method, structured_allocation(method, arguments), propagate)
    if args.allocation != "uniform":
        raise UsageError(f"--allocation is for unstructured methods; give '{method.name}' --arg allocation=NAME "
                         f"({', '.join(allocation_names('structured'))}).")
    spec = MethodSpec(method.name, method.name, arguments, only=Restriction(sparsities=(args.sparsity,)),
                      structured=True, propagate=propagate)
    return spec, method


def parse_named_settings(option: str, flag: str, example: str) -> tuple[str, dict]:
    """`NAME[:KEY=VALUE,...]` as (name, settings), values read as YAML (3, 0.5, true, [1, 8], text)."""
    name, _, settings_text = option.partition(":")
    given = {}
    for pair in _split_settings(settings_text):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {option}: write NAME:KEY=VALUE,KEY=VALUE, e.g. {flag} {example}.")
        try:
            given[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            given[key.strip()] = value  # not YAML (an odd path): the text itself
    return name.strip(), given


def parse_metric_options(options: list[str]) -> list:
    """`--metric NAME[:KEY=VALUE,...]` as checked MetricSpecs: the name and each setting against the
    registry (did-you-mean), defaults filled in."""
    known = registry.registered("register_metrics")
    specs = []
    for option in options:
        name, given = parse_named_settings(option, "--metric", "speed:repeats=3")
        if name not in known:
            raise UsageError(f"--metric {option}: {did_you_mean('metric', name, known)}")
        settings, problems = check_settings(known[name].item, given)
        if problems:
            raise UsageError(f"--metric {option}: {' '.join(message for _, message in problems)}")
        if name in {spec.name for spec in specs}:
            raise UsageError(f"--metric {name} is named twice; give it once, with all its settings.")
        specs.append(MetricSpec(name, settings))
    return specs


def parse_allocation_option(option: str) -> tuple[str, dict]:
    """`--allocation NAME[:KEY=VALUE,...]`: a registered unstructured allocation and its checked settings."""
    name, given = parse_named_settings(option, "--allocation", "owl:lambda=0.08")
    allocation = allocation_for(name, "unstructured", "--allocation")
    try:
        return name, resolve_settings(allocation, given)
    except UsageError as error:
        raise UsageError(f"--allocation {option}: {error}") from None


def _split_settings(text: str) -> list[str]:
    """KEY=VALUE pairs split at the commas outside brackets (decode_batches=[1,8] stays whole)."""
    pairs, depth, current = [], 0, ""
    for character in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(character, 0)
        if character == "," and depth == 0:
            pairs.append(current)
            current = ""
        else:
            current += character
    return [pair for pair in pairs + [current] if pair.strip()]


def _note_if_nothing_is_kept(args) -> None:
    if not (args.eval_dataset or args.tasks or args.metric or args.save or args.json):
        print("note: no --eval-dataset, --tasks, --save or --json: the pruned model will be neither "
              "evaluated nor saved (only the pruning report is printed; --metric measures it)")


def _print_summary(output: dict) -> None:
    """The pruned cell's record as rows (dense values beside it where the dense cell ran)."""
    record, dense = output[PRUNED], output[DENSE] or {}
    cell = record["cell"]
    structured = is_structured_record(record)
    details = record.get(STRUCTURED if structured else UNSTRUCTURED) or {}
    rows = [["model", cell["model"]], ["method", f"{cell['method']} {cell['arguments']}"]]
    if structured:
        rows += [["target", f"{cell['sparsity']} of the prunable parameters"],
                 ["removed", f"{details['removed_fraction']:.4f} of the prunable parameters; "
                             f"parameters {details['parameters_before']:,} -> {details['parameters_after']:,}"]]
        if details["removed_layers"]:
            rows.append(["removed layers", ", ".join(map(str, details["removed_layers"]))])
        if details["kept"]:
            heads = [k["heads"] for k in details["kept"]]
            channels = [k["channels"] for k in details["kept"]]
            rows.append(["kept per layer", f"kv groups {min(heads)}..{max(heads)}, "
                                           f"FFN channels {min(channels)}..{max(channels)}"])
    else:
        rows.append(["sparsity target", cell["sparsity"]])
    rows += [["calibration", f"{cell['calibration_dataset']}: {cell['nsamples']} x {cell['seqlen']} tokens, "
                             f"seed {cell['seed']}"],
             ["propagation", details.get("propagate")], ["allocation", details.get("allocation")]]
    for label, entry in (record.get("perplexity") or {}).items():
        before = ((dense.get("perplexity") or {}).get(label) or {}).get("perplexity")
        rows += [["evaluation", f"{entry['dataset']}: {entry['windows']} windows of {entry['window_length']} tokens"],
                 ["dense perplexity", _ppl(before)], ["pruned perplexity", _ppl(entry["perplexity"])]]
    for phase, results in ((DENSE, dense.get("tasks")), (PRUNED, record.get("tasks"))):
        for task, metrics in (results or {}).items():
            if task != "mean_acc":
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
                rows.append([f"{phase} {task}", f"{shown} ({metrics.get('samples')} examples)"])
    rows += _metric_rows(record.get("metrics") or {})
    if "measured_sparsity" in record:
        measured = record["measured_sparsity"]
        layer = measured["per_layer"]
        rows.append(["measured sparsity", f"{measured['overall']:.4f} (layers {min(layer):.4f} .. {max(layer):.4f})"])
    rows += [[f"time: {name.replace('_', ' ')}", f"{seconds:.2f} s"] for name, seconds in record["timings"].items()]
    rows.append(["peak memory", f"{_mib(record['peak_memory_bytes'])} ({details.get('device')}; "
                                f"{_mib(record['memory_before_bytes'])} before)"])
    rows += [[name.replace("_", " "), f"{d['fraction']:.4f} ({d['count']} of {d['total']})"]
             for name, d in (record.get("diagnostics") or {}).items()]
    if "saved" in output:
        saved = output["saved"]
        rows.append(["saved", f"{saved['directory']} ({saved['format']} checkpoint, {saved['bytes'] / 2**20:.1f} MiB)"])
    rows += [["note", note] for note in record["notes"]]
    print(tabulate(rows, tablefmt="plain"))


def _metric_rows(metrics: dict) -> list[list[str]]:
    """A row per value of each --metric, as its metric declares it: label, value in its unit, range."""
    rows = []
    for name, result in metrics.items():
        for value, entry in registry.get_metric(name).record_values(result):
            arrow = "↑" if value.higher_is_better else "↓"
            if entry is None:
                shown = "not finite"
            else:
                number, _, interval = cell_parts(Cell(entry[0], low=entry[1], high=entry[2], scale=value.scale,
                                                      decimals=value.decimals))
                shown = f"{number}{f' {value.unit}' if value.unit else ''}{interval}"
            rows.append([f"{name}: {value.label} {arrow}", shown])
    return rows
