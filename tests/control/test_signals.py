"""Real signals sent to a subprocess that holds a power mode through capped(), and a second
process that wants the same device.

The lowest boundary is faked: ``nvpmodel`` is an executable under tmp_path that keeps the
mode in a JSON file, so the child, the test and ``greenllm control restore`` all see it. The
journal and the device lock live in the injected control directory ($GREENLLM_CONTROL_DIR).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from greenllm.cli import main
from greenllm.control.base import capped
from greenllm.control.jetson import JetsonPowerMode, board_identity
from greenllm.errors import HardwareControlError
from greenllm.testing import default_signal_dispositions

CHILD = r"""
import sys, time
from pathlib import Path
from greenllm.control.base import capped
from greenllm.control.jetson import JetsonPowerMode

nvpmodel, ready = sys.argv[1:3]
cap = JetsonPowerMode("jetson-orin-nano-8gb", nvpmodel=nvpmodel)
try:
    with capped(cap, "7W"):
        Path(ready).write_text("held")
        while True:
            time.sleep(0.02)
except KeyboardInterrupt:
    sys.exit(130)
"""


def _journal(control_dir):
    return control_dir / f"jetson-{board_identity()}.json"


def _hold(tmp_path, nvpmodel_script, mode_of, children, control_dir):
    exe, state = nvpmodel_script(tmp_path, mode=0)
    ready = tmp_path / "ready"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(exe), str(ready)],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signal_dispositions,
    )
    children.append(proc)
    deadline = time.monotonic() + 60
    while not ready.exists():  # wait for the child to hold the cap (process sync, not timing)
        if proc.poll() is not None:
            pytest.fail(f"child exited early: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("child never took the cap")
        time.sleep(0.02)
    journal = _journal(control_dir)
    assert mode_of(state) == 1 and journal.exists()
    return proc, state, journal, exe


def _cli(args, tmp_path, **env):
    """The real CLI in a subprocess, with the fake nvpmodel first on PATH."""
    full = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}", **env}
    return subprocess.run(
        [sys.executable, "-m", "greenllm", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sigint_restores_original(tmp_path, nvpmodel_script, mode_of, children, control_dir):
    proc, state, journal, _ = _hold(tmp_path, nvpmodel_script, mode_of, children, control_dir)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130  # previous handler chained: KeyboardInterrupt
    assert mode_of(state) == 0
    assert not journal.exists()


def test_sigterm_restores_then_dies_with_sigterm(
    tmp_path, nvpmodel_script, mode_of, children, control_dir
):
    proc, state, journal, _ = _hold(tmp_path, nvpmodel_script, mode_of, children, control_dir)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # re-delivered with the default action
    assert mode_of(state) == 0
    assert not journal.exists()


def test_sigkill_then_real_control_restore_cli(
    tmp_path, nvpmodel_script, mode_of, children, control_dir
):
    proc, state, journal, _ = _hold(tmp_path, nvpmodel_script, mode_of, children, control_dir)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert mode_of(state) == 1 and journal.exists()  # nothing could restore it
    shown = _cli(["control", "show"], tmp_path)
    assert shown.returncode == 0 and f"PENDING journal {journal}" in shown.stdout
    assert f"pid {proc.pid} (gone)" in shown.stdout
    done = _cli(["control", "restore"], tmp_path)  # no --journal: found in the control dir
    assert done.returncode == 0, done.stderr
    assert mode_of(state) == 0
    assert not journal.exists()
    assert "restored jetson" in done.stdout and "to 0" in done.stdout
    again = _cli(["control", "restore"], tmp_path)
    assert again.returncode == 0 and "nothing to restore" in again.stdout


def test_restore_permission_denied_is_one_line(
    tmp_path, nvpmodel_script, mode_of, children, control_dir, capsys, monkeypatch
):
    proc, state, journal, exe = _hold(tmp_path, nvpmodel_script, mode_of, children, control_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    st = json.loads(state.read_text())
    st["root"] = False
    state.write_text(json.dumps(st))
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert main(["control", "restore"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs root" in err and "sudo" in err
    assert journal.exists()  # still there for a retry with sudo


def test_second_holder_fails_at_once_naming_the_holder(
    tmp_path, nvpmodel_script, mode_of, children, control_dir
):
    proc, state, journal, exe = _hold(tmp_path, nvpmodel_script, mode_of, children, control_dir)
    cap = JetsonPowerMode("jetson-orin-nano-8gb", nvpmodel=str(exe))
    t0 = time.monotonic()
    with pytest.raises(HardwareControlError, match=rf"in use by pid {proc.pid}\b"):
        with capped(cap, 0):
            pytest.fail("two holders of one device")
    assert time.monotonic() - t0 < 5
    assert mode_of(state) == 1 and json.loads(journal.read_text())["original"] == 0
    # `control restore` leaves a live holder's journal alone: it is not stale
    restore = _cli(["control", "restore"], tmp_path)
    assert restore.returncode == 2 and f"in use by pid {proc.pid}" in restore.stderr
    assert "Traceback" not in restore.stderr and mode_of(state) == 1
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert mode_of(state) == 0


def test_second_holder_waits_then_records_the_true_original(
    tmp_path, nvpmodel_script, mode_of, children, control_dir
):
    proc, state, journal, exe = _hold(tmp_path, nvpmodel_script, mode_of, children, control_dir)
    cap = JetsonPowerMode("jetson-orin-nano-8gb", nvpmodel=str(exe))
    killer = subprocess.Popen(
        [sys.executable, "-c", f"import os,time; time.sleep(0.5); os.kill({proc.pid}, 9)"]
    )
    children.append(killer)
    with pytest.warns(
        RuntimeWarning,
        match=rf"pid {proc.pid} that wrote it is no longer "
        r"running\): restored its original 0 first",
    ):
        with capped(cap, "7W", wait_s=60) as original:
            assert original == 0  # not the dead run's 7 W
            assert mode_of(state) == 1
    assert mode_of(state) == 0 and not journal.exists()
