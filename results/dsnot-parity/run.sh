#!/bin/sh
# Wanda + DSnoT at 60% against the authors' prune_DSnoT (benchmarks/dsnot_parity.py); AUTHORS: a checkout of github.com/zyxxmu/DSnoT.
AUTHORS=${AUTHORS:-/tmp/dsnot-authors}
cd benchmarks && HF_HUB_OFFLINE=1 ../.venv/bin/python dsnot_parity.py --authors "$AUTHORS" --data-dir ../../shared/data 2>/dev/null \
  | sed -n '/^smollm2/,$p'
# The experiment: our statistics accumulated with their float32 running-mean rounding (parity-their-rounding.txt).
cd benchmarks && HF_HUB_OFFLINE=1 ../.venv/bin/python dsnot_parity.py --authors "$AUTHORS" --data-dir ../../shared/data \
  --their-rounding 2>/dev/null | sed -n '/^smollm2/,$p'
