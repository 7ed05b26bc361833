#!/usr/bin/env bash
# Sets up .venv if needed, then runs ruff and the default (non-slow) test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 MPLBACKEND=Agg
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest -q "$@"
