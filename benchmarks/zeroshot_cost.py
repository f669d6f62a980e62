"""Zero-shot cost of one cell: the offline last-word task on all its passages (or --limit), scored as the
grid scores it (prunebench.metrics.zeroshot.evaluate_tasks, ContinuationLM), and with --hflm also by
lm-eval's HFLM on the same requests (the accuracies must agree).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/zeroshot_cost.py --model gemma3-270m [--batch-size 16] [--hflm]"""
from __future__ import annotations

import argparse
import time

import prunebench
from prunebench.metrics.zeroshot import TaskSpec, evaluate_tasks

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="gemma3-270m")
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--limit", type=int, default=None)
parser.add_argument("--data-dir", default="../shared/data")
parser.add_argument("--hflm", action="store_true", help="also time lm-eval's HFLM (about 11 minutes on Gemma)")
args = parser.parse_args()
model, tokenizer = prunebench.load_model(args.model)
spec = TaskSpec(("prunebench_lastword_wikitext2",), 0, args.limit, args.batch_size)
scorers = ["ContinuationLM"] + (["HFLM"] if args.hflm else [])
for scorer in scorers:
    if scorer == "HFLM":
        from lm_eval.models.huggingface import HFLM

        from prunebench.metrics import lm_scoring

        lm_scoring.ContinuationLM._loglikelihood_tokens = HFLM._loglikelihood_tokens  # HFLM's own loop
    start = time.perf_counter()
    record = evaluate_tasks(model, tokenizer, spec, "cpu", args.data_dir)
    task = record["prunebench_lastword_wikitext2"]
    print(f"{args.model}, {scorer}, batch {args.batch_size}: {task['samples']} passages in "
          f"{time.perf_counter() - start:.1f} s, acc {task['acc']:.4f}", flush=True)
