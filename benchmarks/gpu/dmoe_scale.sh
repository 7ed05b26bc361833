#!/usr/bin/env bash
# DMoE vs dense CPT on one H100/H200 in ~8 minutes (see benchmarks/gpu/dmoe_scale.py): pretrain a ~35M Llama on
# the whole built-in corpus, then DMoE and CPT at 1x/2x/4x epochs of 9 languages, bf16; writes OUT/results.{json,md}.
#   bash benchmarks/gpu/dmoe_scale.sh runs/gpu-scale
#   LANGMOE_GPU_TINY=1 bash benchmarks/gpu/dmoe_scale.sh /tmp/gpu-tiny     # CPU, seconds: the logic only
# Rerunning with the same OUT resumes finished stages. PYTHON picks the interpreter (default: python).
set -euo pipefail
OUT="${1:?usage: dmoe_scale.sh OUT}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 MPLBACKEND=Agg
mkdir -p "$OUT"
start=$(date +%s)
"${PYTHON:-python}" "$HERE/dmoe_scale.py" --out "$OUT" 2> >(tee "$OUT/log.txt" >&2)
echo "dmoe_scale: done in $(( $(date +%s) - start )) s; results in $OUT/results.md"
