#!/usr/bin/env bash
# Creates .venv with the CPU build of torch 2.13.0 first (a bare `torch` would pull a multi-GB CUDA build),
# then langmoe in editable mode with its dev extras. Idempotent: a finished set-up is not redone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.langmoe-setup-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.13.0"
  fi
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
