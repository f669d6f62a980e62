"""Zero-shot evaluation through lm-eval on the in-memory model (no save and reload)."""
from __future__ import annotations

import difflib
import json
import logging
import os
import re
import statistics
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

from ..api.errors import UsageError, did_you_mean
from ..api.cache import cache_dir

OFFLINE_TASKS = Path(__file__).resolve().parent / "tasks"
METRICS = ("acc", "acc_norm", "perplexity")
ITEM_METRICS = ("acc", "acc_norm")  # 0/1 per item: what per-item correctness is kept for
# Set (by --verbose) to show lm-eval's warnings; an environment variable, so that Ray workers see it too.
VERBOSE_ENV = "PRUNEBENCH_VERBOSE"


@dataclass(frozen=True)
class TaskSpec:
    names: tuple[str, ...] = ()
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: int = 1
    path: str | None = None  # extra lm-eval task directory (include_path)
    text_path: str | None = None  # the text behind prunebench_lastword_text


def _set_lm_eval_logging() -> None:
    """lm-eval warns about things that are as prunebench means them (an in-memory model, few-shot
    defaults, task metadata): hidden unless --verbose. Its own handler is never installed (simple_evaluate
    gets no verbosity), so what is shown goes to the current stderr."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING if os.environ.get(VERBOSE_ENV) else logging.ERROR)


def task_manager(spec, data_dir: str | None = None):
    """lm-eval's task index plus prunebench's offline tasks (indexing takes seconds: cached)."""
    _set_lm_eval_logging()
    return _task_manager(spec.path, spec.text_path, data_dir)


@lru_cache(maxsize=4)
def _task_manager(path: str | None, text_path: str | None, data_dir: str | None):
    from lm_eval.tasks import TaskManager

    include = [str(OFFLINE_TASKS)] + ([str(Path(path).expanduser())] if path else [])
    # Metadata reaches the offline tasks' dataset builder (where the local text lives).
    metadata = {"data_dir": data_dir or "", "text_path": text_path or ""}
    return TaskManager(include_path=include, metadata=metadata)


def load_tasks(spec, data_dir: str | None = None):
    """Load every task's data up front: an unreachable task is named, never silently dropped."""
    manager = task_manager(spec, data_dir)  # sets lm-eval's log level before it loads anything
    known = set(manager.all_tasks)
    loaded = {}
    for name in spec.names:
        if name not in known:
            raise did_you_mean("lm-eval task", name, [t for t in known if not t.startswith("_")], limit=10,
                               more="list them all with: lm-eval ls tasks")
        try:
            loaded.update(manager.load([name])["tasks"])
        except UsageError:  # prunebench's own tasks name the problem themselves (e.g. a text file not UTF-8)
            raise
        except Exception as error:  # datasets/hub raise many types; all mean "no data here"
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise UsageError(
                f"lm-eval task '{name}' cannot load its data ({first}). Point it at local data: download the "
                "dataset into the Hugging Face cache (HF_DATASETS_CACHE) on a machine with the hub, or copy the "
                "task's YAML, set dataset_path: json and dataset_kwargs.data_files to your files, and give its "
                "directory as the tasks path (--tasks-path DIR or evaluation.tasks.path)."
            ) from None
    return manager, loaded


def evaluate_tasks(model, tokenizer, spec, device, data_dir: str | None = None) -> dict:
    """Run lm-eval; return {task: {acc, acc_norm?, perplexity?}, "mean_acc": ...}."""
    from lm_eval import simple_evaluate

    from .lm_scoring import ContinuationLM  # lm-eval

    if spec.num_fewshot < 0 or (spec.limit is not None and spec.limit < 1) or spec.batch_size < 1:
        raise UsageError("Zero-shot settings: num_fewshot >= 0, limit >= 1 and batch_size >= 1.")
    manager, tasks = load_tasks(spec, data_dir)
    from ..models.walk import on_device

    # A model larger than the GPU runs offloaded (device_map="auto"); either way it goes back where it was.
    with on_device(model, device):
        # HFLM scoring only the continuation positions (lm_scoring): the same log-likelihoods, tested.
        lm = ContinuationLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size, device=str(device))
        # log_samples gives each item's metrics, from which intervals and paired comparisons are made
        # (prunebench.metrics.uncertainty); bootstrap_iters stays 0, since lm-eval bootstraps some metrics (the
        # task perplexity) in a process pool, and its closed-form stderr of a mean is computed below.
        output = simple_evaluate(model=lm, tasks=list(tasks.values()), num_fewshot=spec.num_fewshot, limit=spec.limit,
                                 task_manager=manager, log_samples=True, bootstrap_iters=0)
    record = {}
    for name in spec.names:
        metrics = output["results"].get(name, {})
        record[name] = {m: metrics[f"{m},none"] for m in METRICS if f"{m},none" in metrics}
        record[name]["samples"] = output.get("n-samples", {}).get(name, {}).get("effective")
        record[name].update(item_results(output.get("samples", {}).get(name, [])))
    accuracies = [r["acc"] for r in record.values() if "acc" in r]
    record["mean_acc"] = statistics.fmean(accuracies) if accuracies else None
    return record


def item_results(samples: list[dict]) -> dict:
    """Per-item correctness in document order, {"correct": {metric: [0, 1, ...]}}, and each metric's
    standard error by lm-eval's own formula for a mean ("acc_stderr", ...)."""
    from lm_eval.api.metrics import mean_stderr

    # One entry per document and filter; the reported metrics ("acc,none") are those of filter "none".
    ordered = sorted((s for s in samples if s.get("filter", "none") == "none"), key=lambda s: s["doc_id"])
    found: dict = {}
    for metric in ITEM_METRICS:
        values = [s[metric] for s in ordered if metric in s]
        if not values or len(values) != len(ordered):
            continue
        found.setdefault("correct", {})[metric] = [int(v) if v in (0, 1) else float(v) for v in values]
        if len(values) > 1:
            found[f"{metric}_stderr"] = float(mean_stderr(values))
    return found


def unknown_tasks(tasks: TaskSpec) -> list[tuple[int, str]]:
    """(index, message) for each task name lm-eval's index does not have (no data is loaded here)."""
    known = _known_task_names(tasks)
    problems = []
    for i, name in enumerate(tasks.names):
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            problems.append((i, f"unknown lm-eval task '{name}'.{hint}"))
    return problems


def _known_task_names(tasks: TaskSpec) -> set[str]:
    """prunebench's offline task names, and lm-eval's when needed: indexing lm-eval's 14,000 task files
    takes about ten seconds, so its name list is cached per lm-eval version."""
    # The task YAMLs use lm-eval's `!function` tag, which a safe loader refuses: read the one key.
    offline = {match.group(1) for path in OFFLINE_TASKS.glob("*.yaml")
               for match in [re.search(r"^task:\s*(\S+)", path.read_text(), re.M)] if match}
    if tasks.path is None and set(tasks.names) <= offline:
        return offline
    if tasks.path is not None:  # the user's own task directory: index it afresh
        return set(task_manager(tasks).all_tasks)
    cache = cache_dir() / f"lm-eval-{version('lm_eval')}-tasks.json"
    try:
        return set(json.loads(cache.read_text())) | offline
    except (OSError, ValueError):
        names = set(task_manager(tasks).all_tasks)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(sorted(names)))
        except OSError:
            pass  # a read-only cache only costs time
        return names
