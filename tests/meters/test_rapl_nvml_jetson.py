"""RAPL, NVML and Jetson INA3221 meters on fake sysfs trees / a fake pynvml module."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from greenllm.errors import MeterError, MeterUnavailable
from greenllm.measure import measure
from greenllm.meters.base import CounterUnwrapper, counter_delta, trapezoid
from greenllm.meters.jetson import JetsonRailsMeter
from greenllm.meters.nvml import NvmlMeter, parse_visible_devices
from greenllm.meters.rapl import RaplMeter
from greenllm.testing import (
    FakeClock,
    FakeGpu,
    FakePynvml,
    make_ina3221_tree,
    make_rapl_tree,
    set_ina3221_rail,
    set_rapl_energy,
)

# -- helpers -------------------------------------------------------------------------------


def test_trapezoid_and_counter_helpers():
    assert trapezoid([0, 1, 3], [10, 20, 20]) == pytest.approx(15 + 40)
    assert trapezoid([5], [3]) == 0
    with pytest.raises(ValueError):
        trapezoid([1, 0], [1, 1])
    assert counter_delta(100, 250, 1000) == 150
    assert counter_delta(900, 50, 1000) == 150  # wrapped once
    with pytest.raises(MeterError):
        counter_delta(900, 50, None)  # never guess
    u = CounterUnwrapper(1000)
    assert [u.update(v) for v in (900, 990, 40, 500)] == [0, 90, 140, 600]
    assert u.wraps == 1


# -- RAPL ----------------------------------------------------------------------------------


def test_rapl_domains_and_totals(tmp_path):
    root = make_rapl_tree(tmp_path, packages=2, subzones=("core", "uncore", "dram"), psys=True)
    dom = {d.name: d for d in RaplMeter(root=root).domains()}
    assert set(dom) == {
        "package-0",
        "package-0/core",
        "package-0/uncore",
        "package-0/dram",
        "package-1",
        "package-1/core",
        "package-1/uncore",
        "package-1/dram",
        "psys",
    }
    # packages and DRAM count; core/uncore are inside the package; psys contains everything
    assert {n for n, d in dom.items() if d.in_total} == {
        "package-0",
        "package-1",
        "package-0/dram",
        "package-1/dram",
    }


def test_rapl_counter_wraparound(tmp_path):
    rng = 1_000_000_000
    root = make_rapl_tree(tmp_path, subzones=(), energy_uj=rng - 2_000_000, max_energy_range_uj=rng)
    clock = FakeClock()
    with measure([RaplMeter(root=root, clock=clock)], hz=0, clock=clock) as m:
        clock.advance(1.0)
        set_rapl_energy(root, "intel-rapl:0", 3_000_000)  # wrapped: +5 J
        m.sample()
        clock.advance(1.0)
        set_rapl_energy(root, "intel-rapl:0", 8_000_000)  # +5 J
    assert m.report.energy_j == pytest.approx(10.0)
    assert m.report.mean_power_w == pytest.approx(5.0)
    assert m.report.method == "counter"


@contextlib.contextmanager
def _unprivileged_tree(tmp_path: Path):
    """A folder for a fake tree, read as uid 'nobody' when running as root: root reads
    mode-000 files, so the permission check needs an unprivileged effective uid."""
    if os.geteuid() != 0:
        yield tmp_path, contextlib.nullcontext
        return
    base = Path(tempfile.mkdtemp(prefix="greenllm-rapl-"))
    base.chmod(0o755)

    @contextlib.contextmanager
    def as_nobody():
        os.seteuid(65534)
        try:
            yield
        finally:
            os.seteuid(0)

    try:
        yield base, as_nobody
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_rapl_permission_denied_names_the_fix(tmp_path):
    with _unprivileged_tree(tmp_path) as (base, as_nobody):
        root = make_rapl_tree(base, readable=False)
        with as_nobody():
            meter = RaplMeter(root=root)
            ok, reason = meter.available()
            with pytest.raises(MeterError) as err:
                meter.read()
    assert ok is False
    assert "permission denied" in reason and "chmod" in reason and "root" in reason
    assert str(root / "intel-rapl:0" / "energy_uj") in str(err.value)


def test_rapl_missing_tree_is_unavailable(tmp_path):
    ok, reason = RaplMeter(root=tmp_path / "nothing").available()
    assert not ok and "does not exist" in reason
    (tmp_path / "empty").mkdir()
    ok, reason = RaplMeter(root=tmp_path / "empty").available()
    assert not ok and "no intel-rapl zones" in reason


# -- NVML ----------------------------------------------------------------------------------


def test_visible_devices_parsing():
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("1,0") == ["1", "0"]
    assert parse_visible_devices("0,bogus,1") == ["0"]  # CUDA stops at invalid
    assert parse_visible_devices("GPU-abc, 2") == ["GPU-abc", "2"]


def _gpus():
    return [
        FakeGpu(name="A", uuid="GPU-aaaa-1", power_mw=100_000),
        FakeGpu(name="B", uuid="GPU-bbbb-2", power_mw=200_000),
        FakeGpu(name="C", uuid="GPU-cccc-3", power_mw=300_000),
    ]


@pytest.mark.parametrize(
    "env,names",
    [
        ({}, ["A", "B", "C"]),
        ({"CUDA_VISIBLE_DEVICES": "2,0"}, ["C", "A"]),
        ({"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}, ["B"]),
        ({"CUDA_VISIBLE_DEVICES": "1,7,0"}, ["B"]),
    ],
)
def test_nvml_honours_cuda_visible_devices(env, names):
    m = NvmlMeter(nvml=FakePynvml(_gpus()), env=env)
    assert list(m.device_names().values()) == names
    assert [d.name for d in m.domains()] == [f"gpu{i}" for i in range(len(names))]


def test_nvml_hidden_gpus_and_no_driver():
    ok, reason = NvmlMeter(nvml=FakePynvml(_gpus()), env={"CUDA_VISIBLE_DEVICES": ""}).available()
    assert not ok and "hides every GPU" in reason
    fake = FakePynvml(init_error=FakePynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    ok, reason = NvmlMeter(nvml=fake, env={}).available()
    assert not ok and "Library Not Found" in reason
    ok, reason = NvmlMeter(nvml=FakePynvml([]), env={}).available()
    assert not ok and "no GPU" in reason


def test_nvml_counter_and_power_fallback_energy():
    gpus = [
        FakeGpu(power_mw=100_000),
        FakeGpu(uuid="GPU-old", energy_supported=False, power_mw=50_000),
    ]
    fake = FakePynvml(gpus)
    clock = FakeClock()
    meter = NvmlMeter(nvml=fake, clock=clock, env={})
    assert [(d.name, d.kind) for d in meter.domains()] == [("gpu0", "counter"), ("gpu1", "power")]
    with measure([meter], hz=0, clock=clock) as m:
        for _ in range(4):
            clock.advance(0.5)
            fake.advance(0.5)
            m.sample()
    rep = m.report
    assert rep.domain("nvml", "gpu0").energy_j == pytest.approx(200.0)  # 100 W x 2 s, counter
    assert rep.domain("nvml", "gpu1").energy_j == pytest.approx(100.0)  # 50 W x 2 s, integrated
    assert rep.method == "mixed"
    assert fake.initialised == 1  # a meter passed in is the caller's to close
    meter.close()
    assert fake.initialised == 0 and fake.calls[-1] == "nvmlShutdown"


def test_nvml_gpu_lost_mid_window_is_flagged():
    fake = FakePynvml([FakeGpu(power_mw=100_000)])
    clock = FakeClock()
    meter = NvmlMeter(nvml=fake, clock=clock, env={})
    with measure([meter], hz=0, clock=clock) as m:
        clock.advance(1.0)
        fake.advance(1.0)
        m.sample()
        fake.gpus[0].lost = True
        clock.advance(1.0)
        m.sample()
    rep = m.report
    assert "meter_vanished:nvml" in rep.flags
    assert rep.energy_j == pytest.approx(100.0)  # what was measured before it vanished
    assert rep.duration_s == pytest.approx(2.0)  # the window still closed


# -- Jetson INA3221 ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["hwmon", "legacy"])
def test_jetson_rails_power_and_input_rail_total(tmp_path, layout):
    root = make_ina3221_tree(
        tmp_path,
        layout,
        {"VDD_IN": (5000, 1200), "VDD_CPU_GPU_CV": (5000, 400), "VDD_SOC": (5000, 300)},
    )
    m = JetsonRailsMeter(root=root)
    assert m.read().power_w == pytest.approx({"VDD_IN": 6.0, "VDD_CPU_GPU_CV": 2.0, "VDD_SOC": 1.5})
    assert m.layout == layout
    assert [d.name for d in m.domains() if d.in_total] == ["VDD_IN"]


def test_jetson_agx_orin_sums_module_rails_and_skips_nc(tmp_path):
    root = make_ina3221_tree(
        tmp_path,
        "hwmon",
        {
            "VDD_GPU_SOC": (5000, 400),
            "VDD_CPU_CV": (5000, 100),
            "VIN_SYS_5V0": (5000, 800),
            "NC": (0, 0),
            "VDDQ_VDD2_1V8AO": (1800, 100),
            "NC ": (0, 0),
        },
    )
    m = JetsonRailsMeter(root=root)
    totals = [d.name for d in m.domains() if d.in_total]
    assert totals == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"]
    listed = [d.name for d in m.domains()]
    assert "VDDQ_VDD2_1V8AO" in listed  # still measured and listed, inside VIN_SYS_5V0
    clock = FakeClock()
    m = JetsonRailsMeter(root=root, clock=clock)
    with measure([m], hz=0, clock=clock) as h:
        clock.advance(2.0)
    assert h.report.energy_j == pytest.approx(2.0 * (2.0 + 0.5 + 4.0))


def test_jetson_negative_rail_is_clamped_and_flagged(tmp_path):
    root = make_ina3221_tree(tmp_path, "hwmon", {"VDD_IN": (5000, 1000)})
    clock = FakeClock()
    with measure([JetsonRailsMeter(root=root, clock=clock)], hz=0, clock=clock) as m:
        clock.advance(1.0)
        set_ina3221_rail(root, "VDD_IN", 5000, -200)  # sensor offset below zero
        m.sample()
        clock.advance(1.0)
        set_ina3221_rail(root, "VDD_IN", 5000, 1000)
    assert "negative_power_clamped:jetson/VDD_IN" in m.report.flags
    assert m.report.energy_j == pytest.approx(0.5 * 5 + 0.5 * 5)  # -1 W counted as 0


def test_jetson_absent(tmp_path):
    ok, reason = JetsonRailsMeter(root=tmp_path).available()
    assert not ok and "no INA3221 power rails" in reason
    with pytest.raises(MeterUnavailable):
        JetsonRailsMeter(root=tmp_path).read()
