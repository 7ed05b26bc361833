#!/usr/bin/env bash
# Rebuild the shipped corpus (src/langmoe/data/builtin) from Debian packages.
# Needs: mandoc and dpkg-deb (apt-get install mandoc), apt sources for Debian bookworm.
# The .deb files are downloaded (never installed) into $CACHE; same package versions => bit-identical output.
set -euo pipefail
CACHE="${1:-${LANGMOE_DEB_CACHE:-$HOME/.cache/langmoe-debs}}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
command -v mandoc >/dev/null || { echo "mandoc is missing: apt-get install mandoc" >&2; exit 2; }
mkdir -p "$CACHE"
cd "$CACHE"
missing=()
for pkg in $(python "$ROOT/tools/build_builtin.py" --list-packages); do
  compgen -G "${pkg}_*.deb" >/dev/null || missing+=("$pkg")
done
if ((${#missing[@]})); then apt-get download "${missing[@]}"; fi
cd "$ROOT"
# Keep the previous splits: the shipped bases were trained on release 1.0's train split, which never becomes
# valid/test (tools/builtin_v1_train_ids.txt.gz); the shipped corpus keeps later documents where they are.
python "$ROOT/tools/build_builtin.py" --cache "$CACHE" --out src/langmoe/data/builtin \
  --keep-train-of src/langmoe/data/builtin --keep-train-of tools/builtin_v1_train_ids.txt.gz
