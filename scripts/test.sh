#!/usr/bin/env bash
# Set up, start the local Slurm cluster when possible, and run the whole test suite in two tiers:
#   1. the fast tier:  pytest                      (units, contracts, fidelity, data, analysis)
#   2. the rest:       pytest -m "(slow or slurm or distributed or cuda) and not benchmark"   (cuda skips without a GPU)
# each with --durations=25; the exit status is the first failing stream's, in the order below.
# The rest is run as two streams split by marker, Slurm, several ranks and the fault tests in one,
# the other processes, servers and browsers in the other. All three streams run at once: the fast
# tier is one process on one core, and each stream of the rest mostly waits (on servers, Slurm jobs,
# ranks and time-outs). The other processes print as they go; the other two streams' output is kept in files
# and printed when all have ended. Ctrl-C, or SIGTERM to the process group, stops all three (exit 130).
# Usage: bash scripts/test.sh [pytest args]   the args go to every stream (e.g. -q, -x, -k word);
#        with an -m of your own, one pytest call runs that selection instead.
set -euo pipefail
cd "$(dirname "$0")/.."
# One intra-op thread per process: the streams and the processes they start share the cores, and
# torch's OpenMP threads spin while they wait for a busy core (a test module ran 2x slower beside
# another torch process with the default threads than with one each). Set it to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
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
names=("the fast tier (pytest)" "the rest: Slurm, several ranks, faults" "the rest: other processes, servers, browsers")
selections=("" "(slurm or distributed or faults) and not benchmark" "(slow or cuda) and not (slurm or distributed or faults) and not benchmark")
logs=() pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -f "${logs[@]}"; exit 130' INT TERM
for i in 0 1; do
  logs[i]=$(mktemp)
  if [ -z "${selections[i]}" ]; then marks=(); else marks=(-m "${selections[i]}"); fi
  .venv/bin/python -m pytest "${marks[@]}" --durations=25 "$@" >"${logs[i]}" 2>&1 &
  pids[i]=$!
done
echo "=== ${names[2]}:"
statuses=(0 0 0)
.venv/bin/python -m pytest -m "${selections[2]}" --durations=25 "$@" || statuses[2]=$?
for i in 0 1; do
  wait "${pids[i]}" || statuses[i]=$?
  echo "=== ${names[i]}, run beside it:"
  cat "${logs[i]}"
  rm -f "${logs[i]}"
done
# pytest's 5 (no test selected) is no failure for one stream alone: `bash scripts/test.sh tests/data`
if [ "${statuses[*]}" = "5 5 5" ]; then exit 5; fi
for status in "${statuses[@]}"; do
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
done
