#!/bin/sh
# CFSP parity against the authors' code (benchmarks/cfsp_parity.py); AUTHORS: a checkout of github.com/wyxscir/CFSP.
AUTHORS=${AUTHORS:-/tmp/cfsp-authors}
for setting in "--sparsity 0.3 --round-to 128" "--sparsity 0.3 --round-to 1" "--sparsity 0.5 --round-to 1" "--sparsity 0.2 --round-to 1 --nsamples 64"; do
  HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cfsp_parity.py --authors "$AUTHORS" $setting 2>/dev/null \
    | sed -n '/^smollm2/,$p'
  echo
done
