#!/usr/bin/env bash
# Set up, start the local Slurm cluster when possible, and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args]
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
exec .venv/bin/python -m pytest "$@"
