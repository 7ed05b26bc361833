#!/usr/bin/env bash
# Screenshot an HTML report in headless Chromium at desktop width, to check it by eye.
#   scripts/report_screenshot.sh RUN_DIR/report.html [OUT.png] [WIDTH] [HEIGHT]
# Needs chromium (Debian/Ubuntu: apt-get install -y chromium). The PNG is cut into OUT-0.png, OUT-1.png, ...
# (1750 px each) when Python with Pillow is available, so each part can be viewed at full resolution.
set -euo pipefail
html=${1:?usage: $0 REPORT.html [OUT.png] [WIDTH] [HEIGHT]}
out=${2:-/tmp/report.png}
width=${3:-1400}
height=${4:-8000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "no chromium found: apt-get install -y chromium (or set PATH)" >&2
  exit 2
fi
[ -f "$html" ] || { echo "$html: no such file" >&2; exit 2; }
url="file://$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$width,$height" \
  --screenshot="$out" "$url" 2>/dev/null
echo "wrote $out"
python3 - "$out" <<'PY' 2>/dev/null || true
import sys
from PIL import Image
path = sys.argv[1]
im = Image.open(path)
w, h = im.size
# drop the blank tail below the page
px = im.convert("L").load()
last = max((y for y in range(0, h, 10) if any(px[x, y] < 250 for x in range(0, w, 20))), default=h)
stem = path[:-4] if path.endswith(".png") else path
for i, top in enumerate(range(0, min(h, last + 40), 1750)):
    im.crop((0, top, w, min(top + 1750, last + 40))).save(f"{stem}-{i}.png")
    print(f"wrote {stem}-{i}.png")
PY
