"""Wanda and SparseGPT: prunebench against llm-compressor 0.14 (the toolkit users pick instead), on the
same calibration tokens, timed end to end, and the pruned models' WikiText-2 perplexity on the same windows.

llm-compressor pins other transformers and compressed-tensors versions than prunebench, so it runs in
a virtual environment of its own (built once):

    python3 -m venv /tmp/lcvenv && /tmp/lcvenv/bin/pip install torch==2.13.0 llmcompressor==0.14.0.1
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/llmcompressor_compare.py --llmcompressor-python /tmp/lcvenv/bin/python

The driver (this environment) draws the calibration windows, prunes with prunebench (timed), writes the
windows and the model directory, runs `oneshot` with WandaPruningModifier / SparseGPTModifier in the other
environment (this file again, `--worker`; the time is oneshot's own, model load excluded), loads the pruned
weights back and evaluates both models here. Time it on a quiet machine."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> None:
    """In llm-compressor's environment: oneshot on the given windows; pruned weights and seconds out."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.obcq import SparseGPTModifier
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    windows = torch.load(args.windows)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    dataset = Dataset.from_dict({"input_ids": windows.tolist(), "attention_mask": torch.ones_like(windows).tolist()})
    modifier = {"wanda": WandaPruningModifier, "sparsegpt": SparseGPTModifier}[args.method]
    recipe = modifier(sparsity=args.sparsity, mask_structure="0:0", targets=["Linear"], ignore=["re:.*lm_head"])
    start = time.perf_counter()
    oneshot(model=model, dataset=dataset, recipe=recipe, num_calibration_samples=windows.shape[0],
            max_seq_length=windows.shape[1], batch_size=1, shuffle_calibration_samples=False, pipeline="sequential")
    seconds = time.perf_counter() - start
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, args.out)
    Path(args.out + ".json").write_text(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))


def driver(args) -> None:
    import torch

    import prunebench
    from prunebench.models.loading import cache_dir

    model, tokenizer = prunebench.load_model(args.model)
    model_dir = cache_dir() / "models" / args.model  # the alias's safetensors cache, written by load_model
    windows = prunebench.calibration_windows(tokenizer, "pydoc", args.nsamples, args.seqlen, 0)
    evaluation = prunebench.tokenize_text(tokenizer, prunebench.evaluation_text("wikitext2", args.data_dir))
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        torch.save(windows, Path(scratch) / "windows.pt")
        for method in args.methods.split(","):
            model.load_state_dict(dense)
            start = time.perf_counter()
            prunebench.prune(model, method, args.sparsity, windows, batch_size=8, device="cpu", progress=False)
            ours = time.perf_counter() - start
            ours_ppl = prunebench.perplexity(model, evaluation, 512, args.eval_windows, device="cpu").perplexity
            out = str(Path(scratch) / f"{method}.safetensors")
            subprocess.run([args.llmcompressor_python, __file__, "--worker", "--method", method, "--model-dir",
                            str(model_dir), "--windows", str(Path(scratch) / "windows.pt"), "--sparsity",
                            str(args.sparsity), "--out", out], check=True)
            from safetensors.torch import load_file

            theirs = json.loads(Path(out + ".json").read_text())["seconds"]
            model.load_state_dict(load_file(out), strict=False)
            their_ppl = prunebench.perplexity(model, evaluation, 512, args.eval_windows, device="cpu").perplexity
            rows.append((method, ours, theirs, ours_ppl, their_ppl))
    print(f"{args.model}, {args.sparsity} unstructured, {args.nsamples} x {args.seqlen} pydoc windows, "
          f"perplexity on {args.eval_windows} x 512 WikiText-2 test, {torch.get_num_threads()} threads")
    print("| method | prunebench s | llm-compressor s | time ratio | prunebench ppl | llm-compressor ppl | ppl ratio |")
    print("|---|---|---|---|---|---|---|")
    for method, ours, theirs, ours_ppl, their_ppl in rows:
        print(f"| {method} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.3f} | {ours_ppl:.3f} | {their_ppl:.3f} | "
              f"{ours_ppl / their_ppl:.4f} |")


parser = argparse.ArgumentParser()
parser.add_argument("--worker", action="store_true")
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--model-dir")
parser.add_argument("--windows")
parser.add_argument("--out")
parser.add_argument("--method", default="wanda")
parser.add_argument("--methods", default="wanda,sparsegpt")
parser.add_argument("--sparsity", type=float, default=0.5)
parser.add_argument("--nsamples", type=int, default=32)
parser.add_argument("--seqlen", type=int, default=128)
parser.add_argument("--eval-windows", type=int, default=32)
parser.add_argument("--data-dir", default="../shared/data")
parser.add_argument("--llmcompressor-python", default=sys.executable)
arguments = parser.parse_args()
(worker if arguments.worker else driver)(arguments)
