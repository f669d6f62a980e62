#!/bin/sh
# Resumable: a finished cell is kept, a rerun does the rest. Records land in results/paper-protocol.
HF_HUB_OFFLINE=1 .venv/bin/prunebench run results/paper-protocol/benchmarks.yaml --results-dir results/paper-protocol
