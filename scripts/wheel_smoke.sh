#!/usr/bin/env bash
# Wheel smoke test: build the wheel from the tracked files, check what it ships, install it into a fresh venv
# (CPU torch 2.13.0 first, no extras) and run a few commands from outside the repository.
# Usage: bash scripts/wheel_smoke.sh   (PYTHON=python3.x to choose the interpreter; KEEP=1 keeps the temp folder)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-python3}
WORK="$(mktemp -d "${TMPDIR:-/tmp}/langmoe-wheel.XXXXXX")"
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$WORK"' EXIT; fi
step() { printf '\n== wheel smoke: %s (%ds)\n' "$*" "$SECONDS"; }
# --no-compile: byte-compiling torch's thousands of files is most of an install's time; the smoke runs each once
pipq() { "$V/python" -m pip "$@" -q --no-compile 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }; }

step "copy the tracked files to $WORK/src"
mkdir -p "$WORK/src"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' \
    | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
else
  cp -r "$ROOT/." "$WORK/src"
fi

step "fresh venv, CPU torch 2.13.0"
"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin"
pipq install "torch==2.13.0"

step "build the wheel"
"$V/python" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/langmoe-*.whl)"
ls -l "$WHEEL"

step "check the wheel's contents and metadata"
"$V/python" - "$WHEEL" <<'EOF'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
need = ["langmoe/recipes/dmoe.yaml", "langmoe/recipes/demo.yaml", "langmoe/data/iso/iso639-3.tsv",
        "langmoe/data/iso/iso15924.tsv", "langmoe/data/builtin/SOURCES.md", "langmoe/data/builtin/en.jsonl.gz",
        "langmoe/models/builtin/tiny-base/model.safetensors", "langmoe/recipes/moe_lpr.yaml",
        "langmoe/recipes/layermoe.yaml", "langmoe/models/builtin/tiny-base-g0/model.safetensors",
        "langmoe/models/builtin/tiny-moe/model.safetensors"]
missing = [n for n in need if n not in names]
lic = [n for n in names if ".dist-info/licenses/" in n]
meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
problems = []
if missing:
    problems.append(f"missing from the wheel: {missing}")
for f in ("LICENSE", "NOTICE", "LICENSES/GPL-3.0.txt", "LICENSES/LGPL-2.1.txt", "SOURCES.md"):
    if not any(n.endswith(f) for n in lic):
        problems.append(f"no {f} in .dist-info/licenses")
if "License-Expression: Apache-2.0 AND" not in meta:
    problems.append("METADATA has no License-Expression")
if "](docs/" in meta:
    problems.append("long description has relative docs/ links")
for extra in ("parquet", "hf-datasets", "tensorboard", "scipy", "all"):
    if f"Provides-Extra: {extra}" not in meta:
        problems.append(f"no extra {extra}")
import os
size_mb = os.path.getsize(sys.argv[1]) / 2**20
if size_mb > 40:  # issue 12: the three shipped bases, the corpus and the code within a reasonable download
    problems.append(f"the wheel is {size_mb:.1f} MB, over the 40 MB budget")
if problems:
    sys.exit("wheel check failed: " + "; ".join(problems))
print(f"ok: {len(names)} files, {size_mb:.1f} MB, {len(lic)} licence files, License-Expression present")
EOF

step "install the wheel (no extras)"
pipq install "$WHEEL"
"$V/python" - <<'EOF'
import importlib.util, sys
heavy = [m for m in ("scipy", "pyarrow", "datasets", "tensorboard") if importlib.util.find_spec(m)]
if heavy:
    sys.exit(f"the core install pulled optional packages: {heavy}")
print("ok: no optional heavy package installed")
EOF

step "smoke commands (from $WORK, not the repository)"
cd "$WORK"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
L="$V/langmoe"
"$L" --version
"$L" corpus stats > stats.txt && head -3 stats.txt
"$L" corpus show --lang de -n 1 --max-chars 120
"$L" languages > languages.txt && head -3 languages.txt
"$L" languages ast
"$L" recipes
"$L" recipes --copy dmoe recipes-out && test -s recipes-out/dmoe.yaml
if "$L" recipes --copy dmoe recipes-out 2>err.txt; then echo "overwrote a recipe" >&2; exit 1; fi
grep -q "already exists" err.txt
"$L" eval --model builtin --langs en --max-chars 2000
"$L" generate --model builtin --prompt "The package" --max-new-tokens 8 --greedy
"$L" eval --model builtin-g0 --langs en --max-chars 2000
"$L" eval --model builtin-moe --langs de --max-chars 2000
"$V/python" - <<'EOF'
# the shipped MoE base is a stock Qwen3-MoE folder: plain transformers loads it without importing langmoe
import importlib.util, pathlib, sys
from transformers import AutoModelForCausalLM
folder = pathlib.Path(importlib.util.find_spec("langmoe").origin).parent / "models" / "builtin" / "tiny-moe"
m = AutoModelForCausalLM.from_pretrained(folder)
assert "langmoe" not in sys.modules and type(m).__name__ == "Qwen3MoeForCausalLM", type(m).__name__
print("ok: plain transformers loads the shipped MoE base as", type(m).__name__)
EOF
mkdir -p pq && printf 'PAR1' > pq/de.parquet
if "$L" corpus stats --corpus pq 2>err.txt; then echo "parquet without pyarrow did not fail" >&2; exit 1; fi
cat err.txt
grep -q "langmoe\[parquet\]" err.txt
step "passed"
