#!/usr/bin/env bash
# Set up, start the local Slurm cluster when possible, and run the whole test suite in two tiers:
#   1. the fast tier:  pytest                      (units, contracts, fidelity, data, analysis)
#   2. the rest:       pytest -m "(slow or slurm or distributed or cuda) and not benchmark"   (cuda skips without a GPU)
# each with --durations=25; the exit status is the first tier's failure, else the second's.
# The two run at once: the fast tier is one process on one core, and the rest (servers, Slurm
# jobs, ranks, waits for timeouts) leaves a core idle about half of the time. The rest prints as
# it goes; the fast tier's output is kept in a file and printed when both have ended.
# Usage: bash scripts/test.sh [pytest args]   the args go to both tiers (e.g. -q, -x, -k word);
#        with an -m of your own, one pytest call runs that selection instead of the two tiers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/slurm_up.sh ]; then
  if out=$(bash scripts/slurm_up.sh 2>/tmp/slurm_up.err); then
    eval "$(tail -n 1 <<<"$out")"
    echo "slurm: $(sinfo -h -o '%P %D %T' 2>/dev/null)"
  else
    echo "slurm: not started ($(tail -n 1 /tmp/slurm_up.err)); Slurm tests will skip"
  fi
fi
for arg in "$@"; do
  case "$arg" in -m | -m*) exec .venv/bin/python -m pytest --durations=25 "$@" ;; esac
done
# pytest's 5 (no test selected) is no failure for one tier alone: `bash scripts/test.sh tests/data`
fast=0 rest=0
fast_log=$(mktemp)
.venv/bin/python -m pytest --durations=25 "$@" >"$fast_log" 2>&1 &
fast_pid=$!
trap 'kill "$fast_pid" 2>/dev/null; rm -f "$fast_log"; exit 130' INT TERM
.venv/bin/python -m pytest -m "(slow or slurm or distributed or cuda) and not benchmark" --durations=25 "$@" || rest=$?
wait "$fast_pid" || fast=$?
echo "=== the fast tier (pytest), run beside the rest:"
cat "$fast_log"
rm -f "$fast_log"
if [ "$fast" -eq 5 ] && [ "$rest" -eq 5 ]; then exit 5; fi
for status in "$fast" "$rest"; do
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
done
