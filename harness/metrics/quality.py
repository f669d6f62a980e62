"""Built-in quality metrics: perplexity per evaluation dataset (per-window NLLs kept for bootstrap
intervals and paired ratios) and lm-eval zero-shot accuracy (per-item correctness kept). Each names
its `table_style`; the report's `quality_tables` build those tables, so a metric imports nothing of the report."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..api.hookspecs import hookimpl
from ..api.metric import REQUIRED, Metric, MetricContext, Value
from ..data.datasets import dataset_problem, evaluation_text, evaluation_window_cap, tokenize_text
from .zeroshot import TaskSpec, evaluate_tasks, unknown_tasks


# Published perplexity protocols a grid names instead of seqlen and max_windows. FLAP, LLM-Pruner and
# Wanda-sp (the structured-pruning family) tokenize WikiText-2 test joined with "\n\n" once (tokenizer
# defaults), score every non-overlapping 128-token window (tail dropped, 127 targets each) and report
# exp of the mean token NLL: LLM-Pruner 128a07d LLMPruner/datasets/ppl_dataset.py L34-39,
# LLMPruner/evaluator/ppl.py L7 and L32, hf_prune.py L283; FLAP 3bb57db main.py L40 (seqlen 128),
# lib/eval.py L55-91. The same text and windows as ours at seqlen 128 without a cap, so the label is
# ours ("wikitext2-128"); they evaluate in fp16, ours in the grid's dtype.
PERPLEXITY_PROTOCOLS = {"llm-pruner": {"seqlen": 128, "max_windows": None}}


def context_tokens(context: MetricContext, dataset: str):
    """The token ids of `dataset`'s evaluation text: the runner's cache across cells where it gives one."""
    if context.evaluation_tokens is not None:
        return context.evaluation_tokens(dataset)
    return tokenize_text(context.tokenizer, evaluation_text(dataset, context.data_dir))


def window_problems(metric: str, settings: dict) -> list[str]:
    """Problems with a metric's `dataset`, `windows` and `seqlen` settings (for `Metric.check`)."""
    problems = [f"{metric}'s {key} is a positive integer, not {settings[key]!r}." for key in ("windows", "seqlen")
                if isinstance(settings[key], bool) or not isinstance(settings[key], int) or settings[key] < 1]
    problem = dataset_problem(settings["dataset"], "evaluation") if isinstance(settings["dataset"], str) else \
        f"a dataset name, not {settings['dataset']!r}"
    return problems + ([f"{metric}'s dataset: {problem}"] if problem else [])


@dataclass(frozen=True)
class PerplexitySpec:
    dataset: str
    seqlen: int = 512
    max_windows: int | None = None

    @property
    def label(self) -> str:
        cap = f"x{self.max_windows}" if self.max_windows else ""
        return f"{self.dataset}-{self.seqlen}{cap}"


class Perplexity(Metric):
    name = "perplexity"
    description = ("exp(mean over non-overlapping windows of the window's mean next-token NLL) of one dataset's "
                   "evaluation text, as Wanda and SparseGPT compute it; per-window NLLs kept")
    higher_is_better = False
    unit = "perplexity"
    needs_tokenizer = True
    settings = {"dataset": REQUIRED, "seqlen": 512, "max_windows": None}
    record_key = "perplexity"
    plot_prefix = "ppl"
    table_style = "perplexity"
    log_scale = True

    def check(self, settings: dict) -> list[str]:
        problems = []
        if not isinstance(settings["dataset"], str):
            problems.append(f"perplexity's dataset is a dataset name, not {settings['dataset']!r}.")
        if settings["seqlen"] < 2:
            problems.append("perplexity's seqlen must be at least 2.")
        if settings["max_windows"] is not None and (not isinstance(settings["max_windows"], int)
                                                    or settings["max_windows"] < 1):
            problems.append(f"perplexity's max_windows is a positive integer, not {settings['max_windows']!r}.")
        if not problems:  # the dataset exists and, when local, is readable text (as the shorthand is checked)

            problem = dataset_problem(settings["dataset"], "evaluation")
            problems += [problem] if problem else []
        return problems

    def compute(self, context: MetricContext, dataset: str, seqlen: int, max_windows: int | None) -> dict:
        from ..models.walk import on_device
        from .perplexity import perplexity

        tokens = context_tokens(context, dataset)
        cap = evaluation_window_cap(dataset, max_windows)
        with on_device(context.model, context.device):
            result = perplexity(context.model, tokens, seqlen, cap, device=context.device, progress=context.progress)
        return {PerplexitySpec(dataset, seqlen, max_windows).label: dict(result.to_dict(), dataset=dataset)}

    def headline(self, result: dict) -> list[str]:
        return [f"{label} ppl {p['perplexity']:.3f}" for label, p in result.items()]

    def diverged(self, result: dict) -> bool:
        return not all(math.isfinite(p["perplexity"]) for p in result.values())

    def summary(self, records: list[dict]) -> str:
        return f"perplexity evaluations: {', '.join(self._labels(records)) or 'none'}"

    def run_columns(self, records: list[dict]) -> list:
        def reader(label):
            def read(record: dict) -> tuple[float | None, bool]:
                result = (record.get("perplexity") or {}).get(label)
                if result is None:
                    return None, False
                return result.get("perplexity"), result.get("perplexity") is None  # null: non-finite in the store
            return read

        return [(f"{label} ↓", reader(label)) for label in self._labels(records)]

    def record_values(self, result: dict, resamples: int = 0) -> list:
        """Each evaluation's perplexity (None: diverged), with its bootstrap interval over the kept window NLLs."""
        values = []
        for label, entry in sorted(result.items()):
            number = entry.get("perplexity") if isinstance(entry, dict) else None
            shown = None
            if isinstance(number, (int, float)) and math.isfinite(number):
                shown = (float(number), None, None)
                nlls = entry.get("window_nlls")
                if resamples and nlls and all(v is not None for v in nlls):
                    from .uncertainty import perplexity_estimate

                    estimate = perplexity_estimate(nlls, resamples=resamples)
                    shown = (float(number), estimate.low, estimate.high)
            values.append((Value(label, label, False), shown))
        return values

    @staticmethod
    def _labels(records: list[dict]) -> list[str]:
        return sorted({label for r in records for label in (r.get("perplexity") or {})})


