"""Every benchmark script starts and parses its arguments from any working directory (they
import their shared data paths from benchmarks/_shared.py, found because the script's folder
is on sys.path). The benchmarks themselves need the real model and minutes of quiet machine;
their results are in docs/, not asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_the_shared_data_path_is_beside_the_repo():
    sys.path.insert(0, str(BENCH))
    try:
        import _shared
    finally:
        sys.path.remove(str(BENCH))
    assert _shared.SHARED_DATA == BENCH.parents[1] / "shared" / "data"
    assert (
        _shared.WIKITEXT_TEST.relative_to(_shared.SHARED_DATA).as_posix()
        == "wikitext/wiki.test.raw"
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_parses_help(script, tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.lstrip().startswith("usage:"), out.stdout[:500]
