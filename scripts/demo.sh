#!/usr/bin/env bash
# Install BrainMIA and run the demo: a synthetic cohort, a model that memorised its members, a full
# assessment. Extra arguments go to `brainmia demo` (e.g. --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/brainmia demo "$@"
