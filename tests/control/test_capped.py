"""capped(): journal first, original back on return / exception, refusal cases."""
from __future__ import annotations

import json

import pytest

from greenllm.control.base import capped, read_journal, restore_from_journal
from greenllm.control.jetson import JetsonPowerMode
from greenllm.control.nvml import NvmlPowerCap
from greenllm.errors import HardwareControlError
from greenllm.testing import FakeGpu, FakePynvml


def _nvml_cap(**gpu):
    nv = FakePynvml(gpus=[FakeGpu(power_limit_mw=300_000, min_limit_mw=100_000,
                                  max_limit_mw=350_000, **gpu)])
    return NvmlPowerCap(pynvml=nv), nv


def test_journal_holds_original_before_change_and_is_removed(tmp_path):
    cap, nv = _nvml_cap()
    journal = tmp_path / "j.json"
    seen = {}
    real_set = nv.nvmlDeviceSetPowerManagementLimit

    def spy(h, mw):  # the journal must already exist, with the original, at the first set
        seen.setdefault("journal", json.loads(journal.read_text()))
        real_set(h, mw)

    nv.nvmlDeviceSetPowerManagementLimit = spy
    with capped(cap, 150, journal=journal) as original:
        assert original == 300.0
        assert cap.get() == 150.0
        assert read_journal(journal)["requested"] == 150.0
    assert seen["journal"]["original"] == 300.0 and seen["journal"]["cap"] == "nvml"
    assert seen["journal"]["params"] == {"index": 0}
    assert cap.get() == 300.0
    assert not journal.exists()
    assert nv.gpus[0].set_limit_calls == [150_000, 300_000]


def test_restores_on_exception(tmp_path, fake_tools):
    cap = JetsonPowerMode("jetson-orin-nano-8gb", runner=fake_tools)
    with pytest.raises(RuntimeError, match="boom"):
        with capped(cap, "7W", journal=tmp_path / "j.json"):
            assert fake_tools.mode == 1
            raise RuntimeError("boom")
    assert fake_tools.mode == 0
    assert not (tmp_path / "j.json").exists()


def test_out_of_range_touches_nothing(tmp_path):
    cap, nv = _nvml_cap()
    with pytest.raises(HardwareControlError, match=r"outside the allowed range 100-350 W"):
        with capped(cap, 500, journal=tmp_path / "j.json"):
            pass
    assert nv.gpus[0].set_limit_calls == []
    assert not (tmp_path / "j.json").exists()


def test_permission_denied_names_the_fix_and_leaves_no_journal(tmp_path):
    cap, nv = _nvml_cap(can_set_limit=False)
    with pytest.raises(HardwareControlError, match=r"needs root.*nvidia-smi -pm 1"):
        with capped(cap, 200, journal=tmp_path / "j.json"):
            pytest.fail("the block must not run")
    assert cap.get() == 300.0
    assert not (tmp_path / "j.json").exists()


def test_refuses_while_an_unrestored_journal_exists(tmp_path, fake_tools):
    journal = tmp_path / "j.json"
    journal.write_text(json.dumps({"cap": "jetson", "original": 0, "params": {}}))
    cap = JetsonPowerMode("jetson-orin-nano-8gb", runner=fake_tools)
    with pytest.raises(HardwareControlError, match="control restore"):
        with capped(cap, 1, journal=journal):
            pass
    assert fake_tools.calls == []


def test_restore_without_journal_is_a_no_op(tmp_path):
    assert restore_from_journal(tmp_path / "none.json") is None


def test_corrupt_journal_is_a_clear_error(tmp_path):
    j = tmp_path / "j.json"
    j.write_text("{not json")
    with pytest.raises(HardwareControlError, match="unreadable"):
        restore_from_journal(j)


def test_capped_off_main_thread_still_restores(tmp_path, fake_tools):
    import threading

    cap = JetsonPowerMode("jetson-orin-nano-8gb", runner=fake_tools)
    out = {}

    def work():
        with capped(cap, 1, journal=tmp_path / "j.json"):
            out["inside"] = fake_tools.mode

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out["inside"] == 1 and fake_tools.mode == 0
