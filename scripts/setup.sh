#!/usr/bin/env bash
# Create .venv with the pinned dependencies, install the package, and cache the real data.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # pip byte-compiles on one core; compileall on every core, after (about 20 s sooner on 2 cores).
  # A few files shipped for other Python versions do not compile; pip skips them the same way.
  .venv/bin/python -m pip install -q --no-compile -r requirements.lock
  .venv/bin/python -m compileall -q -j 0 .venv/lib/python3*/site-packages >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q --no-deps -e '.[lightning,docs,dev]'  # the extras' pins are in requirements.lock
  .venv/bin/python -m pip check
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# Fashion-MNIST (optional; the multi_fashion* datasets): Debian's dataset-fashion-mnist, where apt is usable
if [ ! -f data/fashion_mnist/items.npz ] && [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 \
    || echo "note: apt-get install dataset-fashion-mnist failed; the multi_fashion* datasets need it"
fi
.venv/bin/python -m framework.data.prepare