class ZeroShot(Metric):
    name = "zero-shot"
    description = "lm-eval tasks on the in-memory model: each task's acc (acc_norm, perplexity where it has them), " \
                  "per-item correctness kept, and the mean accuracy"
    higher_is_better = True
    unit = "accuracy"
    needs_tokenizer = True
    settings = {"names": [], "num_fewshot": 0, "limit": None, "batch_size": 1, "path": None, "text_path": None}
    record_key = "tasks"
    table_style = "accuracy"

    def check(self, settings: dict) -> list[str]:
        problems = []
        if not all(isinstance(name, str) for name in settings["names"]):
            problems.append(f"zero-shot's names is a list of lm-eval task names, not {settings['names']!r}.")
        for key, low in (("num_fewshot", 0), ("limit", 1), ("batch_size", 1)):
            if settings[key] is not None and (not isinstance(settings[key], int) or settings[key] < low):
                problems.append(f"zero-shot's {key} is an integer of at least {low}, not {settings[key]!r}.")
        if not problems and settings["names"]:  # names against lm-eval's index, as the tasks shorthand is

            spec = TaskSpec(tuple(settings["names"]), path=settings["path"], text_path=settings["text_path"])
            problems += [message for _, message in unknown_tasks(spec)]
        return problems

    def compute(self, context: MetricContext, names, num_fewshot, limit, batch_size, path, text_path) -> dict:
        if not names:
            return {}
        spec = TaskSpec(tuple(names), num_fewshot, limit, batch_size, path, text_path)
        return evaluate_tasks(context.model, context.tokenizer, spec, context.device, context.data_dir)

    def run_columns(self, records: list[dict]) -> list:
        def read(record: dict) -> tuple[float | None, bool]:
            accuracy = (record.get("tasks") or {}).get("mean_acc")
            return (None if accuracy is None else accuracy * 100), False

        return [("mean acc % ↑", read)]  # always shown, as the per-cell table always had it

    def record_values(self, result: dict, resamples: int = 0) -> list:
        """The mean accuracy, then each task's acc and acc_norm (with their interval from the kept per-item
        correctness) and lm-eval's perplexity where the task has one."""
        values = []
        if isinstance(result.get("mean_acc"), (int, float)):
            mean = Value("mean_acc", "mean accuracy", True, "%", 100.0)
            values.append((mean, (float(result["mean_acc"]), None, None)))
        for task, metrics in sorted(result.items()):
            if not isinstance(metrics, dict):
                continue
            for name, better in (("acc", True), ("acc_norm", True), ("perplexity", False)):
                number = metrics.get(name)
                if not isinstance(number, (int, float)) or isinstance(number, bool):
                    continue
                low = high = None
                correct = (metrics.get("correct") or {}).get(name)
                if resamples and correct:
                    from .uncertainty import accuracy_estimate

                    estimate = accuracy_estimate([correct], resamples=resamples)
                    low, high = estimate.low, estimate.high
                accuracy = name != "perplexity"
                values.append((Value(f"{task}.{name}", f"{task} {name}", better, "%" if accuracy else "",
                                     100.0 if accuracy else 1.0), (float(number), low, high)))
        return values


@hookimpl
def register_metrics(register):
    register(Perplexity())
    register(ZeroShot())
