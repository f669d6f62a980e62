"""ACE ablation on SmolLM2, on a tuning split: CosP sign handling, VarP reading, their product, and
VarP as a factor on Wanda and RIA, each against Wanda with 95% intervals.

Each configuration prunes the same dense model (restored from memory between runs) with pydoc
calibration windows and is scored by perplexity on `--eval-dataset`, by default pydoc's held-out
fifth: disjoint from pydoc's calibration documents and from the leaderboard's WikiText-2 test
split, so the defaults chosen from this table are not tuned on what the leaderboard reports.
Records (with every window's NLL) are appended one JSON line per run, and a rerun skips the runs
already there; the table, with 95% intervals and paired ratios to Wanda, is rebuilt from
the records at the end (or alone with --table-only).
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
from pathlib import Path

CONFIGS = [
    ("wanda", {}), ("ria", {}),
    ("ace-cosp", {"sign": "abs-token"}), ("ace-cosp", {"sign": "abs"}), ("ace-cosp", {"sign": "clamp"}),
    ("ace-cosp", {"sign": "signed"}),
    ("ace-varp", {"reading": "inverse"}), ("ace-varp", {"reading": "variance"}),
    ("ace", {"sign": "abs-token", "reading": "inverse"}), ("ace", {"sign": "abs-token", "reading": "variance"}),
    ("ace", {"sign": "abs", "reading": "inverse"}), ("ace", {"sign": "abs", "reading": "variance"}),
    ("wanda+varp", {"reading": "inverse"}), ("wanda+varp", {"reading": "variance"}),
    ("ria+varp", {"reading": "inverse"}), ("ria+varp", {"reading": "variance"}),
]
REFERENCE = "wanda"
# Head-to-head comparisons the defaults turn on: (reference, method).
PAIRS = [
    ("ace sign=abs-token reading=variance", "ace sign=abs-token reading=inverse"),
    ("ace sign=abs reading=inverse", "ace sign=abs-token reading=inverse"),
    ("ace-cosp sign=abs-token", "ace sign=abs-token reading=inverse"),
    ("ria", "ria+varp reading=inverse"),
    ("ace-varp reading=variance", "wanda+varp reading=variance"),
]
# A window NLL at or above this is shown as diverged (perplexity > 1e6): no interval is meaningful there.
DIVERGED_NLL = math.log(1e6)


def label(method: str, args: dict) -> str:
    return method + "".join(f" {k}={v}" for k, v in args.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/ace-ablation-tuning")
    parser.add_argument("--eval-dataset", default="pydoc",
                        help="perplexity text; pydoc (its held-out fifth) is the tuning split. wikitext2 is refused: "
                             "the leaderboard reports WikiText-2 test")
    parser.add_argument("--eval-seqlen", type=int, default=256,
                        help="evaluation window (the leaderboard's is 512; 256 halves the cost of a ranking)")
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--calib-dataset", default="pydoc")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--lengths", default="16,128")
    parser.add_argument("--sparsities", default="0.5,2:4")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--only", action="append", default=[],
                        help="run only these configuration labels (repeatable), e.g. --only 'ace-cosp sign=abs-token'")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 is much faster than 2 when other jobs share the 2 cores)")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--table-only", action="store_true", help="rebuild table.md from the records, run nothing")
    args = parser.parse_args()
    if args.eval_dataset.split(":")[0] == "wikitext2":
        parser.error("--eval-dataset wikitext2 is the leaderboard's test split; tune on pydoc (its held-out fifth)")
    out = Path(args.out)
    if not args.table_only:
        run(args, out)
    write_table(out / "records.jsonl", out, _evaluation(args))


def _evaluation(args: argparse.Namespace) -> dict:
    return {"dataset": args.eval_dataset, "seqlen": args.eval_seqlen, "windows": args.eval_windows}


def run(args: argparse.Namespace, out: Path) -> None:
    import prunebench
    import prunebench.plugins.ace
    import torch
    from prunebench import (
        calibration_documents,
        evaluation_text,
        load_model,
        perplexity,
        sample_calibration,
        tokenize_text,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    labels = {label(m, a) for m, a in CONFIGS}
    unknown = sorted(set(args.only) - labels)
    if unknown:
        raise SystemExit(f"Unknown configuration(s) {unknown}; use one of: {', '.join(sorted(labels))}.")
    configs = [(m, a) for m, a in CONFIGS if not args.only or label(m, a) in args.only]
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    done = {_key(r) for r in _read(records_path)}
    evaluation = _evaluation(args)
    # The ACE plugin changes while this runs in a shared checkout: record which code made each number.
    ace_source = hashlib.sha256(inspect.getsource(prunebench.plugins.ace).encode()).hexdigest()[:12]

    model, tokenizer = load_model("smollm2-135m")
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    eval_ids = tokenize_text(tokenizer, evaluation_text(args.eval_dataset, args.data_dir))
    documents = calibration_documents(args.calib_dataset, args.data_dir)

    def evaluate() -> dict:
        result = perplexity(model, eval_ids, args.eval_seqlen, args.eval_windows)
        nlls = [x if math.isfinite(x) else None for x in result.window_nlls]
        finite = math.isfinite(result.perplexity) and None not in nlls
        return {"perplexity": result.perplexity if math.isfinite(result.perplexity) else None, "window_nlls": nlls,
                "status": "ok" if finite else "diverged"}

    def append(record: dict) -> None:
        with records_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k != "window_nlls"}), flush=True)

    if _key({"label": "dense", "evaluation": evaluation}) not in done:
        append({"label": "dense", "method": "dense", "evaluation": evaluation, **evaluate()})
    for seed in map(int, args.seeds.split(",")):
        for seqlen in map(int, args.lengths.split(",")):
            calibration = sample_calibration(tokenizer, documents, args.nsamples, seqlen, seed=seed)
            for sparsity in args.sparsities.split(","):
                for method, method_args in configs:
                    record = {"label": label(method, method_args), "method": method, "sparsity": sparsity,
                              "calibration": {"dataset": args.calib_dataset, "nsamples": args.nsamples,
                                              "seqlen": seqlen, "seed": seed},
                              "evaluation": evaluation}
                    if _key(record) in done:
                        continue
                    model.load_state_dict(dense)
                    report = prunebench.prune(model, method, sparsity, calibration, progress=False, **method_args)
                    append({**record, "arguments": report.arguments, **evaluate(),
                            "prune_seconds": report.timings["total"], "torch_threads": torch.get_num_threads(),
                            "prunebench": prunebench.__version__, "ace_source_sha256": ace_source})


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _key(record: dict) -> tuple:
    calibration = record.get("calibration", {})
    return (record["label"], record.get("sparsity"), calibration.get("seqlen"), calibration.get("seed"),
            json.dumps(record["evaluation"], sort_keys=True))


# -- the table ------------------------------------------------------------------------------------


def write_table(records_path: Path, out: Path, evaluation: dict) -> None:
    """Perplexity with its 95% interval, the paired ratio to Wanda, and the head-to-head PAIRS.

    With several seeds a cell is the mean over seeds (the crossed seeds x windows t interval, seeds paired:
    the same calibration sets). The 'all settings' column compares over all settings at once: each window's
    NLL averaged over the settings, so the ratio is the geometric mean of the settings' ratios.
    """
    from prunebench import perplexity_estimate
    from tabulate import tabulate

    everything = _read(records_path)
    matching = [r for r in everything if r["evaluation"] == evaluation]
    records = [r for r in matching if r["label"] != "dense"]
    dense = [r for r in matching if r["label"] == "dense"]
    if not records:
        present = sorted({json.dumps(r["evaluation"], sort_keys=True) for r in everything})
        raise SystemExit(f"No runs evaluated on {evaluation} in {records_path}; present: {present or 'none'}.")
    settings = sorted({(r["sparsity"], r["calibration"]["seqlen"]) for r in records},
                      key=lambda s: (":" in s[0], s[0], s[1]))
    runs = _Runs(records, settings)

    ppl_rows, ratio_rows = [], []
    for name in [label(m, a) for m, a in CONFIGS if label(m, a) in runs.nlls]:
        ppl_row = [name]
        for setting in settings:
            seeds = runs.seeds(name, setting)
            values = runs.finite(name, setting, seeds) if seeds else None
            if not seeds:
                ppl_row.append("")
            elif values is None:
                ppl_row.append(f"diverged ({_number(runs.point(name, setting))})")
            else:
                estimate = perplexity_estimate(values)
                ppl_row.append(_interval(estimate.value, estimate.low, estimate.high) + _seeds_note(len(seeds)))
        ppl_rows.append(ppl_row)
        ratio_rows.append([name] + (["reference"] * (len(settings) + 1) if name == REFERENCE
                                    else runs.ratio_cells(REFERENCE, name)))
    pair_rows = [[f"{method} / {reference}"] + runs.ratio_cells(reference, method)
                 for reference, method in PAIRS if reference in runs.nlls and method in runs.nlls]

    names = [f"{s} L={l}" for s, l in settings]
    calibration = records[0]["calibration"]
    split = ("pydoc's held-out fifth (every fifth documentation topic; disjoint from the calibration documents)"
             if evaluation["dataset"] == "pydoc" else evaluation["dataset"])
    dense_text = ""
    if dense:
        estimate = perplexity_estimate(dense[-1]["window_nlls"])
        dense_text = f" Dense: {_interval(estimate.value, estimate.low, estimate.high)}."
    ratio_headers = ["method"] + [f"{n} ↓" for n in names] + ["all settings ↓"]
    (out / "table.md").write_text(
        f"SmolLM2-135M pruned at each setting with {calibration['nsamples']} {calibration['dataset']} calibration "
        f"windows of L tokens; perplexity on {split}, the first {evaluation['windows']} windows of "
        f"{evaluation['seqlen']} tokens (lower is better).{dense_text} Cells are seed 0 unless marked (n seeds: mean "
        "over seeds, intervals over seeds and windows). Brackets: 95% intervals; a perplexity on one seed: the "
        "percentile bootstrap over windows, 2000 resamples, seed 0; on several seeds, and every ratio: the t interval "
        "over seeds and windows, crossed (one seed: the paired t interval over windows). 'diverged': some window's perplexity exceeds 1e6 (the point value in parentheses; "
        "no interval).\n\n"
        "Perplexity ↓ [95% interval]\n\n"
        + tabulate(ppl_rows, headers=["method"] + [f"{n} ↓" for n in names], tablefmt="github",
                   disable_numparse=True)
        + f"\n\nPaired ratio of perplexity to {REFERENCE} (same calibration and evaluation windows; < 1 is better) "
        "[95% interval]; * marks an interval that excludes 1 on at least 3 seeds (a one-seed "
        "comparison marks nothing). 'all settings': each window's NLL averaged over the "
        "settings, seed 0 (the geometric mean of the settings' ratios).\n\n"
        + tabulate(ratio_rows, headers=ratio_headers, tablefmt="github", disable_numparse=True)
        + "\n\nHead to head: the paired ratio of the first to the second, as above.\n\n"
        + tabulate(pair_rows, headers=ratio_headers, tablefmt="github", disable_numparse=True)
        + "\n"
    )


class _Runs:
    """Window NLLs by configuration, setting and seed, and paired ratios between configurations."""

    def __init__(self, records: list[dict], settings: list[tuple]):
        self.settings = settings
        self.nlls: dict[str, dict[tuple, dict[int, list]]] = {}
        for r in records:
            setting = (r["sparsity"], r["calibration"]["seqlen"])
            self.nlls.setdefault(r["label"], {}).setdefault(setting, {})[r["calibration"]["seed"]] = r["window_nlls"]

    def seeds(self, name: str, setting: tuple) -> list[int]:
        return sorted(self.nlls[name].get(setting, {}))

    def finite(self, name: str, setting: tuple, seeds: list[int]) -> list[list[float]] | None:
        """seeds x windows NLLs, or None when a window diverged."""
        values = [self.nlls[name][setting][s] for s in seeds]
        if any(v is None or v >= DIVERGED_NLL for run in values for v in run):
            return None
        return values

    def point(self, name: str, setting: tuple) -> float:
        """Seed 0's perplexity, however large (inf where a window's NLL was not finite)."""
        values = self.nlls[name][setting][min(self.nlls[name][setting])]
        if any(v is None for v in values):
            return math.inf
        mean = sum(values) / len(values)
        return math.exp(mean) if mean < 700 else math.inf

    def ratio_cells(self, reference: str, name: str) -> list[str]:
        """One paired ratio per setting (on the seeds both have), then over all settings (seed 0)."""
        from prunebench import perplexity_ratio

        cells, pooled_reference, pooled_method = [], [], []
        for setting in self.settings:
            common = [s for s in self.seeds(name, setting) if s in self.seeds(reference, setting)]
            if not common:
                cells.append("")
                continue
            method, base = self.finite(name, setting, common), self.finite(reference, setting, common)
            if method is None or base is None:
                cells.append("diverged")
                continue
            cells.append(_ratio(perplexity_ratio(base, method, same_seeds=True)) + _seeds_note(len(common)))
            if common[0] == 0:
                pooled_method.append(method[0])
                pooled_reference.append(base[0])
        if "diverged" in cells:
            cells.append("diverged")
        elif len(pooled_method) < len(self.settings):
            cells.append("")
        else:
            cells.append(_ratio(perplexity_ratio(_mean_over_settings(pooled_reference),
                                                 _mean_over_settings(pooled_method))))
        return cells


def _mean_over_settings(per_setting: list[list[float]]) -> list[float]:
    return [sum(values) / len(values) for values in zip(*per_setting)]


def _number(x: float) -> str:
    return f"{x:.2f}" if x < 1e4 else f"{x:.2e}"


def _interval(value: float, low: float, high: float) -> str:
    return f"{_number(value)} [{_number(low)}, {_number(high)}]"


def _ratio(comparison) -> str:
    mark = "*" if comparison.significant else ""
    return f"{comparison.value:.3f}{mark} [{comparison.low:.3f}, {comparison.high:.3f}]"


def _seeds_note(count: int) -> str:
    return f" ({count} seeds)" if count > 1 else ""


if __name__ == "__main__":
    main()
