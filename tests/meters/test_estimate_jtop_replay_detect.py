"""The estimate model, the jtop adapter, trace replay and meter detection."""

from __future__ import annotations

import pytest

from greenllm.errors import ConfigError, DataError, MeterUnavailable
from greenllm.measure import measure
from greenllm.meters.detect import detect_meters
from greenllm.meters.estimate import EstimateMeter
from greenllm.meters.jtop import JtopMeter
from greenllm.meters.replay import ReplayMeter, replay_report
from greenllm.testing import FakeClock, FakeGpu, FakePynvml, make_rapl_tree


class Times:
    """cpu_times() fake: each call adds ``busy`` busy seconds out of ``total``."""

    def __init__(self, busy, total):
        self.b, self.t, self.db, self.dt = 0.0, 0.0, busy, total

    def __call__(self):
        out = (self.b, self.t)
        self.b += self.db
        self.t += self.dt
        return out


def test_estimate_model_is_linear_in_utilisation_and_labelled():
    clock = FakeClock()
    m = EstimateMeter(tdp_w=50, idle_w=10, cpu_times=Times(busy=0.75, total=1.0), clock=clock)
    with measure([m], hz=0, clock=clock) as h:
        for _ in range(4):
            clock.advance(1.0)
            h.sample()
    rep = h.report
    assert rep.energy_j == pytest.approx(4 * (10 + 40 * 0.75))
    assert rep.estimated and rep.method == "estimate"
    d = rep.domain("estimate", "cpu")
    assert d.estimated and d.method == "estimate"
    assert any(f.startswith("estimate:cpu tdp_w=50") for f in rep.flags)
    assert rep.to_dict()["estimated"] is True


def test_estimate_process_scope_counts_children_running_and_reaped():
    """A program greenllm runs (llama-server, llama-bench, measure -- CMD) is charged."""
    import subprocess
    import sys
    import time

    from greenllm.meters.estimate import _psutil_process_cpu_times

    b0, _ = _psutil_process_cpu_times()
    code = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass"
    child = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.2)
    while child.poll() is None:
        b1, _ = _psutil_process_cpu_times()  # running: counted live
        time.sleep(0.02)
    child.wait()
    b2, _ = _psutil_process_cpu_times()  # reaped: counted in children_user / _system
    assert b2 - b0 >= 0.3
    assert b2 >= b1


def test_estimate_defaults_and_bad_config():
    m = EstimateMeter(cpu_count=4, env={})
    assert (m.tdp_w, m.idle_w) == (40.0, 12.0)
    assert EstimateMeter(cpu_count=4, env={"GREENLLM_CPU_TDP_W": "65"}).tdp_w == 65.0
    with pytest.raises(ConfigError, match="GREENLLM_CPU_TDP_W"):
        EstimateMeter(env={"GREENLLM_CPU_TDP_W": "lots"})
    with pytest.raises(ConfigError, match="idle_w"):
        EstimateMeter(tdp_w=10, idle_w=20)


class FakeJtop:
    def __init__(self, fail=None):
        self.fail = fail
        self.power = {
            "rail": {
                "VDD_GPU_SOC": {"power": 2340, "online": True},
                "VDD_CPU_CV": {"power": 390, "online": True},
                "NC": {"power": 0, "online": True},
            }
        }

    def start(self):
        if self.fail:
            raise RuntimeError(self.fail)

    def close(self):
        pass


def test_jtop_adapter_rails_and_total():
    m = JtopMeter(factory=FakeJtop)
    assert m.read().power_w == pytest.approx({"VDD_GPU_SOC": 2.34, "VDD_CPU_CV": 0.39})
    assert {d.name for d in m.domains() if d.in_total} == {"VDD_GPU_SOC", "VDD_CPU_CV"}


def test_jtop_without_service_is_unavailable():
    ok, reason = JtopMeter(
        factory=lambda: FakeJtop(fail="The jtop.service is not active.")
    ).available()
    assert not ok and "jtop.service" in reason


def test_jtop_missing_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jtop", None)  # the import boundary: package absent
    with pytest.raises(MeterUnavailable, match=r"pip install 'greenllm\[jetson\]'"):
        JtopMeter().read()


