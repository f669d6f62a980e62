#!/bin/sh
# CFSP at 30% on SmolLM2, then LoRA recovery on the same 64 x 128 pydoc calibration tokens (8192 tokens,
# one pass, rank 8 budget): capacity by layer importance against uniform, and no recovery.
set -e
common="--model smollm2-135m --method cfsp --sparsity 0.3 --calib-dataset pydoc --nsamples 64 --seqlen 128 \
  --eval-dataset wikitext2 --data-dir ../shared/data --eval-seqlen 512 --eval-windows 32 --device cpu"
out=results/cfsp-recovery/records
mkdir -p $out
HF_HUB_OFFLINE=1 .venv/bin/prunebench prune $common --json $out/none.json
for capacity in importance uniform; do
  HF_HUB_OFFLINE=1 .venv/bin/prunebench prune $common --no-dense-eval --arg recover_tokens=8192 \
    --arg lora_capacity=$capacity --json $out/$capacity.json
done
