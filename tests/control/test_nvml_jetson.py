"""NvmlPowerCap on a fake pynvml, JetsonPowerMode on fake nvpmodel / jetson_clocks commands."""

from __future__ import annotations

import pytest

from greenllm.control import POWER_CAPS
from greenllm.control.base import PowerCap, capped
from greenllm.control.jetson import JetsonPowerMode, parse_nvpmodel_query
from greenllm.control.nvml import NvmlPowerCap
from greenllm.errors import HardwareControlError, UnknownNameError
from greenllm.testing import FakeGpu, FakePynvml


def test_registry_names_resolve_to_the_adapters():
    assert POWER_CAPS.get("nvml") is NvmlPowerCap
    assert POWER_CAPS.get("jetson") is JetsonPowerMode


def test_nvml_get_allowed_set_in_watts():
    nv = FakePynvml(
        gpus=[
            FakeGpu(
                name="NVIDIA L4", power_limit_mw=72_000, min_limit_mw=40_000, max_limit_mw=72_000
            )
        ]
    )
    cap = NvmlPowerCap(pynvml=nv)
    assert isinstance(cap, PowerCap)
    assert cap.get() == 72.0 and cap.allowed() == (40.0, 72.0)
    cap.set(55.5)
    assert nv.gpus[0].power_limit_mw == 55_500
    assert "NVIDIA L4" in cap.describe() and "40-72 W" in cap.describe()


def test_nvml_outside_range_lists_range():
    cap = NvmlPowerCap(
        pynvml=FakePynvml(gpus=[FakeGpu(min_limit_mw=100_000, max_limit_mw=400_000)])
    )
    with pytest.raises(HardwareControlError, match=r"30 W is outside the allowed range 100-400 W"):
        cap.set(30)
    with pytest.raises(HardwareControlError, match="not a number"):
        cap.check("lots")


def test_nvml_no_driver_and_bad_index():
    with pytest.raises(HardwareControlError, match="no NVML GPU"):
        NvmlPowerCap(pynvml=FakePynvml(init_error=12))
    with pytest.raises(HardwareControlError, match="index 3"):
        NvmlPowerCap(index=3, pynvml=FakePynvml())


def test_nvml_not_supported_is_explained():
    cap = NvmlPowerCap(pynvml=FakePynvml(gpus=[FakeGpu(limit_supported=False)]))
    with pytest.raises(HardwareControlError, match="not supported"):
        cap.get()


def test_nvpmodel_query_parser_real_format():
    assert parse_nvpmodel_query("NV Fan Mode:quiet\nNV Power Mode: MODE_15W_6CORE\n2\n") == (
        2,
        "MODE_15W_6CORE",
    )
    assert parse_nvpmodel_query("NV Power Mode: MAXN\n0\n") == (0, "MAXN")
    verbose = (
        "NVPM VERB: Config file: /etc/nvpmodel.conf\nNV Fan Mode:quiet\n"
        "NVPM VERB: Current mode: NV Power Mode: 15W\n0\n"
    )
    assert parse_nvpmodel_query(verbose) == (0, "15W")
    with pytest.raises(HardwareControlError, match="cannot read the power mode"):
        parse_nvpmodel_query("garbage")


def test_jetson_mode_by_id_and_name(fake_tools):
    cap = JetsonPowerMode("jetson-orin-nano-8gb", runner=fake_tools)
    assert cap.get() == 0
    cap.set("7W")
    assert fake_tools.mode == 1 and fake_tools.calls[-1][1:] == ["-m", "1"]
    cap.set(0)
    assert fake_tools.mode == 0


def test_jetson_unknown_mode_lists_the_boards_modes(fake_tools):
    cap = JetsonPowerMode("jetson-orin-nano-8gb", runner=fake_tools)
    with pytest.raises(HardwareControlError, match=r"unknown power mode '30W'.*0=15W, 1=7W"):
        cap.set("30W")
    assert fake_tools.calls == []


def test_jetson_permission_denied_says_sudo(fake_tools):
    fake_tools.root = False
    cap = JetsonPowerMode("jetson-orin-nano-8gb", runner=fake_tools)
    with pytest.raises(HardwareControlError, match=r"needs root.*sudo nvpmodel -m 1"):
        cap.set(1)


def test_jetson_clocks_stored_pinned_and_restored(tmp_path, fake_tools):
    store = tmp_path / "clocks.conf"
    cap = JetsonPowerMode(
        "jetson-orin-nano-8gb", runner=fake_tools, max_clocks=True, clocks_file=str(store)
    )
    with capped(cap, 1):
        assert fake_tools.clocks_pinned and store.exists() and fake_tools.mode == 1
    assert not fake_tools.clocks_pinned and fake_tools.mode == 0
    assert ["jetson_clocks", "--restore", str(store)] in fake_tools.calls
    assert not store.exists()


def test_jetson_needs_a_jetson_profile():
    with pytest.raises(HardwareControlError, match="no nvpmodel power modes"):
        JetsonPowerMode("raspberry-pi-5")
    with pytest.raises(UnknownNameError, match="did you mean 'jetson-orin-nano-8gb'"):
        JetsonPowerMode("jetson-orin-nano-8g")
