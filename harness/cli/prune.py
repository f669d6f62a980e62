"""`prunebench prune`: one model pruned by one method (unstructured or structured), evaluated against its
dense self, measured with any registered metric, saved; the record it prints and writes carries the run's
provenance, for both kinds."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml
from tabulate import tabulate

from .. import registry
from ..api.allocation import resolve_settings
from ..api.errors import UsageError, did_you_mean
from ..api.metric import PRUNED, MetricContext, MetricSpec, check_settings
from ..api.sparsity import parse_sparsity
from ..api.tables import Cell, cell_parts
from ..data.datasets import (
    calibration_windows,
    evaluation_text,
    evaluation_window_cap,
    resolve_dataset,
    tokenize_text,
)
from ..grid.config import model_facts
from ..grid.provenance import run_provenance
from ..metrics.run import run_metrics
from ..metrics.zeroshot import TaskSpec, evaluate_tasks, load_tasks
from ..models.checkpoints import save_structured
from ..models.loading import (
    check_fits_context,
    check_lengths_fit,
    load_model,
    parse_dtype,
    save_pruned,
)
from ..registry import allocation_for, allocation_names
from ..store.results import check_writable, write_json_atomically


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

        _note_if_nothing_is_kept(args)
        return run_structured_prune(args, method_args, metric_specs)
    if args.speed_repeats:
        raise UsageError("--speed-repeats measures structured methods (a masked model runs at dense speed).")
    method = registry.get_method(args.method)
    arguments = method.resolve_arguments(method_args)
    target = parse_sparsity(args.sparsity)

    allocation, allocation_settings = parse_allocation_option(args.allocation)  # a typo: refused before loading
    if target.is_n_m and allocation != "uniform":
        raise UsageError(f"--allocation {args.allocation} needs a sparsity ratio, not N:M {target}; use --allocation uniform.")
    _resolve_datasets(args)
    dtype = parse_dtype(args.dtype)
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
                           eval_ids, lambda: _dense_twin(model, dense_weights)) if metric_specs else None

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
        "provenance": _provenance(args, method.name, eval_device),
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
                 dense_model, structured: bool = False) -> dict:
    """The named metrics of the pruned model, through the registry as a grid's cells run them:
    {metric name: its result}; `dense_model()` gives the dense copy the metrics that compare ask for."""

    def evaluation_tokens(dataset: str):
        if dataset == args.eval_dataset and eval_ids is not None:
            return eval_ids
        return tokenize_text(tokenizer, evaluation_text(dataset, args.data_dir))

    context = MetricContext(model=model, tokenizer=tokenizer, device=device, data_dir=args.data_dir, progress=True,
                            cell_kind=PRUNED, sparsity=sparsity, method=method, eval_seqlen=args.eval_seqlen,
                            evaluation_tokens=evaluation_tokens, dense_model=dense_model, structured=structured)
    fields, _ = run_metrics(specs, context)
    return {spec.name: registry.get_metric(spec.name).result_of(fields) or {} for spec in specs}


def _dense_twin(model, dense_weights: list):
    from ..models.walk import dense_twin  # torch

    return dense_twin(model, dense_weights)


def _provenance(args, method: str, device) -> dict:
    """What the run's numbers depend on besides its arguments, as a grid cell's record holds it."""
    return run_provenance(method, device=device, batch_size=args.batch_size, calibration_dataset=args.calib_dataset,
                          evaluation_datasets=[args.eval_dataset] if args.eval_dataset else [], data_dir=args.data_dir)


def _resolve_datasets(args) -> None:
    """An unknown calibration or evaluation dataset is refused before any loading (a bad --save path
    already was, by `check_writable`)."""
    resolve_dataset(args.calib_dataset)
    if args.eval_dataset:
        resolve_dataset(args.eval_dataset)


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


def run_structured_prune(args, method_args: dict, metric_specs: list = ()) -> dict:
    """Validate cheap things first, then load, calibrate, evaluate dense, prune, evaluate, time, save."""
    from ..metrics.measurements import measure_speed, parameter_count
    from ..metrics.perplexity import perplexity
    from ..models.walk import compute_device
    from ..pruning.structured_engine import (
        check_budget,
        check_propagation,
        check_target,
        structured_allocation,
        structured_prune,
    )

    method = registry.get_structured_method(args.method)
    arguments = method.resolve_arguments(method_args)
    check_target(method, args.sparsity)
    propagate = args.propagate or "dense"  # structured methods score on the dense model unless asked
    check_propagation(method, structured_allocation(method, arguments), propagate)
    if args.allocation != "uniform":
        raise UsageError(f"--allocation is for unstructured methods; give '{method.name}' --arg allocation=NAME "
                         f"({', '.join(allocation_names('structured'))}).")
    _resolve_datasets(args)
    device = compute_device(args.device, f"--device {args.device}", "use --device cpu")

    model, tokenizer = load_model(args.model, parse_dtype(args.dtype))
    # A hub id or GGUF file has no config.json to check before loading (run_prune checked the others).
    check_fits_context(model, args.model, {"--seqlen": args.seqlen,
                                           **({"--eval-seqlen": args.eval_seqlen} if args.eval_dataset else {})})
    # An unreadable head layout or a budget that would empty a layer fails now, before any forward.
    check_budget(model, method, args.sparsity, arguments)
    model.to(device)
    # The windows an unstructured run and a grid cell draw (one-document corpora: Wanda's get_wikitext2).
    calibration = calibration_windows(tokenizer, args.calib_dataset, args.nsamples, args.seqlen, args.seed, args.data_dir)
    eval_ids = tokenize_text(tokenizer, evaluation_text(args.eval_dataset, args.data_dir)) if args.eval_dataset else None

    def evaluate(which):
        if eval_ids is None:
            return None
        return perplexity(which, eval_ids, args.eval_seqlen, args.eval_windows, device=device, progress=True)

    dense_ppl = None if args.no_dense_eval else evaluate(model)
    # The same-process reference of --speed-repeats and of the metrics that compare with the dense model.
    dense = copy.deepcopy(model) if args.speed_repeats or metric_specs else None
    try:
        report = structured_prune(model, method, args.sparsity, calibration, batch_size=args.batch_size,
                                  device=device, propagate=propagate, progress=True, **arguments)
    except Exception as error:

        failure = registry.method_failure(error, method, "register_structured_methods", args.debug)
        if failure is None:
            raise
        raise failure from error
    pruned_ppl = evaluate(model)
    record = {
        "model": args.model, "method": method.name, "arguments": arguments, "sparsity": args.sparsity,
        "calibration": {"dataset": args.calib_dataset, "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed},
        "evaluation": None if eval_ids is None else {
            "dataset": args.eval_dataset, "window_length": args.eval_seqlen, "windows": pruned_ppl.windows,
            "dense_perplexity": dense_ppl.perplexity if dense_ppl else None, "pruned_perplexity": pruned_ppl.perplexity,
            "pruned_window_nlls": list(pruned_ppl.window_nlls)},
        "parameters": {"dense": report.parameters_before, "pruned": parameter_count(model),
                       "prunable_removed_fraction": report.removed_fraction},
        "report": report.to_dict(),
        **({"metrics": _run_metrics(metric_specs, model, tokenizer, device, args, args.sparsity, method.name,
                                    eval_ids, lambda: copy.deepcopy(dense), structured=True)} if metric_specs else {}),
        "provenance": _provenance(args, method.name, device),
    }
    if args.speed_repeats:
        if eval_ids is None or eval_ids.numel() < args.eval_seqlen:
            raise UsageError("--speed-repeats times the prefill at --eval-seqlen on the evaluation text; give --eval-dataset.")
        model.eval()
        record["speed"] = measure_speed({"dense": dense, "pruned": model}, eval_ids[: args.eval_seqlen].to(device),
                                        repeats=args.speed_repeats)
        del dense
    if args.save:
        record["saved"] = dict(save_structured(model, tokenizer, args.save), directory=str(args.save))
    _print_structured_summary(record)
    if args.json:

        write_json_atomically(Path(args.json), record)
    return record


def _print_structured_summary(record: dict) -> None:
    report = record["report"]
    parameters = record["parameters"]
    rows = [["model", record["model"]], ["method", f"{record['method']} {record['arguments']}"],
            ["target", f"{record['sparsity']} of the prunable parameters"],
            ["removed", f"{parameters['prunable_removed_fraction']:.4f} of the prunable parameters; "
                        f"parameters {parameters['dense']:,} -> {parameters['pruned']:,}"]]
    if report["removed_layers"]:
        rows.append(["removed layers", ", ".join(map(str, report["removed_layers"]))])
    if report["kept"]:
        heads = [k["heads"] for k in report["kept"]]
        channels = [k["channels"] for k in report["kept"]]
        rows.append(["kept per layer", f"kv groups {min(heads)}..{max(heads)}, FFN channels {min(channels)}..{max(channels)}"])
    evaluation = record["evaluation"]
    if evaluation:
        dense = evaluation["dense_perplexity"]
        rows += [["perplexity", f"dense {'-' if dense is None else f'{dense:.3f}'}, pruned "
                                f"{evaluation['pruned_perplexity']:.3f} ({evaluation['windows']} x {evaluation['window_length']})"]]
    speed = record.get("speed")
    if speed:
        pruned = speed["models"]["pruned"]
        for case, values in pruned.items():
            s = values["speedup"]
            rows.append([f"speedup {case}", f"{s['median']:.3f}x (range {s['min']:.3f}..{s['max']:.3f}, "
                                            f"{speed['repeats']} repeats, {speed['threads']} threads)"])
    if "saved" in record:
        saved = record["saved"]
        rows.append(["saved", f"{saved['directory']} ({saved['format']} checkpoint, {saved['bytes'] / 2**20:.1f} MiB)"])
    rows += _metric_rows(record.get("metrics") or {})
    rows.append(["time", ", ".join(f"{k} {v:.2f}s" for k, v in report["timings"].items())])
    rows += [["note", note] for note in report["notes"]]
    print(tabulate(rows, tablefmt="plain"))

