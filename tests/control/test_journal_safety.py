"""A journal is data, never code; a stale one is restored, never taken as the original."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from greenllm.cli import main
from greenllm.control.base import capped, journal_paths, restore_from_journal
from greenllm.control.jetson import board_identity
from greenllm.control.journal import read_journal
from greenllm.control.nvml import NvmlPowerCap
from greenllm.errors import HardwareControlError
from greenllm.testing import FakeGpu, FakePynvml

UUID = "GPU-00000000-0000-0000-0000-000000000000"


def _nvml():
    nv = FakePynvml(
        gpus=[FakeGpu(power_limit_mw=300_000, min_limit_mw=100_000, max_limit_mw=350_000)]
    )
    return NvmlPowerCap(pynvml=nv), nv


def _entry(**kw):
    e = {
        "version": 2,
        "cap": "nvml",
        "device_id": UUID,
        "params": {"uuid": UUID, "index": 0},
        "original": 300.0,
        "requested": 150.0,
        "pid": 999_999_999,
        "boot_id": "other-boot",
    }
    e.update(kw)
    return e


def _write(path, entry, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry))
    path.chmod(mode)
    return path


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_crafted_journal_naming_a_script_and_a_file_runs_and_deletes_nothing(
    tmp_path, control_dir, capsys
):
    marker, victim = tmp_path / "ran", tmp_path / "precious.txt"
    victim.write_text("keep me")
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    params = {
        "profile": "jetson-orin-nano-8gb",
        "max_clocks": True,
        "nvpmodel": str(evil),
        "jetson_clocks": str(evil),
        "clocks_file": str(victim),
    }
    _write(
        control_dir / f"jetson-{board_identity()}.json",
        _entry(cap="jetson", device_id=board_identity(), params=params, original=0, requested=1),
    )
    # an old (version 1) journal that names programs the same way
    _write(
        control_dir / "jetson-old.json",
        {"cap": "jetson", "original": 0, "params": params, "pid": 1},
    )
    assert main(["control", "restore"]) == 2
    err = _one_line_error(capsys)
    assert "refused" in err and "and 1 more" in err
    assert "never writes" in err or "version" in err
    for p in control_dir.glob("jetson-*.json"):
        with pytest.raises(HardwareControlError, match="refused"):
            read_journal(p)
    assert not marker.exists() and victim.read_text() == "keep me"
    assert len(list(control_dir.glob("jetson-*.json"))) == 2  # left for a human to inspect
    assert main(["control", "show"]) == 0
    assert capsys.readouterr().out.count("REFUSED") == 2


def test_world_writable_journal_is_refused(control_dir, capsys):
    cap, nv = _nvml()
    path, _ = journal_paths(cap)
    _write(path, _entry(original=200.0), mode=0o666)
    with pytest.raises(HardwareControlError, match=r"writable by group or others \(mode 666\)"):
        restore_from_journal(path, {"pynvml": nv})
    with pytest.raises(HardwareControlError, match="writable by group or others"):
        with capped(cap, 150):  # a new holder refuses it too, and changes nothing
            pass
    assert nv.gpus[0].set_limit_calls == []


def test_journal_of_another_user_is_refused(control_dir):
    cap, nv = _nvml()
    path, _ = journal_paths(cap)
    _write(path, _entry())
    if os.getuid() == 0:
        os.chown(path, 4242, -1)
        with pytest.raises(HardwareControlError, match=r"owned by uid 4242, not by you"):
            restore_from_journal(path, {"pynvml": nv})
    else:  # the file is ours: ask as someone else
        with pytest.raises(HardwareControlError, match=r"not by you .* or root"):
            read_journal(path, uid=os.getuid() + 1)
    assert nv.gpus[0].set_limit_calls == []


def test_symlinked_journal_is_refused(tmp_path, control_dir):
    cap, nv = _nvml()
    path, _ = journal_paths(cap)
    target = _write(tmp_path / "elsewhere.json", _entry())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    with pytest.raises(HardwareControlError, match="symbolic link"):
        restore_from_journal(path, {"pynvml": nv})
    assert target.exists()


def test_original_outside_the_device_range_is_refused(control_dir):
    cap, nv = _nvml()
    path, _ = journal_paths(cap)
    _write(path, _entry(original=5000.0))
    with pytest.raises(HardwareControlError, match="outside the allowed range 100-350 W"):
        restore_from_journal(path, {"pynvml": nv})
    assert nv.gpus[0].set_limit_calls == [] and path.exists()


def test_journal_for_another_gpu_is_not_applied_to_this_one(control_dir):
    cap, nv = _nvml()
    path, _ = journal_paths(cap)
    other = "GPU-11111111-0000-0000-0000-000000000000"
    _write(path, _entry(device_id=other, params={"uuid": other, "index": 0}))
    with pytest.raises(HardwareControlError, match="no NVML GPU with UUID"):
        restore_from_journal(path, {"pynvml": nv})
    assert nv.gpus[0].set_limit_calls == []


def test_stale_journal_is_restored_first_never_recorded_as_original(control_dir, caplog):
    """A run killed while capped left the GPU at 150 W: the next holder puts 300 W back,
    says so, and records 300 W (not 150 W) as the original."""
    cap, nv = _nvml()
    nv.gpus[0].power_limit_mw = 150_000  # left capped by the dead run
    path, _ = journal_paths(cap)
    _write(path, _entry(original=300.0, requested=150.0, boot_id="boot-before-reboot"))
    with pytest.warns(
        RuntimeWarning,
        match=r"left at 150\.0 .*before the last reboot\): "
        r"restored its original 300\.0 first",
    ):
        with capped(cap, 200, boot_id="this-boot") as original:
            assert original == 300.0
            assert json.loads(path.read_text())["original"] == 300.0
            assert nv.gpus[0].power_limit_mw == 200_000
    assert nv.gpus[0].set_limit_calls == [300_000, 200_000, 300_000]
    assert not path.exists()


def test_sigkill_nvml_holder_then_real_cli_restore(tmp_path, control_dir, children, file_nvml):
    """Cross-process NVML: the fake pynvml module keeps the limit in a file."""
    _, state = file_nvml.make(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    child = (
        "import time\nfrom pathlib import Path\nfrom greenllm.control.base import capped\n"
        "from greenllm.control.nvml import NvmlPowerCap\n"
        f"with capped(NvmlPowerCap(), 120):\n    Path({str(tmp_path / 'ready')!r})"
        ".write_text('x')\n    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child], env=env)
    children.append(proc)
    import time

    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    assert file_nvml.limit(state) == 120_000
    proc.kill()
    proc.wait(timeout=60)
    journal = control_dir / f"nvml-{file_nvml.uuid}.json"
    assert journal.exists()
    out = subprocess.run(
        [sys.executable, "-m", "greenllm", "control", "restore"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"restored nvml {file_nvml.uuid} to 300.0" in out.stdout
    assert file_nvml.limit(state) == 300_000 and not journal.exists()
