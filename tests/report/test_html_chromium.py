"""report.html renders in a real headless browser: the DOM Chromium builds contains the
tables, the embedded plots, and the hostile variant name as text (never as a script)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from greenllm.report.build import write_report

CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Chromium (chromium / chromium-browser not on PATH; "
    "apt-get install chromium to run this test)",
)


def _chromium(args, tmp_path):
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_html_renders_in_chromium(run_dir, tmp_path):
    write_report(run_dir)
    page = (run_dir / "report.html").as_uri()
    proc = _chromium(["--dump-dom", page], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "<table>" in dom and dom.count("<tr>") >= 4
    assert dom.count('src="data:image/png;base64,') == 2
    assert "<script>" not in dom  # the hostile name stayed text
    assert "&lt;script&gt;alert(" in dom
    shot = tmp_path / "report.png"
    proc = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", page], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
