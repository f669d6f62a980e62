#!/bin/sh
# The default grid (benchmarks.yaml), resumable: each phase skips the cells already in the store.
# Torch's default threads (this project's machine has 2 cores; the count is in each record's provenance,
# and a cell that ran with another count is not resumed as the same cell). Phases in the order the claims need them: SmolLM2 seed 0 (every L, the structured cells),
# its seeds 1 and 2, then Gemma 3. Each phase's start and end are logged in UTC.
cd "$(dirname "$0")/../.." || exit 2
# TQDM_DISABLE: no progress bars in run.log, which is committed.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
for phase in "model=smollm2-135m seed=0" "model=smollm2-135m seed=1" "model=smollm2-135m seed=2" \
             "model=gemma3-270m seed=0" "model=gemma3-270m seed=1" "model=gemma3-270m seed=2"; do
    only=""
    for filter in $phase; do only="$only --only $filter"; done
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) start: prunebench run benchmarks.yaml$only"
    # shellcheck disable=SC2086
    .venv/bin/prunebench run benchmarks.yaml $only
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) end ($?): prunebench run benchmarks.yaml$only"
done
