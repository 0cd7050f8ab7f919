#!/usr/bin/env bash
# Install BrainMIA and its dependencies into ./.venv (idempotent).
# Usage: scripts/setup.sh [--test]   (--test also installs the test dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Debian/Ubuntu ship venv separately
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null
      rm -rf .venv && "$PYTHON" -m venv .venv
    else
      echo "error: '$PYTHON -m venv' failed; install the python3-venv package" >&2
      exit 1
    fi
  fi
fi

# PyTorch first, pinned: an unpinned requirement would pull the newest build and its CUDA stack.
if ! .venv/bin/python -c "import torch, sys; v = torch.__version__.split('+')[0].split('.'); sys.exit(0 if (int(v[0]), int(v[1])) >= (2, 3) and (int(v[0]), int(v[1])) < (2, 14) else 1)" 2>/dev/null; then
  .venv/bin/pip install --quiet "torch==2.13.0"
fi
.venv/bin/pip install --quiet -e ".${extras}"
