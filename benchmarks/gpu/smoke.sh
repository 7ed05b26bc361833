#!/usr/bin/env bash
# GPU smoke run on one H100/H200 in <= 5 minutes (see benchmarks/gpu/smoke.py): the 362M real-shaped model through
# upcycle -> probe -> DMoE stages -> expand -> eval -> export in bf16, plus the MoE block benchmark on CUDA;
# tokens/s, MFU and peak memory per step in OUT/results.{json,md} (and OUT/moe_block.md, OUT/logs/).
#   bash benchmarks/gpu/smoke.sh runs/gpu-smoke
#   bash benchmarks/gpu/smoke.sh /tmp/smoke --cpu-dry-run      # CPU, tiny shape: the logic only (CI)
# LANGMOE_GPU_TINY=1 also selects the dry run. PYTHON picks the interpreter (default: python).
set -euo pipefail
OUT="${1:?usage: smoke.sh OUT [--cpu-dry-run]}"
shift
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 MPLBACKEND=Agg
mkdir -p "$OUT"
start=$(date +%s)
"${PYTHON:-python}" "$HERE/smoke.py" --out "$OUT" "$@" 2> >(tee "$OUT/log.txt" >&2)
echo "smoke: done in $(( $(date +%s) - start )) s; results in $OUT/results.md"
