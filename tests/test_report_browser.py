"""The report renders in a real browser: headless Chromium screenshot (skipped when chromium is absent)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sirtjax.report import FigurePng, Section, dose_table, dvh_png, render_report, write_report

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.sh"
HEADER_RGB = (0x0B, 0x3D, 0x5C)  # the header bar colour of the report's CSS


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_screenshot_in_headless_chromium(tmp_path):
    edges = np.linspace(0, 100, 21)
    cdvh = np.clip(1.2 - np.linspace(0, 1, 20), 0, 1)[None, :]
    sections = [Section("Doses", (dose_table([{"name": "liver", "volume_ml": 1500.0, "mean_gy": 50.0}]),
                                  FigurePng(dvh_png({"plan": (edges, cdvh, ["liver"])}), "DVH")))]
    report = write_report(render_report("Browser check", sections, version="0"), tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    res = subprocess.run(["bash", str(SCRIPT), str(report), str(shot), "800,900"], capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (900, 800)
    # The header bar is drawn in its CSS colour (exact: flat fill), and the embedded PNG figure
    # decoded: the DVH's light grid and dark curve give many distinct grey levels below the table.
    assert tuple(img[10, 400]) == HEADER_RGB
    assert len(np.unique(img[300:, :, 0])) > 20


def test_screenshot_script_refuses_missing_report(tmp_path):
    res = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "none.html"), str(tmp_path / "x.png")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no such file" in res.stderr
