"""capped(): journal first, original back on return / exception, refusal cases."""

from __future__ import annotations

import json

import pytest

from greenllm.control.base import capped, journal_paths, read_journal, restore_from_journal
from greenllm.control.jetson import JetsonPowerMode
from greenllm.control.nvml import NvmlPowerCap
from greenllm.errors import HardwareControlError
from greenllm.testing import FakeGpu, FakePynvml

UUID = "GPU-00000000-0000-0000-0000-000000000000"


def _nvml_cap(**gpu):
    nv = FakePynvml(
        gpus=[FakeGpu(power_limit_mw=300_000, min_limit_mw=100_000, max_limit_mw=350_000, **gpu)]
    )
    return NvmlPowerCap(pynvml=nv), nv


def test_journal_holds_original_before_change_and_is_removed(control_dir):
    cap, nv = _nvml_cap()
    journal, lock = journal_paths(cap)
    assert journal == control_dir / f"nvml-{UUID}.json" and lock.suffix == ".lock"
    seen = {}
    real_set = nv.nvmlDeviceSetPowerManagementLimit

    def spy(h, mw):  # the journal must already exist, with the original, at the first set
        seen.setdefault("journal", json.loads(journal.read_text()))
        real_set(h, mw)

    nv.nvmlDeviceSetPowerManagementLimit = spy
    with capped(cap, 150, boot_id="boot-A") as original:
        assert original == 300.0
        assert cap.get() == 150.0
        assert read_journal(journal)["requested"] == 150.0
        assert int(lock.read_text()) > 0  # the holder's pid, for a second holder
    j = seen["journal"]
    assert j["original"] == 300.0 and j["cap"] == "nvml" and j["device_id"] == UUID
    assert j["params"] == {"uuid": UUID, "index": 0} and j["boot_id"] == "boot-A"
    assert j["version"] == 2 and isinstance(j["pid"], int)
    assert (journal.stat().st_mode & 0o777) == 0o644 if journal.exists() else True
    assert cap.get() == 300.0
    assert not journal.exists()
    assert nv.gpus[0].set_limit_calls == [150_000, 300_000]


def test_restores_on_exception(fake_tools, control_dir):
    cap = JetsonPowerMode("jetson-orin-nano-8gb", runner=fake_tools, board_id="serial-1")
    with pytest.raises(RuntimeError, match="boom"):
        with capped(cap, "7W"):
            assert fake_tools.mode == 1
            assert (control_dir / "jetson-serial-1.json").exists()
            raise RuntimeError("boom")
    assert fake_tools.mode == 0
    assert not (control_dir / "jetson-serial-1.json").exists()


def test_out_of_range_touches_nothing(control_dir):
    cap, nv = _nvml_cap()
    with pytest.raises(HardwareControlError, match=r"outside the allowed range 100-350 W"):
        with capped(cap, 500):
            pass
    assert nv.gpus[0].set_limit_calls == []
    assert not list(control_dir.glob("*.json")) if control_dir.exists() else True


def test_permission_denied_names_the_fix_and_leaves_no_journal(control_dir):
    cap, nv = _nvml_cap(can_set_limit=False)
    with pytest.raises(HardwareControlError, match=r"needs root.*nvidia-smi -pm 1"):
        with capped(cap, 200):
            pytest.fail("the block must not run")
    assert cap.get() == 300.0
    assert not list(control_dir.glob("*.json"))


def test_restore_without_journal_is_a_no_op(tmp_path):
    assert restore_from_journal(tmp_path / "none.json") is None


def test_corrupt_journal_is_a_clear_error(tmp_path):
    j = tmp_path / "j.json"
    j.write_text("{not json")
    j.chmod(0o644)
    with pytest.raises(HardwareControlError, match="not valid JSON"):
        restore_from_journal(j)


def test_capped_off_main_thread_still_restores(fake_tools):
    import threading

    cap = JetsonPowerMode("jetson-orin-nano-8gb", runner=fake_tools)
    out = {}

    def work():
        with capped(cap, 1):
            out["inside"] = fake_tools.mode

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out["inside"] == 1 and fake_tools.mode == 0
