"""What `prunebench prune` and `prunebench list` do, on top of the library API."""
from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import yaml
from tabulate import tabulate

from .. import registry
from ..api.allocation import resolve_settings, tracks_of
from ..api.errors import UsageError, did_you_mean
from ..api.metric import PRUNED, REQUIRED, MetricContext, MetricSpec, check_settings
from ..api.sparsity import parse_sparsity
from ..api.tables import Cell, cell_parts
from ..data.datasets import (
    calibration_windows,
    evaluation_text,
    evaluation_window_cap,
    resolve_dataset,
    tokenize_text,
)
from ..grid.cells import expand
from ..grid.config import load_config, model_facts
from ..grid.provenance import run_provenance
from ..metrics.run import registered_metrics, run_metrics
from ..metrics.zeroshot import TaskSpec, evaluate_tasks, load_tasks
from ..models.loading import (
    check_fits_context,
    check_lengths_fit,
    load_model,
    parse_dtype,
    save_pruned,
)
from ..registry import allocation_for
from ..report.browse import serve
from ..store.results import ResultsStore, check_writable, write_json_atomically
from .structured_commands import run_structured_prune


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _ppl(value: float | None) -> str:
    return "-" if value is None else (f"{value:.3f}" if math.isfinite(value) else "inf")


def run_prune(args, method_args: dict) -> dict:
    """Validate everything cheap first, then load, calibrate, evaluate, prune, evaluate, save."""

    from ..metrics.perplexity import perplexity
    from ..models.walk import compute_device, default_device, on_device
    from ..pruning.engine import check_n_m_fits, prune

    # Outputs that cannot be written fail now, not after the pruning.
    if args.save:
        check_writable(args.save, "--save", directory=True)
    if args.json:
        check_writable(args.json, "--json", directory=False)
    # Lengths beyond the model's context, from its config.json where that is cheap (aliases, local
    # directories): before any loading, and for structured methods too, which load their own model.

    metric_specs = parse_metric_options(args.metric)  # an unknown metric or setting: refused before any loading
    lengths = {"--seqlen": args.seqlen, **({"--eval-seqlen": args.eval_seqlen} if args.eval_dataset else {})}
    context = (model_facts(args.model) or {}).get("context")
    check_lengths_fit(context if isinstance(context, int) else None, args.model, lengths)
    if registry.is_structured(args.method):

        if metric_specs:
            raise UsageError("--metric measures the masked model of an unstructured method; a structured method's "
                             "smaller model is timed against the dense one with --speed-repeats N.")
        _note_if_nothing_is_kept(args)
        return run_structured_prune(args, method_args)
    if args.speed_repeats:
        raise UsageError("--speed-repeats measures structured methods (a masked model runs at dense speed).")
    method = registry.get_method(args.method)
    arguments = method.resolve_arguments(method_args)
    target = parse_sparsity(args.sparsity)

    allocation, allocation_settings = parse_allocation_option(args.allocation)  # a typo: refused before loading
    if target.is_n_m and allocation != "uniform":
        raise UsageError(f"--allocation {args.allocation} needs a sparsity ratio, not N:M {target}; use --allocation uniform.")
    resolve_dataset(args.calib_dataset)
    if args.eval_dataset:
        resolve_dataset(args.eval_dataset)
    dtype = parse_dtype(args.dtype)
    if args.save and Path(args.save).exists() and not Path(args.save).is_dir():
        raise UsageError(f"--save {args.save} is a file; give a directory path.")
    device = compute_device(args.device, f"--device {args.device}", "use --device cpu") if args.device else None
    _note_if_nothing_is_kept(args)  # after the cheap checks (a typo gets its error alone), before the work

    model, tokenizer = load_model(args.model, dtype)
    # Metrics that compare with the dense model (memory, speed) get a copy made from these weights.
    dense_weights = _prunable_weights_copy(model) if metric_specs else None
    check_n_m_fits(model, target)
    check_fits_context(model, args.model, lengths)  # a hub id or GGUF file: known only once loaded
    calibration = calibration_windows(tokenizer, args.calib_dataset, args.nsamples, args.seqlen, args.seed, args.data_dir)
    eval_ids = tokenize_text(tokenizer, evaluation_text(args.eval_dataset, args.data_dir)) if args.eval_dataset else None
    eval_device = device or default_device()
    eval_windows = evaluation_window_cap(args.eval_dataset, args.eval_windows) if args.eval_dataset else None
    tasks = None
    if args.tasks:

        tasks = TaskSpec(tuple(t.strip() for t in args.tasks.split(",") if t.strip()), args.num_fewshot, args.limit,
                         args.tasks_batch_size, args.tasks_path)
        load_tasks(tasks, args.data_dir)  # a task without data fails now, before any pruning

    def evaluate():
        result = {}
        if eval_ids is not None:
            with on_device(model, eval_device):
                result["perplexity"] = perplexity(model, eval_ids, args.eval_seqlen, eval_windows,
                                                  device=eval_device, progress=True)
        if tasks:
            result["tasks"] = evaluate_tasks(model, tokenizer, tasks, eval_device, args.data_dir)
        return result

    dense = {} if args.no_dense_eval else evaluate()
    try:
        report = prune(model, method, target, calibration, batch_size=args.batch_size, device=device,
                       propagate=args.propagate or "pruned", allocation=allocation,
                       allocation_settings=allocation_settings, **arguments)
    except Exception as error:
        failure = registry.method_failure(error, method, "register_methods", args.debug)
        if failure is None:
            raise
        raise failure from error
    after = evaluate()
    pruned = after.get("perplexity")
    metrics = _run_metrics(metric_specs, model, tokenizer, eval_device, args, str(target), method.name,
                           eval_ids, dense_weights) if metric_specs else None

    record = {
        "model": args.model, "method": method.name, "arguments": arguments, "sparsity": str(target),
        "calibration": {"dataset": args.calib_dataset, "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed},
        "evaluation": None if eval_ids is None else {
            "dataset": args.eval_dataset, "window_length": args.eval_seqlen, "windows": pruned.windows,
            "dense_perplexity": dense["perplexity"].perplexity if "perplexity" in dense else None,
            "pruned_perplexity": pruned.perplexity,
        },
        "tasks": None if tasks is None else {"dense": dense.get("tasks"), "pruned": after["tasks"]},
        **({"metrics": metrics} if metrics is not None else {}),
        "report": report.to_dict(),
        "provenance": run_provenance(method.name, device=eval_device, batch_size=args.batch_size,
                                     calibration_dataset=args.calib_dataset,
                                     evaluation_datasets=[args.eval_dataset] if args.eval_dataset else [],
                                     data_dir=args.data_dir),
    }
    _print_summary(record, report)
    if args.json:

        write_json_atomically(Path(args.json), record)  # non-finite numbers become null
    if args.save:
        save_pruned(model, tokenizer, args.save)
        print(f"saved the pruned model to {args.save}")
    return record


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


def _prunable_weights_copy(model) -> list:
    """The prunable linears' weights as they are now, on the CPU (GPU memory is not doubled)."""
    from ..models.walk import decoder_layers, prunable_linears

    return [linear.weight.detach().to("cpu", copy=True) for layer in decoder_layers(model)
            for linear in prunable_linears(layer).values()]


def _run_metrics(specs: list, model, tokenizer, device, args, sparsity: str, method: str, eval_ids,
                 dense_weights: list) -> dict:
    """The named metrics of the pruned model, through the registry as a grid's cells run them:
    {metric name: its result}; a dense copy is made only for the metrics that ask for it."""
    from ..models.walk import dense_twin

    def dense_model():
        return dense_twin(model, dense_weights)

    def evaluation_tokens(dataset: str):

        if dataset == args.eval_dataset and eval_ids is not None:
            return eval_ids
        return tokenize_text(tokenizer, evaluation_text(dataset, args.data_dir))

    context = MetricContext(model=model, tokenizer=tokenizer, device=device, data_dir=args.data_dir, progress=True,
                            cell_kind=PRUNED, sparsity=sparsity, method=method, eval_seqlen=args.eval_seqlen,
                            evaluation_tokens=evaluation_tokens, dense_model=dense_model)
    fields, _ = run_metrics(specs, context)
    return {spec.name: registry.get_metric(spec.name).result_of(fields) or {} for spec in specs}


def _note_if_nothing_is_kept(args) -> None:
    if not (args.eval_dataset or args.tasks or args.metric or args.save or args.json):
        print("note: no --eval-dataset, --tasks, --save or --json: the pruned model will be neither "
              "evaluated nor saved (only the pruning report is printed; --metric measures it)")


def _print_summary(record: dict, report) -> None:
    calib = record["calibration"]
    rows = [
        ["model", record["model"]],
        ["method", f"{record['method']} {record['arguments']}"],
        ["sparsity target", record["sparsity"]],
        ["calibration", f"{calib['dataset']}: {calib['nsamples']} x {calib['seqlen']} tokens, seed {calib['seed']}"],
        ["propagation", report.propagate],
        ["allocation", report.allocation],
    ]
    evaluation = record["evaluation"]
    if evaluation:
        rows += [
            ["evaluation", f"{evaluation['dataset']}: {evaluation['windows']} windows of {evaluation['window_length']} tokens"],
            ["dense perplexity", _ppl(evaluation["dense_perplexity"])],
            ["pruned perplexity", _ppl(evaluation["pruned_perplexity"])],
        ]
    for phase, results in (record["tasks"] or {}).items():
        for task, metrics in (results or {}).items():
            if task != "mean_acc":
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
                rows.append([f"{phase} {task}", f"{shown} ({metrics.get('samples')} examples)"])
    rows += _metric_rows(record.get("metrics") or {})
    layer = report.layer_sparsity
    rows += [
        ["measured sparsity", f"{report.overall_sparsity:.4f} (layers {min(layer):.4f} .. {max(layer):.4f})"],
        ["time: calibration forward", f"{report.timings['calibration_forward']:.2f} s"],
        ["time: score + mask", f"{report.timings['score_mask']:.2f} s"],
        ["time: weight update", f"{report.timings['weight_update']:.2f} s"],
        ["time: total", f"{report.timings['total']:.2f} s"],
        ["peak memory", f"{_mib(report.peak_memory_bytes)} ({report.device}; {_mib(report.memory_before_bytes)} before)"],
    ]
    rows += [[name.replace("_", " "), f"{d['fraction']:.4f} ({d['count']} of {d['total']})"]
             for name, d in report.diagnostics.items()]
    rows += [["note", note] for note in report.notes]
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


def run_list() -> None:
    """Print every registered method, statistic, dataset, model and metric with the plugin that gave it."""

    sections = [
        ("Methods", "register_methods",
         lambda m: [m.description, ", ".join(f"{k}={v}" for k, v in m.arguments.items()),
                    ", ".join(m.required_statistics(m.arguments)) or "-"],
         ["method", "plugin", "description", "arguments (defaults)", "statistics"]),
        ("Structured methods (sparsity = fraction of prunable parameters removed; --arg allocation=, round_to=)",
         "register_structured_methods",
         lambda m: [", ".join(m.kinds), m.description, ", ".join(f"{k}={v}" for k, v in m.all_arguments().items())],
         ["method", "plugin", "removes", "description", "arguments (defaults)"]),
        ("Layer allocations (unstructured methods: --allocation; structured: --arg allocation=)", "register_allocations",
         lambda a: [", ".join(tracks_of(a)), a.description,
                    ", ".join(f"{k}={v}" for k, v in getattr(a, "settings", {}).items()) or "-"],
         ["allocation", "plugin", "serves", "description", "settings (defaults)"]),
        ("Statistics", "register_statistics", lambda s: [s.description], ["statistic", "plugin", "description"]),
        ("Datasets", "register_datasets", lambda d: [d.description], ["dataset", "plugin", "description"]),
        ("Models", "register_models", lambda a: [a.description], ["model", "plugin", "description"]),
        ("Metrics (evaluation.metrics in a grid; ↑ higher is better, ↓ lower)", "register_metrics",
         lambda m: [m.arrow(), m.unit, ", ".join(m.applies_to), m.description,
                    ", ".join(f"{k}={'(required)' if v is REQUIRED else v}" for k, v in m.settings.items())],
         ["metric", "plugin", "better", "unit", "cells", "description", "settings (defaults)"]),
    ]
    # What the defaults need: an argument can change it (ace's sign and reading, wanda+varp's reading).
    for title, hook, describe, headers in sections:
        rows = [[name, reg.plugin, *describe(reg.item)] for name, reg in registry.registered(hook).items()]
        print(f"{title}:\n{tabulate(rows, headers=headers, tablefmt='simple')}\n")
    print("Models may also be a local directory, a .gguf file or a Hugging Face hub id.")
    skipped = registry.skipped_plugins()
    if skipped:  # installed plugins that failed: nothing above comes from them
        print(f"\nSkipped plugins (fix or uninstall them, or leave them out with {registry.LOAD_PLUGINS_ENV}):\n"
              + tabulate([[name, why] for name, why in skipped.items()], headers=["plugin", "why"], tablefmt="simple"))


def _results_dir(config, given: str | None) -> Path:
    return Path(given) if given else Path("results") / config.suite


def run_validate(args) -> int:

    config = load_config(args.file)
    print(f"{args.file}: valid; suite '{config.suite}', {len(expand(config))} cells")
    return 0


def run_run(args) -> int:
    import sys

    from ..grid.runner import LocalExecutor, run_grid

    config = load_config(args.file)
    filters = _checked_filters(config, args.only)
    results_dir = _results_dir(config, args.results_dir)
    if args.address and args.executor != "ray":
        raise UsageError("--address names a Ray cluster; use it with --executor ray.")
    if args.executor == "ray":
        from ..grid.executors import import_ray

        import_ray()  # a missing extra is a usage error before anything runs
    remeasure = _checked_remeasure(config, args.remeasure)
    if args.dry_run:
        return _print_status(config, results_dir, filters)
    if args.executor == "ray":
        from ..grid.executors import RayExecutor

        executor = RayExecutor(args.address)
    else:
        executor = LocalExecutor()
    summary = run_grid(config, results_dir, executor=executor, filters=filters, force=args.force,
                       fail_fast=args.exitfirst, remeasure=remeasure)
    print(f"{len(summary.ran)} ran, {len(summary.skipped)} already finished, {len(summary.busy)} busy in another "
          f"process, {len(summary.failed)} failed; results in {results_dir}")
    if summary.failed:
        for name, error in summary.failed:
            print(f"failed: {name}: {error}", file=sys.stderr)
        return 1
    return 0


def _checked_remeasure(config, names: str | None) -> tuple[str, ...]:
    """`--remeasure` names: timed metrics the grid measures (re-measuring anything else changes nothing)."""

    if not names:
        return ()
    in_grid = {spec.name for spec in config.metrics}
    timed = sorted(name for name in in_grid if registry.get_metric(name).timed)
    chosen = tuple(dict.fromkeys(name.strip() for name in names.split(",") if name.strip()))
    for name in chosen:
        if name not in timed:

            missing = "(none: add " + " or ".join(sorted(m.name for m in registered_metrics() if m.timed)) + \
                " to evaluation.metrics)"
            raise UsageError(f"--remeasure {name}: not a timed metric of this grid; name one of "
                             f"{', '.join(timed) or missing}.")
    return chosen


def run_status(args) -> int:

    config = load_config(args.file)
    return _print_status(config, _results_dir(config, args.results_dir), _checked_filters(config, args.only))


def _checked_filters(config, pairs: list[str]) -> dict:
    """`--only` filters, each value one the grid has: a filter that matches nothing is a mistake."""
    from ..grid.runner import parse_filters

    filters = parse_filters(pairs)
    cells = expand(config)
    for key, values in filters.items():
        valid = sorted({cell.fields()[key] for cell in cells if cell.method is not None or key == "model"} - {""})
        unknown = sorted(values - set(valid))
        if unknown:
            raise UsageError(f"--only {key}={unknown[0]} matches no cell of {config.path or 'the grid'}; "
                             f"{key} is one of: {', '.join(valid)}.")
    return filters


def _print_status(config, results_dir: Path, filters: dict) -> int:
    from collections import Counter

    from ..grid.runner import cell_status, select_cells

    store = ResultsStore(results_dir)
    rows = [[cell_status(store, cell, config), cell.name] for cell in select_cells(config, filters)]
    print(tabulate(rows, headers=["status", "cell"], tablefmt="simple"))
    counts = Counter(row[0] for row in rows)
    print(", ".join(f"{count} {status}" for status, count in sorted(counts.items())) + f"; results in {results_dir}")
    return 0


def _given_results_dir(args) -> "str | Path":
    """The results directory named on the command line, else that of ./benchmarks.yaml's suite."""
    if args.results_dir is not None:
        return args.results_dir

    if not Path("benchmarks.yaml").exists():
        raise UsageError(f"Give the results directory: prunebench {args.command} DIR.")
    return _results_dir(load_config("benchmarks.yaml"), None)


def run_report(args) -> int:
    from ..report.tables import write_report

    results_dir = Path(_given_results_dir(args))
    reference = None if args.reference.lower() == "none" else args.reference
    if args.out is not None:

        check_writable(args.out, "--out", directory=True)  # before the bootstrap intervals, not after
    if args.out is None and results_dir.is_dir() and not os.access(results_dir, os.W_OK | os.X_OK):
        if args.format == "html":
            raise UsageError(f"{results_dir} is read-only; give --out DIR for the site.")
        # Read-only results (a mounted archive, another user's run): print the tables, write nothing.
        with tempfile.TemporaryDirectory() as scratch:
            print(write_report(results_dir, args.format, scratch, reference=reference))
        print(f"{results_dir} is read-only: tables printed only; give --out DIR to keep tables and plots.",
              file=sys.stderr)
        return 0
    if args.format == "html":
        from ..report.site import write_site

        print(f"wrote {write_site(results_dir, args.out, reference=reference)}")
        return 0
    print(write_report(results_dir, args.format, args.out, reference=reference))
    return 0


def run_browse(args) -> int:

    return serve(_given_results_dir(args), host=args.host, port=args.port, open_browser=args.open)