def test_trace_round_trip_through_replay(tmp_path):
    clock = FakeClock()
    fake = FakePynvml(
        [FakeGpu(power_mw=100_000), FakeGpu(uuid="GPU-x", energy_supported=False, power_mw=40_000)]
    )
    from greenllm.meters.nvml import NvmlMeter

    trace = tmp_path / "sub" / "trace.csv"
    with measure([NvmlMeter(nvml=fake, clock=clock, env={})], hz=0, clock=clock, trace=trace) as h:
        for _ in range(5):
            clock.advance(0.2)
            fake.advance(0.2)
            h.sample()
    live = h.report
    assert live.trace_path == str(trace) and trace.exists()
    assert not list(trace.parent.glob(".*.tmp"))  # no temp file left behind
    again = replay_report(trace)
    assert again.energy_j == pytest.approx(live.energy_j)
    assert again.duration_s == pytest.approx(live.duration_s)
    assert [d.energy_j for d in again.domains] == pytest.approx([d.energy_j for d in live.domains])
    meter = ReplayMeter(trace)
    assert {d.name for d in meter.domains()} == {"nvml/gpu0", "nvml/gpu1"}
    n = sum(1 for _ in range(6) if meter.read())
    assert n == 6
    with pytest.raises(Exception, match="exhausted"):
        meter.read()


def test_replay_rejects_non_traces(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a greenllm trace"):
        replay_report(p)
    ok, reason = ReplayMeter(tmp_path / "none.csv").available()
    assert not ok and "cannot read trace" in reason


def test_detect_prefers_real_meters_and_explains_the_rest(tmp_path):
    rapl_root = make_rapl_tree(tmp_path)
    from greenllm.meters.nvml import NvmlMeter
    from greenllm.meters.rapl import RaplMeter
    from greenllm.meters.tegrastats import TegrastatsMeter

    det = detect_meters(
        factories={
            "nvml": lambda: NvmlMeter(nvml=FakePynvml(), env={}),
            "rapl": lambda: RaplMeter(root=rapl_root),
            "tegrastats": lambda: TegrastatsMeter(which=lambda n: None),
            "estimate": lambda: EstimateMeter(cpu_times=Times(0.1, 1.0)),
        }
    )
    assert det.chosen == ["nvml", "rapl"]
    assert "not on PATH" in det.unavailable["tegrastats"]
    assert "estimate" in det.available and "estimate" not in det.chosen
    j = det.to_json()
    assert j["estimated"] is False and [r["meter"] for r in j["meters"]][:2] == ["nvml", "rapl"]


def test_detect_falls_back_to_the_estimate(tmp_path):
    from greenllm.meters.rapl import RaplMeter

    det = detect_meters(
        factories={
            "rapl": lambda: RaplMeter(root=tmp_path / "no"),
            "estimate": lambda: EstimateMeter(cpu_times=Times(0.1, 1.0)),
        }
    )
    assert det.chosen == ["estimate"] and det.to_json()["estimated"] is True
    with pytest.raises(MeterUnavailable, match="no meter is usable"):
        detect_meters(factories={"rapl": lambda: RaplMeter(root=tmp_path / "no")})


def test_detect_on_this_machine_names_every_meter():
    det = detect_meters()
    for m in det.meters:
        m.close()
    names = set(det.available) | set(det.unavailable)
    assert names == {"nvml", "rapl", "jetson", "tegrastats", "jtop", "estimate", "replay"}
    assert all(reason for reason in det.unavailable.values())


class _Closing:
    def __init__(self, name, closed, fail=None):
        self.name, self.closed, self.fail = name, closed, fail

    def available(self):
        if self.fail is not None:
            raise self.fail
        return True, "works"

    def close(self):
        self.closed.append(self.name)


def test_detect_closes_what_it_opened_when_a_probe_raises():
    from greenllm.errors import MeterError

    closed: list[str] = []
    with pytest.raises(RuntimeError, match="sysfs broke"):
        detect_meters(
            factories={
                "nvml": lambda: _Closing("nvml", closed, fail=MeterError("no driver")),
                "rapl": lambda: _Closing("rapl", closed),
                "jetson": lambda: _Closing("jetson", closed, fail=RuntimeError("sysfs broke")),
            }
        )
    assert sorted(closed) == ["jetson", "nvml", "rapl"]
    closed.clear()
    det = detect_meters(
        factories={
            "nvml": lambda: _Closing("nvml", closed, fail=MeterError("no driver")),
            "rapl": lambda: _Closing("rapl", closed),
        }
    )
    assert det.chosen == ["rapl"] and "no driver" in det.unavailable["nvml"]
    assert closed == ["nvml"]  # the unavailable one; the chosen one stays open
