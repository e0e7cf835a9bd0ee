#!/usr/bin/env bash
# The prepared GPU check: one script, under 8 minutes on one H100 (16 CPU cores).
#
#   bash scripts/gpu_check.sh             # on a GPU machine; without a GPU: exits 2 with one line
#   bash scripts/gpu_check.sh --dry-run   # anywhere: says the GPU is missing, prints what it would
#                                         # run, runs the (skipping) CUDA tests and a tiny CPU bench
#   --no-setup (or GPU_CHECK_NO_SETUP=1): use the existing .venv, do not run scripts/setup.sh
#
# Stages, each under `timeout` (seconds; GPU_CHECK_T_<STAGE> overrides): setup 180, nvidia-smi 15,
# pytest -m cuda 110, the step bench at float32 and at bf16 75 each, the loader bench 60:
# 515 s at most, about 7 minutes with the stages' own overheads well inside.
# Everything goes to stdout and to gpu_check.log ($OUT when set, else the current directory).
#
# torch: scripts/setup.sh installs requirements.lock, which pins torch==2.13.0 by version only. On
# the GPU machine that pin is expected to resolve to a CUDA build (PyPI's default Linux x86_64
# wheel of torch 2.13.0 is built against CUDA and pulls the nvidia-* runtime wheels; or a local
# CUDA wheel that pip finds first). A CPU build ("+cpu", torch.version.cuda None) there means no
# GPU check: the script says so after setup and exits 2 (0 with --dry-run).
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
setup=1
[ "${GPU_CHECK_NO_SETUP:-0}" = 1 ] && setup=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --no-setup) setup=0 ;;
    -h | --help)
      sed -n '2,19p' "$0"
      exit 0
      ;;
    *)
      echo "gpu_check: unknown argument $arg (valid: --dry-run, --no-setup)" >&2
      exit 64
      ;;
  esac
done

log_dir=${OUT:-$PWD}
mkdir -p "$log_dir"
log=$log_dir/gpu_check.log
exec > >(tee "$log") 2>&1

T_SETUP=${GPU_CHECK_T_SETUP:-180}
T_SMI=${GPU_CHECK_T_SMI:-15}
T_PYTEST=${GPU_CHECK_T_PYTEST:-110}
T_BENCH=${GPU_CHECK_T_BENCH:-75}
T_LOADER=${GPU_CHECK_T_LOADER:-60}
PY=.venv/bin/python
start=$SECONDS
failures=()

stage() { echo; echo "== $1 ($((SECONDS - start)) s)"; }

# run NAME TIMEOUT COMMAND...: one stage; a failure or timeout is recorded and the check goes on
run() {
  local name=$1 limit=$2
  shift 2
  echo "+ timeout $limit $*"
  local rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && echo "!! $name: timed out after $limit s" || echo "!! $name: exit status $rc"
    failures+=("$name")
  fi
}

stage "setup"
if [ ! -x "$PY" ]; then
  echo "no .venv: bash scripts/setup.sh"
  timeout "$T_SETUP" bash scripts/setup.sh
elif [ "$setup" = 1 ]; then
  timeout "$T_SETUP" bash scripts/setup.sh  # idempotent: with the venv installed it only checks
else
  echo ".venv present, scripts/setup.sh skipped (--no-setup)"
fi
"$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}")'

missing=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
  missing="nvidia-smi not found"
elif ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  missing="torch.cuda.is_available() is False ($("$PY" -c 'import torch; print(torch.__version__)'))"
fi

variants=sum,mmpareto,mgda,upgrad,torchjd_mgda,torchjd_upgrad
bench=(-m framework.bench --models resnet18_av,transformer_xmodal --variants "$variants"
  --batch-size 64 --rounds 5 --warmup 2)
loader=(-m framework.bench.loader --dataset cremad --fixture --workers 0,4,8 --batch 64 --epochs 2)

if [ -n "$missing" ] && [ "$dry_run" = 0 ]; then
  echo "gpu_check: no GPU ($missing); nothing checked (--dry-run runs the command lines on CPU)"
  exit 2
fi
if [ "$dry_run" = 1 ]; then
  if [ -n "$missing" ]; then
    echo "gpu_check: no GPU ($missing): dry run"
  else
    echo "gpu_check: GPU present, dry run only (run without --dry-run for the check)"
  fi
  echo "with a GPU it would run:"
  echo "  nvidia-smi --query-gpu=name,memory.total --format=csv"
  echo "  $PY -m pytest -m cuda -q tests"
  echo "  $PY ${bench[*]} --device cuda --precision 32"
  echo "  $PY ${bench[*]} --device cuda --precision bf16"
  echo "  $PY ${loader[*]}   (when framework.bench.loader exists)"
  stage "pytest -m cuda tests/cuda (they skip without a GPU)"
  run "pytest -m cuda" "$T_PYTEST" "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider tests/cuda
  stage "bench on CPU, tiny case (the command line works)"
  run "bench cpu" "$T_BENCH" "$PY" -m framework.bench --quick --models cnn_cgmnist --variants sum,upgrad,torchjd_upgrad \
    --device cpu --precision bf16
  stage "done"
  if [ "${#failures[@]}" -gt 0 ]; then
    echo "gpu_check: dry run FAILED stages: ${failures[*]} ($((SECONDS - start)) s)"
    exit 1
  fi
  echo "gpu_check: dry run OK ($((SECONDS - start)) s; log $log)"
  exit 0
fi

stage "GPU"
run "nvidia-smi" "$T_SMI" nvidia-smi --query-gpu=name,memory.total --format=csv

stage "pytest -m cuda"
run "pytest -m cuda" "$T_PYTEST" "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider tests

for precision in 32 bf16; do
  stage "step bench on CUDA, batch 64, precision $precision"
  run "bench $precision" "$T_BENCH" "$PY" "${bench[@]}" --device cuda --precision "$precision" \
    --json "$log_dir/gpu_bench_$precision.json"
done

stage "loader bench"
if "$PY" -c "import framework.bench.loader" 2>/dev/null; then
  run "loader bench" "$T_LOADER" "$PY" "${loader[@]}"
else
  echo "framework.bench.loader not present: skipped"
fi

stage "done"
if [ "${#failures[@]}" -gt 0 ]; then
  echo "gpu_check: FAILED stages: ${failures[*]} ($((SECONDS - start)) s; log $log)"
  exit 1
fi
echo "gpu_check: OK ($((SECONDS - start)) s; log $log)"
