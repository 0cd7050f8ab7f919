#!/usr/bin/env bash
# Install BrainMIA and its dependencies into ./.venv (idempotent).
# Usage: scripts/setup.sh [--test]   (--test also installs the test dependencies, and the services
#        the integration tests start privately: redis-server and PostgreSQL, through apt-get when
#        they are missing and this runs as root, or with passwordless sudo, on Debian/Ubuntu)
# Both modes install Debian's chromium (PDF export of reports; the browser tests drive it too) and
# libseccomp2 (the system-call filter of the sandbox that untrusted models run in).
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

# System packages, each entry: "check command => apt packages". Chromium prints reports to PDF
# (the product needs it); with --test, the services the integration tests run themselves (on free
# ports, in temporary folders; any system instance is left alone).
needs=(
  "ldconfig -p | grep -q 'libseccomp.so.2 ' => libseccomp2"
  "command -v chromium || command -v chromium-browser || command -v google-chrome => chromium"
)
if [ -n "$extras" ]; then
  needs+=(
    "command -v redis-server => redis-server"
    "command -v initdb || ls /usr/lib/postgresql/*/bin/initdb => postgresql"
  )
fi
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
    echo "installing system packages: ${missing[*]}" >&2
    apt_install "${missing[@]}" || echo "warning: apt-get could not install ${missing[*]}" >&2
  else
    echo "warning: BrainMIA needs ${missing[*]} (not installed; run this as root on Debian/Ubuntu" \
      "or install them yourself): without chromium the PDF export answers 503 and the browser tests" \
      "skip; without redis-server/postgresql the integration tests skip (all of them fail when CI is set)" >&2
  fi
fi
