#!/bin/sh
# SmolLM2-135M at 50% of the prunable parameters; pydoc calibration (32 x 512 windows, seed 0: the
# WikiText-2 train split is not available offline here); perplexity on the first 8 windows of 512
# WikiText-2 test tokens; CPU prefill (512 tokens) and decode speed of the pruned model against the
# dense one in the same process (5 interleaved repeats after 1 warm-up). The dense perplexity is
# evaluated once, in the first run.
set -e
cd "$(dirname "$0")/../.."
dense=""
for method in cfsp flap shortgpt saap-standin wanda-sp; do
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/prunebench prune --model smollm2-135m --method "$method" \
    --sparsity 0.5 --calib-dataset pydoc --nsamples 32 --seqlen 512 --batch-size 4 \
    --eval-dataset wikitext2 --data-dir ../shared/data --eval-seqlen 512 --eval-windows 8 $dense \
    --device cpu --metric speed:repeats=5 --json "results/structured-smollm2/records/$method-0.5.json"
  dense="--no-dense-eval"
done
