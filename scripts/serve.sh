#!/usr/bin/env bash
# Install BrainMIA and start the dashboard with the demo loaded: a synthetic cohort, a model that
# memorised its members, and their assessment queued. Extra arguments go to `brainmia serve`
# (e.g. --port 8080). Open http://127.0.0.1:8000 and sign in with the printed token.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/brainmia serve --demo "$@"
