#!/bin/sh
# Resumable, one seed at a time so that a stopped run leaves every method x source x sparsity at the
# first seeds; a finished cell is kept and a rerun does the rest. Run from the repository root.
for seed in 0 1 2; do
  HF_HUB_OFFLINE=1 .venv/bin/prunebench run results/calibration-source/benchmarks.yaml \
    --results-dir results/calibration-source --only seed=$seed
done
