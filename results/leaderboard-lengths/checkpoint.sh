#!/bin/sh
# Commit the cells finished so far with everything generated from them: the report, the claims table
# and the README's quoted tables (each regenerates byte-identical from the store; tests check it).
cd "$(dirname "$0")/../.." || exit 2
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/prunebench report results/leaderboard-lengths --claims results/claims/claims.yaml > /dev/null || exit 1
.venv/bin/python scripts/readme_tables.py || exit 1
cells=$(ls results/leaderboard-lengths/cells | wc -l)
git add results/leaderboard-lengths results/claims README.md
git commit -q -m "leaderboard-lengths: $cells cells finished or running, report and claims regenerated" -- \
    results/leaderboard-lengths results/claims README.md && echo "committed $cells cells"
