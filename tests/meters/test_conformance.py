"""One conformance test for every meter, each built on a lowest-boundary fake."""

# Parameter ids avoid the bare marker names (nvml, rapl, jetson): conftest skips by keyword.
from __future__ import annotations

import math
from pathlib import Path

import pytest

from greenllm.measure import measure
from greenllm.meters import METERS
from greenllm.meters.base import COUNTER, POWER, DomainInfo, Meter, Reading
from greenllm.meters.estimate import EstimateMeter
from greenllm.meters.jetson import JetsonRailsMeter
from greenllm.meters.jtop import JtopMeter
from greenllm.meters.nvml import NvmlMeter
from greenllm.meters.rapl import RaplMeter
from greenllm.meters.replay import ReplayMeter
from greenllm.meters.tegrastats import TegrastatsMeter
from greenllm.testing import (
    FakeClock,
    FakeGpu,
    FakePynvml,
    make_ina3221_tree,
    make_rapl_tree,
    recorded_runner,
    set_rapl_energy,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "tegrastats"


class FakeJtop:
    """jtop-like object: .start(), .power, .close() (rails in mW)."""

    def __init__(self):
        self.power = {
            "rail": {
                "VDD_IN": {"power": 5000, "online": True},
                "VDD_CPU_GPU_CV": {"power": 1500, "online": True},
                "VDD_SOC": {"power": 1200, "online": True},
            },
            "tot": {"power": 5000},
        }
        self.closed = False

    def start(self):
        pass

    def close(self):
        self.closed = True


class CpuTimes:
    def __init__(self):
        self.busy, self.total = 100.0, 400.0

    def __call__(self):
        self.busy += 0.5
        self.total += 1.0
        return self.busy, self.total


def _nvml(clock, tmp_path):
    fake = FakePynvml([FakeGpu(), FakeGpu(uuid="GPU-11111111-0000-0000-0000-000000000000")])
    m = NvmlMeter(nvml=fake, clock=clock, env={})
    return m, lambda: fake.advance(0.1)


def _nvml_power(clock, tmp_path):
    fake = FakePynvml([FakeGpu(energy_supported=False, power_mw=70_000)])
    return NvmlMeter(nvml=fake, clock=clock, env={}), lambda: None


def _rapl(clock, tmp_path):
    root = make_rapl_tree(tmp_path, packages=2, energy_uj=1_000_000)
    state = {"uj": 1_000_000}

    def step():
        state["uj"] += 2_500_000
        for p in range(2):
            set_rapl_energy(root, f"intel-rapl:{p}", state["uj"])
            set_rapl_energy(root, f"intel-rapl:{p}/intel-rapl:{p}:0", state["uj"] // 2)
            set_rapl_energy(root, f"intel-rapl:{p}/intel-rapl:{p}:1", state["uj"] // 4)

    return RaplMeter(root=root, clock=clock), step


def _jetson_hwmon(clock, tmp_path):
    return JetsonRailsMeter(root=make_ina3221_tree(tmp_path, "hwmon"), clock=clock), lambda: None


def _jetson_legacy(clock, tmp_path):
    return JetsonRailsMeter(root=make_ina3221_tree(tmp_path, "legacy"), clock=clock), lambda: None


def _tegrastats(clock, tmp_path):
    lines = (DATA / "orin_nx_nano_r36.log").read_text().splitlines()
    return TegrastatsMeter(
        runner=recorded_runner(lines), which=lambda n: "/usr/bin/tegrastats", clock=clock
    ), lambda: None


def _jtop(clock, tmp_path):
    return JtopMeter(factory=FakeJtop, clock=clock), lambda: None


def _estimate(clock, tmp_path):
    return EstimateMeter(tdp_w=40.0, idle_w=10.0, cpu_times=CpuTimes(), clock=clock), lambda: None


def _replay(clock, tmp_path):
    trace = tmp_path / "trace.csv"
    inner = EstimateMeter(tdp_w=40.0, idle_w=10.0, cpu_times=CpuTimes(), clock=clock)
    with measure([inner], hz=0, trace=trace, clock=clock) as m:
        for _ in range(4):
            clock.advance(0.1)
            m.sample()
    return ReplayMeter(trace, clock=clock), lambda: None


FACTORIES = {
    "nvml-energy": _nvml,
    "nvml-power": _nvml_power,
    "rapl-sysfs": _rapl,
    "jetson-hwmon": _jetson_hwmon,
    "jetson-legacy": _jetson_legacy,
    "tegrastats-process": _tegrastats,
    "jtop-fake": _jtop,
    "estimate-model": _estimate,
    "replay-trace": _replay,
}


def test_every_registered_meter_is_covered():
    covered = {k.split("-")[0] for k in FACTORIES}
    assert covered == set(METERS.names())


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_meter_conformance(kind, tmp_path):
    clock = FakeClock()
    meter, step = FACTORIES[kind](clock, tmp_path)
    try:
        assert isinstance(meter, Meter)
        assert meter.name in METERS
        ok, reason = meter.available()
        assert ok is True and isinstance(reason, str) and reason
        domains = meter.domains()
        assert domains and all(isinstance(d, DomainInfo) for d in domains)
        assert len({d.name for d in domains}) == len(domains)
        assert all(d.kind in (COUNTER, POWER) for d in domains)
        assert any(d.in_total for d in domains)
        readings = []
        for _ in range(3):
            clock.advance(0.1)
            step()
            r = meter.read()
            assert isinstance(r, Reading)
            assert r.timestamp_s == pytest.approx(clock()) or kind == "replay-trace"
            for d in domains:
                values = r.energy_j if d.kind == COUNTER else r.power_w
                assert d.name in values, f"{kind}: no value for {d.name}"
                assert math.isfinite(values[d.name]) and values[d.name] >= 0
            readings.append(r)
        for d in domains:
            if d.kind == COUNTER:
                seq = [r.energy_j[d.name] for r in readings]
                assert seq == sorted(seq), f"{kind}: counter {d.name} went backwards"
        assert [r.timestamp_s for r in readings] == sorted(r.timestamp_s for r in readings)
    finally:
        meter.close()
        meter.close()  # idempotent


@pytest.mark.parametrize("kind", sorted(k for k in FACTORIES if k != "replay-trace"))
def test_meter_through_measure(kind, tmp_path):
    clock = FakeClock()
    meter, step = FACTORIES[kind](clock, tmp_path)
    with measure([meter], hz=0, clock=clock) as m:
        for _ in range(3):
            clock.advance(0.5)
            step()
            m.sample()
    rep = m.report
    assert rep.duration_s == pytest.approx(1.5)
    assert rep.meters == (meter.name,)
    assert {d.domain for d in rep.domains} == {d.name for d in meter.domains()}
    assert rep.energy_j > 0
    assert rep.energy_j == pytest.approx(sum(d.energy_j for d in rep.domains if d.in_total))
    assert rep.estimated == (kind == "estimate-model")
