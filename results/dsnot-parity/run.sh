#!/bin/sh
# Wanda + DSnoT at 60% against the authors' prune_DSnoT (benchmarks/dsnot_parity.py); AUTHORS: a checkout of
# github.com/zyxxmu/DSnoT. One authors' run, compared with ours under their statistics' rounding, then ours.
AUTHORS=${AUTHORS:-/tmp/dsnot-authors}
cd benchmarks || exit 2
HF_HUB_OFFLINE=1 ../.venv/bin/python dsnot_parity.py --authors "$AUTHORS" --data-dir ../../shared/data 2>/dev/null \
  | sed -n '/^20[0-9][0-9]-/,$p'
