"""Locked GPU clocks with capped()'s guarantees: the NVML calls and limits (fake pynvml at the
lowest boundary), restore on return / exception / SIGKILL (via the journal and `greenllm
control restore`), and Jetson fixed clocks on a fake devfreq tree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from greenllm.cli import main
from greenllm.control.base import capped, restore_stale
from greenllm.control.clocks import JetsonGpuClocks, NvmlLockedClocks, parse_clocks
from greenllm.errors import HardwareControlError
from greenllm.testing import FakeGpu, FakePynvml


def test_parse_and_format():
    assert parse_clocks("1410") == {"gpu": (1410, 1410)}
    assert parse_clocks("gpu=810-1410,mem=5001") == {"gpu": (810, 1410), "mem": (5001, 5001)}
    assert parse_clocks("default") == {}
    for bad in ("fast", "gpu=1410-810", "gpu=1,gpu=2", "core=100"):
        with pytest.raises(HardwareControlError):
            parse_clocks(bad)


def test_nvml_lock_inside_reset_after_and_on_exception():
    nv = FakePynvml(gpus=[FakeGpu()])
    cap = NvmlLockedClocks(pynvml=nv)
    g = nv.gpus[0]
    assert cap.allowed() == {"gpu": (210, 1980), "mem": (405, 5001)}
    with capped(cap, "gpu=1410,mem=5001") as original:
        assert original == "default"
        assert g.locked_gpu_mhz == (1410, 1410) and g.locked_mem_mhz == (5001, 5001)
    assert g.locked_gpu_mhz is None and g.locked_mem_mhz is None
    assert g.clock_calls == [
        ("gpu", 1410, 1410),
        ("mem", 5001, 5001),
        ("gpu-reset",),
        ("mem-reset",),
    ]
    with pytest.raises(RuntimeError):
        with capped(cap, "810-1410"):
            assert g.locked_gpu_mhz == (810, 1410)
            raise RuntimeError("boom")
    assert g.locked_gpu_mhz is None


def test_out_of_range_or_no_permission_changes_nothing(control_dir):
    nv = FakePynvml(gpus=[FakeGpu()])
    cap = NvmlLockedClocks(pynvml=nv)
    with pytest.raises(HardwareControlError, match="outside the supported 210-1980 MHz"):
        with capped(cap, "2500"):
            pass
    assert nv.gpus[0].clock_calls == [] and not list(control_dir.glob("*.json"))
    nv.gpus[0].can_set_clocks = False
    with pytest.raises(HardwareControlError, match="needs root"):
        with capped(cap, "1410"):
            pass
    assert not list(control_dir.glob("*.json"))
    old = FakePynvml(gpus=[FakeGpu(clocks_supported=False)])
    with pytest.raises(HardwareControlError, match="Volta or newer"):
        NvmlLockedClocks(pynvml=old).check("1410")


_FILE_PYNVML = r"""
import json
from pathlib import Path
from greenllm.testing import FakeGpu, FakePynvml

_STATE = Path({state!r})


def _st():
    return json.loads(_STATE.read_text())


def _put(st):
    tmp = _STATE.with_name(_STATE.name + ".tmp")
    tmp.write_text(json.dumps(st))
    tmp.replace(_STATE)


class _Clocks(FakePynvml):
    def nvmlDeviceSetGpuLockedClocks(self, h, lo, hi):
        super().nvmlDeviceSetGpuLockedClocks(h, lo, hi)
        st = _st(); st["gpu"] = [lo, hi]; _put(st)

    def nvmlDeviceResetGpuLockedClocks(self, h):
        super().nvmlDeviceResetGpuLockedClocks(h)
        st = _st(); st["gpu"] = None; st["resets"] += 1; _put(st)


_impl = _Clocks(gpus=[FakeGpu(uuid="GPU-clocks-test")])


def __getattr__(name):
    return getattr(_impl, name)
"""

HOLD = r"""
import sys, time
from pathlib import Path
from greenllm.control.base import capped
from greenllm.control.clocks import NvmlLockedClocks
with capped(NvmlLockedClocks(), "1110"):
    Path(sys.argv[1]).write_text("locked")
    time.sleep(60)
