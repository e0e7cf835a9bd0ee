#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the browser test (tests/integration/test_ui.py), and
# the pinned selenium in .venv. Idempotent: does nothing when all are there.
#   bash scripts/browser_up.sh      # root and apt for the Debian packages chromium, chromium-driver
# Prints as its last line: "browser: chromium <version>, chromedriver <version>, selenium <version>".
# Exit codes: 0 ready, 1 not possible here (no root/apt; the browser test then skips, or fails
# under FRAMEWORK_REQUIRE_BROWSER=1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser_up: chromium/chromedriver missing and apt-get needs root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends chromium chromium-driver >/tmp/browser_up.apt.log 2>&1 \
    || { apt-get update -q >>/tmp/browser_up.apt.log 2>&1 \
         && apt-get install -y -q --no-install-recommends chromium chromium-driver >>/tmp/browser_up.apt.log 2>&1; } \
    || { echo "browser_up: apt-get install chromium chromium-driver failed (see /tmp/browser_up.apt.log)" >&2; exit 1; }
fi
pin=$(grep -E '^selenium==' requirements.lock)
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('selenium') != '${pin#selenium==}')" 2>/dev/null; then
  "$PY" -m pip install -q "$pin" >&2
fi
echo "browser: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | cut -d' ' -f1-2), $pin"
