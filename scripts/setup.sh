#!/usr/bin/env bash
# Install BrainMIA and its dependencies into ./.venv (idempotent).
# Usage: scripts/setup.sh [--test]   (--test also installs the test dependencies, and the services
#        the integration tests start privately: redis-server and PostgreSQL, through apt-get when
#        they are missing and this runs as root, or with passwordless sudo, on Debian/Ubuntu)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

# apt-get as root, or through passwordless sudo (CI runners)
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
fi
can_apt() { command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; }
apt_updated=""
apt_install() {  # apt_install PACKAGE...: quiet, non-interactive, one `apt-get update` per run
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq >/dev/null
    apt_updated=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Debian/Ubuntu ship venv separately
    if can_apt; then
      apt_install python3-venv python3-pip
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

if [ -n "$extras" ]; then
  # Services the integration tests run themselves (on free ports, in temporary folders; any
  # system instance is left alone). Each entry: "check command => apt packages".
  needs=(
    "command -v redis-server => redis-server"
    "command -v initdb || ls /usr/lib/postgresql/*/bin/initdb => postgresql"
  )
  missing=()
  for need in "${needs[@]}"; do
    check=${need%% => *}
    packages=${need#* => }
    if ! bash -c "$check" >/dev/null 2>&1; then
      read -r -a pkgs <<<"$packages"
      missing+=("${pkgs[@]}")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if can_apt; then
      echo "installing for the integration tests: ${missing[*]}" >&2
      apt_install "${missing[@]}"
    else
      echo "warning: the integration tests need ${missing[*]} (not installed; run this as root on" \
        "Debian/Ubuntu or install them yourself); without them those tests skip, or fail when CI is set" >&2
    fi
  fi
fi