"""


def test_sigkill_leaves_a_journal_that_restore_resets(tmp_path, control_dir, children, monkeypatch):
    state = tmp_path / "clocks.json"
    state.write_text(json.dumps({"gpu": None, "resets": 0}))
    (tmp_path / "pynvml.py").write_text(_FILE_PYNVML.format(state=str(state)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    flag = tmp_path / "flag"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(flag)], env=env)
    children.append(p)
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.01)
    assert json.loads(state.read_text())["gpu"] == [1110, 1110]
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    (journal,) = control_dir.glob("nvml-clocks-*.json")
    entry = json.loads(journal.read_text())
    assert entry["original"] == "default" and entry["requested"] == "gpu=1110"
    # the restore command sees the same file-backed device
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("pynvml", None)
    import pynvml  # noqa: F401  (the fake above)

    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    assert main(["control", "restore"]) == 0
    st = json.loads(state.read_text())
    assert st["gpu"] is None and st["resets"] == 1
    assert not list(control_dir.glob("*.json"))


def _devfreq(tmp_path, lo=306_000_000, hi=918_000_000):
    d = tmp_path / "sys" / "class" / "devfreq" / "17000000.ga10b"
    d.mkdir(parents=True)
    freqs = [306_000_000, 408_000_000, 510_000_000, 624_750_000, 918_000_000]
    (d / "available_frequencies").write_text(" ".join(map(str, freqs)) + "\n")
    (d / "min_freq").write_text(f"{lo}\n")
    (d / "max_freq").write_text(f"{hi}\n")
    return tmp_path / "sys", d


def test_jetson_fixed_clocks_and_restore_after_a_crash(tmp_path, control_dir):
    root, d = _devfreq(tmp_path)
    cap = JetsonGpuClocks(sysfs_root=root, board_id="serial-test")
    assert cap.get() == "gpu=306-918" and cap.allowed() == [306, 408, 510, 624, 918]
    with capped(cap, "624") as original:
        assert original == "gpu=306-918"
        assert d.joinpath("min_freq").read_text().strip() == "624000000"
        assert d.joinpath("max_freq").read_text().strip() == "624000000"
    assert cap.get() == "gpu=306-918"
    with pytest.raises(HardwareControlError, match="not an available frequency"):
        cap.check("700")
    # a crash: the journal stays (simulated by setting without capped), restore_stale puts back
    from greenllm.control import journal as J
    from greenllm.control.base import journal_paths

    path, _ = journal_paths(cap, control_dir)
    J.write_journal(
        path,
        {
            "version": J.JOURNAL_VERSION,
            "cap": cap.name,
            "device_id": cap.device_id(),
            "params": cap.journal_params(),
            "original": "gpu=306-918",
            "requested": "gpu=408",
            "pid": 999999,
            "boot_id": "x",
        },
    )
    cap.set("408")
    assert cap.get() == "gpu=408-408"
    done, problems = restore_stale(
        [control_dir], {"sysfs_root": str(root), "board_id": "serial-test"}
    )
    assert len(done) == 1 and not problems and cap.get() == "gpu=306-918"


def test_no_jetson_devfreq_is_a_clear_error(tmp_path):
    with pytest.raises(HardwareControlError, match="need a Jetson board"):
        JetsonGpuClocks(sysfs_root=tmp_path)


def test_train_search_profiles_each_clock_setting_under_its_lock(control_dir):
    from greenllm.control.select import select_clocks
    from greenllm.training import Profile, candidates_from, power_setting, search

    nv = FakePynvml(gpus=[FakeGpu()])
    g = nv.gpus[0]
    cap, values = select_clocks(
        ["1980", "1410", "1110"],
        profile="nvidia-gpu",
        factory=lambda kind, prof: NvmlLockedClocks(pynvml=nv),
    )
    assert values == ["gpu=1980", "gpu=1410", "gpu=1110"]
    cands = candidates_from([4], clocks=values)
    assert [c.label() for c in cands] == [
        "bs=4, as is, clocks gpu=1980",
        "bs=4, as is, clocks gpu=1410",
        "bs=4, as is, clocks gpu=1110",
    ]
    seen = []

    def profile(c):
        # a "V100 max-efficiency" shape: power falls faster than speed as clocks drop
        with power_setting(None, c, control_dir, clock_cap=cap):
            seen.append(g.locked_gpu_mhz)
            mhz = g.locked_gpu_mhz[0] if g.locked_gpu_mhz else 1980
        dur = 1980 / mhz
        return Profile(c, samples=4, duration_s=dur, energy_j=300.0 * (mhz / 1980) ** 2 * dur)

    res = search(cands, profile, eta=1.0, default=cands[0])
    assert seen == [(1980, 1980), (1410, 1410), (1110, 1110)]
    assert res.choice.clocks == "gpu=1110" and res.projected_energy_saving > 0.3
    assert g.locked_gpu_mhz is None and not list(control_dir.glob("*.json"))
    with pytest.raises(HardwareControlError, match="no clock control"):
        with power_setting(None, cands[0], control_dir):
            pass


def test_cli_clocks_syntax_is_checked_before_any_model_loads(capsys):
    assert main(["bench", "no/such-model", "--clocks", "fast"]) == 2
    assert "MHz" in capsys.readouterr().err
    from greenllm.cli.train import split_clocks

    assert split_clocks("1980,1410") == ["1980", "1410"]
    assert split_clocks("gpu=1410,mem=5001;gpu=1110") == ["gpu=1410,mem=5001", "gpu=1110"]


def test_the_fake_clock_calls_are_real_nvml_calls():
    import inspect

    real = pytest.importorskip("pynvml")
    for name in (
        "nvmlDeviceGetSupportedMemoryClocks",
        "nvmlDeviceGetSupportedGraphicsClocks",
        "nvmlDeviceSetGpuLockedClocks",
        "nvmlDeviceResetGpuLockedClocks",
        "nvmlDeviceSetMemoryLockedClocks",
        "nvmlDeviceResetMemoryLockedClocks",
    ):
        fake_params = list(inspect.signature(getattr(FakePynvml(), name)).parameters)
        real_params = list(inspect.signature(getattr(real, name)).parameters)
        assert len(fake_params) == len(real_params), name


def test_runner_locks_a_train_steps_clocks_and_restores_them(tmp_path, control_dir, monkeypatch):
    """A recipe step with ``clocks`` runs under capped(): locked during the step, reset after."""
    import yaml

    import greenllm.control.select as select
    from greenllm.runner import run
    from greenllm.testing import tiny_model_and_tokenizer

    nv = FakePynvml(gpus=[FakeGpu()])
    nv.nvmlInit()
    cap = NvmlLockedClocks(pynvml=nv)
    monkeypatch.setattr(select, "select_clocks", lambda clocks, **kw: (cap, cap.check(clocks)))
    model, tok = tiny_model_and_tokenizer(0)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "t.txt").write_text("A tiny text to train on for a step or two. " * 20)
    recipe = {
        "schema_version": 1,
        "name": "clocks",
        "model": {"id": str(tmp_path / "m")},
        "calibration": str(tmp_path / "t.txt"),
        "variants": {
            "ft": [{"train": {"max_steps": 1, "batch_size": 2, "seq_len": 16, "clocks": "1410"}}]
        },
        "evals": [],
        "workload": {"prompts": ["Hi"], "max_new_tokens": 2, "warmup": 0, "repeats": 1},
        "meters": ["estimate"],
        "measure": {"hz": 100, "on_disturbance": "flag"},
        "carbon": {"intensity_g_per_kwh": 100.0},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert run(tmp_path / "r.yaml", tmp_path / "out", progress=False).status == "finished"
    g = nv.gpus[0]
    assert g.clock_calls[0] == ("gpu", 1410, 1410)  # locked for the step
    assert g.clock_calls[-2:] == [("gpu-reset",), ("mem-reset",)]  # reset after it
    assert g.locked_gpu_mhz is None


def test_runner_refuses_bad_step_clocks_before_any_work(tmp_path):
    from greenllm.errors import ConfigError
    from greenllm.runner import run

    recipe = {
        "schema_version": 1,
        "name": "clocks",
        "model": {"id": "some/model"},
        "calibration": "builtin:wiki-sample",
        "variants": {"ft": [{"train": {"clocks": "fast"}}]},
        "workload": {},
        "carbon": {"region": "KOR"},
    }
    with pytest.raises(ConfigError, match=r"variants.ft\[0\] \(train\).clocks: clocks gpu 'fast'"):
        run(recipe, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "greenllm.sqlite").exists()
