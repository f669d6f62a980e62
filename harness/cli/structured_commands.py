"""What `prunebench prune` does for a structured method: prune, evaluate, measure size and speed against
the dense model in the same process, save a model transformers loads."""
from __future__ import annotations

import copy
from pathlib import Path

from tabulate import tabulate

from .. import registry
from ..api.errors import UsageError
from ..data.datasets import (
    calibration_documents,
    evaluation_text,
    resolve_dataset,
    sample_calibration,
    tokenize_text,
)
from ..models.checkpoints import save_structured
from ..models.loading import check_fits_context, load_model, parse_dtype
from ..registry import allocation_names
from ..store.results import write_json_atomically


def run_structured_prune(args, method_args: dict) -> dict:
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
    resolve_dataset(args.calib_dataset)
    if args.eval_dataset:
        resolve_dataset(args.eval_dataset)
    if args.save and Path(args.save).exists() and not Path(args.save).is_dir():
        raise UsageError(f"--save {args.save} is a file; give a directory path.")
    device = compute_device(args.device, f"--device {args.device}", "use --device cpu")

    model, tokenizer = load_model(args.model, parse_dtype(args.dtype))
    # A hub id or GGUF file has no config.json to check before loading (run_prune checked the others).
    check_fits_context(model, args.model, {"--seqlen": args.seqlen,
                                           **({"--eval-seqlen": args.eval_seqlen} if args.eval_dataset else {})})
    # An unreadable head layout or a budget that would empty a layer fails now, before any forward.
    check_budget(model, method, args.sparsity, arguments)
    model.to(device)
    calibration = sample_calibration(tokenizer, calibration_documents(args.calib_dataset, args.data_dir),
                                     args.nsamples, args.seqlen, args.seed)
    eval_ids = tokenize_text(tokenizer, evaluation_text(args.eval_dataset, args.data_dir)) if args.eval_dataset else None

    def evaluate(which):
        if eval_ids is None:
            return None
        return perplexity(which, eval_ids, args.eval_seqlen, args.eval_windows, device=device, progress=True)

    dense_ppl = None if args.no_dense_eval else evaluate(model)
    dense = copy.deepcopy(model) if args.speed_repeats else None  # the same-process speed reference
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
    _print_summary(record)
    if args.json:

        write_json_atomically(Path(args.json), record)
    return record


def _print_summary(record: dict) -> None:
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
    rows.append(["time", ", ".join(f"{k} {v:.2f}s" for k, v in report["timings"].items())])
    rows += [["note", note] for note in report["notes"]]
    print(tabulate(rows, tablefmt="plain"))

