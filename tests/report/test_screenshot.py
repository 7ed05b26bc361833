"""The report renders in headless Chromium at desktop width (skipped where chromium is not installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib.image import imread
from test_html import full_run

from langmoe.report.html import build_report

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "report_screenshot.sh"


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                    reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_at_desktop_width(tmp_path):
    full_run(tmp_path)
    html = build_report(tmp_path)
    png = tmp_path / "shot.png"
    res = subprocess.run(["bash", str(SCRIPT), str(html), str(png), "1400", "3000"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    img = imread(png)
    assert img.shape[1] == 1400 and img.shape[0] == 3000
    assert img.std() > 0.05  # a rendered page, not a blank one
