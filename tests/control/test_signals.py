"""Real signals sent to a subprocess that holds a power mode through capped().

The lowest boundary is faked: ``nvpmodel`` is an executable under tmp_path that keeps the
mode in a JSON file, so the child, the test and ``greenllm control restore`` all see it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from greenllm.cli import main
from greenllm.testing import default_signal_dispositions


CHILD = r'''
import sys, time
from pathlib import Path
from greenllm.control.base import capped
from greenllm.control.jetson import JetsonPowerMode

nvpmodel, journal, ready = sys.argv[1:4]
cap = JetsonPowerMode("jetson-orin-nano-8gb", nvpmodel=nvpmodel)
try:
    with capped(cap, "7W", journal=journal):
        Path(ready).write_text("held")
        while True:
            time.sleep(0.02)
except KeyboardInterrupt:
    sys.exit(130)
'''


@pytest.fixture
def children():
    """Child processes of a test; any still running at teardown are killed (no orphans)."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def _hold(tmp_path, nvpmodel_script, mode_of, children):
    exe, state = nvpmodel_script(tmp_path, mode=0)
    journal, ready = tmp_path / "journal.json", tmp_path / "ready"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(exe), str(journal), str(ready)],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signal_dispositions)
    children.append(proc)
    deadline = time.monotonic() + 60
    while not ready.exists():  # wait for the child to hold the cap (process sync, not timing)
        if proc.poll() is not None:
            pytest.fail(f"child exited early: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("child never took the cap")
        time.sleep(0.02)
    assert mode_of(state) == 1 and journal.exists()
    return proc, state, journal, exe


def test_sigint_restores_original(tmp_path, nvpmodel_script, mode_of, children):
    proc, state, journal, _ = _hold(tmp_path, nvpmodel_script, mode_of, children)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130   # previous handler chained: KeyboardInterrupt
    assert mode_of(state) == 0
    assert not journal.exists()


def test_sigterm_restores_then_dies_with_sigterm(tmp_path, nvpmodel_script, mode_of, children):
    proc, state, journal, _ = _hold(tmp_path, nvpmodel_script, mode_of, children)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM   # re-delivered with the default action
    assert mode_of(state) == 0
    assert not journal.exists()


def test_sigkill_then_control_restore_uses_journal(tmp_path, nvpmodel_script, mode_of, children, capsys):
    proc, state, journal, _ = _hold(tmp_path, nvpmodel_script, mode_of, children)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert mode_of(state) == 1 and journal.exists()     # nothing could restore it
    assert main(["control", "restore", "--journal", str(journal)]) == 0
    assert mode_of(state) == 0
    assert not journal.exists()
    assert "restored jetson to 0" in capsys.readouterr().out


def test_restore_permission_denied_is_one_line(tmp_path, nvpmodel_script, mode_of, children, capsys):
    proc, state, journal, exe = _hold(tmp_path, nvpmodel_script, mode_of, children)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    import json
    st = json.loads(state.read_text())
    st["root"] = False
    state.write_text(json.dumps(st))
    assert main(["control", "restore", "--journal", str(journal)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs root" in err and "sudo" in err
    assert journal.exists()     # still there for a retry with sudo
