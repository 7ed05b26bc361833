#!/usr/bin/env bash
# Sets up .venv if needed, then runs the built-in demo (extra args go to `langmoe demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 MPLBACKEND=Agg
exec .venv/bin/langmoe demo "$@"
