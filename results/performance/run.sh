#!/bin/sh
# The performance figures of the README's "Performance" section, one after another on a quiet machine.
# llm-compressor runs in its own environment (see benchmarks/llmcompressor_compare.py).
set -e
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
out=results/performance
.venv/bin/python benchmarks/wanda_reference_loop.py > $out/wanda_reference_loop.txt 2>&1
.venv/bin/python benchmarks/llmcompressor_compare.py --llmcompressor-python "${LLMCOMPRESSOR_PYTHON:-/tmp/lcvenv/bin/python}" \
  > $out/llmcompressor_compare.txt 2>&1
for method in wanda ria ace-cosp sparsegpt; do
  .venv/bin/prunebench bench --model smollm2-135m --method $method --nsamples 32 --seqlen 128
done > $out/bench.txt 2>&1
.venv/bin/python benchmarks/scaling.py --out $out/scaling > $out/scaling.txt 2>&1
.venv/bin/python benchmarks/zeroshot_cost.py --model gemma3-270m --batch-size 16 > $out/zeroshot_gemma.txt 2>&1
