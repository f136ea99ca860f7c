"""measure(): counters, trapezoid integration, idle baseline, trace, vanishing meters,
snapshots, the decorator form and the sampler thread. Injected clocks; nothing sleeps."""

from __future__ import annotations

import threading

import pytest

from greenllm.errors import ConfigError, MeterError, MeterUnavailable, UnknownNameError
from greenllm.measure import build_report, measure
from greenllm.meters.base import BaseMeter, DomainInfo, Reading
from greenllm.results import EnergyReport
from greenllm.testing import FakeClock, FakeGpu, FakePynvml


class ScriptedMeter(BaseMeter):
    """A meter whose readings are a function of the injected clock (the lowest boundary)."""

    name = "estimate"  # any registry name; measure() only uses .name for labels

    def __init__(
        self,
        clock,
        power=None,
        counter=None,
        fail_after=None,
        name="scripted",
        in_total=True,
        extra_power=None,
    ):
        super().__init__(clock)
        self.name = name
        self.power, self.counter, self.extra = power, counter, extra_power
        self.fail_after = fail_after
        self.reads = 0
        self.closed = False

    def available(self):
        return True, "scripted"

    def domains(self):
        out = []
        if self.power:
            out.append(DomainInfo("rail", "power"))
        if self.extra:
            out.append(DomainInfo("sub", "power", in_total=False))
        if self.counter:
            out.append(DomainInfo("pkg", "counter"))
        return out

    def read(self):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise MeterError("device unplugged")
        t = self.clock()
        p = {"rail": self.power(t)} if self.power else {}
        if self.extra:
            p["sub"] = self.extra(t)
        e = {"pkg": self.counter(t)} if self.counter else {}
        return Reading(t, energy_j=e, power_w=p)

    def close(self):
        self.closed = True


def _run(meter, clock, steps, dt=1.0, **kw):
    with measure([meter], hz=0, clock=clock, **kw) as m:
        for _ in range(steps):
            clock.advance(dt)
            m.sample()
    return m


def test_power_meter_is_integrated_with_the_trapezoid_rule():
    clock = FakeClock(0.0)
    m = _run(ScriptedMeter(clock, power=lambda t: 2.0 * t), clock, steps=4)  # ramp 0 -> 8 W
    rep = m.report
    assert rep.duration_s == pytest.approx(4.0)
    assert rep.energy_j == pytest.approx(16.0)  # exact for a linear ramp
    assert rep.mean_power_w == pytest.approx(4.0)
    assert (
        rep.samples == 6 and rep.method
    )  # enter + 4 + exit == "power_integration" and not rep.estimated


def test_counter_meter_gives_the_delta_and_sub_rails_do_not_count():
    clock = FakeClock(0.0)
    meter = ScriptedMeter(
        clock, counter=lambda t: 1000 + 30.0 * t, power=lambda t: 5.0, extra_power=lambda t: 3.0
    )
    rep = _run(meter, clock, steps=2).report
    assert rep.domain("scripted", "pkg").energy_j == pytest.approx(60.0)
    assert rep.domain("scripted", "sub").energy_j == pytest.approx(6.0)
    assert rep.energy_j == pytest.approx(60.0 + 10.0)  # "sub" is inside "rail": not added
    assert rep.method == "mixed"


def test_idle_baseline_gives_gross_and_net_energy():
    clock = FakeClock(0.0)
    state = {"busy": False}
    meter = ScriptedMeter(clock, power=lambda t: 10.0 if state["busy"] else 4.0)
    with measure([meter], hz=0, idle_s=2.0, clock=clock, sleep=clock.sleep) as m:
        # the idle phase ran on the injected sleep (2 s of fake time); the window starts at
        # t=2 with a 4 W sample, then the load starts
        assert clock() == pytest.approx(2.0)
        state["busy"] = True
        clock.advance(3.0)
        m.sample()
    rep = m.report
    assert rep.idle_power_w == pytest.approx(4.0)
    assert rep.energy_j == pytest.approx(3.0 * (4 + 10) / 2)
    assert rep.net_energy_j == pytest.approx(rep.energy_j - 4.0 * rep.duration_s)
    d = rep.domain("scripted", "rail")
    assert d.idle_power_w == pytest.approx(4.0)
    assert d.net_energy_j == pytest.approx(d.energy_j - 4.0 * rep.duration_s)


def test_vanishing_meter_closes_the_window_and_flags_it():
    clock = FakeClock(0.0)
    good = ScriptedMeter(clock, power=lambda t: 2.0, name="good")
    bad = ScriptedMeter(clock, power=lambda t: 100.0, name="bad", fail_after=2)
    with measure([good, bad], hz=0, clock=clock) as m:
        for _ in range(4):
            clock.advance(1.0)
            m.sample()
    rep = m.report
    assert "meter_vanished:bad" in rep.flags
    assert rep.duration_s == pytest.approx(4.0)
    assert rep.domain("good", "rail").energy_j == pytest.approx(8.0)
    assert rep.domain("bad", "rail").energy_j == pytest.approx(100.0)  # 1 s seen before it left
    assert rep.domain("bad", "rail").samples == 2


def test_negative_power_is_clamped_and_flagged():
    clock = FakeClock(0.0)
    rep = _run(ScriptedMeter(clock, power=lambda t: -1.0 if t == 1.0 else 4.0), clock, 2).report
    assert rep.energy_j == pytest.approx(0.5 * 4 + 0.5 * 4)
    assert "negative_power_clamped:scripted/rail" in rep.flags


def test_report_is_set_when_the_block_raises():
    clock = FakeClock(0.0)
    h = measure([ScriptedMeter(clock, power=lambda t: 1.0)], hz=0, clock=clock)
    with pytest.raises(RuntimeError):
        with h:
            clock.advance(2.0)
            raise RuntimeError("boom")
    assert isinstance(h.report, EnergyReport) and h.report.energy_j == pytest.approx(2.0)


def test_snapshot_gives_the_window_so_far():
    clock = FakeClock(0.0)
    with measure([ScriptedMeter(clock, power=lambda t: 3.0)], hz=0, clock=clock) as m:
        clock.advance(2.0)
        first = m.snapshot()
        clock.advance(1.0)
        second = m.snapshot()
    assert first.energy_j == pytest.approx(6.0)
    assert second.energy_j == pytest.approx(9.0)
    assert m.report.energy_j == pytest.approx(9.0)


def test_decorator_form_measures_each_call():
    clock = FakeClock(0.0)
    handle = measure([ScriptedMeter(clock, power=lambda t: 5.0)], hz=0, clock=clock)

    @handle
    def work(seconds):
        clock.advance(seconds)
        return "done"

    assert work(2.0) == "done"
    assert handle.report.energy_j == pytest.approx(10.0)
    work(1.0)
    assert handle.report.energy_j == pytest.approx(5.0)


def test_sampler_thread_samples_in_the_background():
    clock = FakeClock(0.0)
    seen = threading.Event()

    class Counting(ScriptedMeter):
        def read(self):
            r = super().read()
            if self.reads >= 5:
                seen.set()
            return r

    meter = Counting(clock, power=lambda t: 1.0)
    with measure([meter], hz=1000, clock=clock) as m:
        assert seen.wait(10), "the sampler thread never sampled"
    assert m.report.samples >= 5


def test_meters_by_name_and_bad_names():
    with pytest.raises(UnknownNameError, match="did you mean 'nvml'"):
        with measure(["nvm"], hz=0):
            pass
    with pytest.raises(MeterUnavailable, match="meter 'rapl' is unavailable"):
        with measure(["rapl"], hz=0):
            pass
    with pytest.raises(ConfigError):
        measure(hz=-1)
    clock = FakeClock()
    with pytest.raises(ConfigError, match="twice"):
        with measure(
            [ScriptedMeter(clock, power=lambda t: 1), ScriptedMeter(clock, power=lambda t: 1)]
        ):
            pass


def test_auto_on_this_machine_is_a_labelled_estimate_or_real_meter():
    with measure(hz=0) as m:
        sum(range(10000))
    rep = m.report
    assert rep.meters
    if rep.meters == ("estimate",):
        assert rep.estimated and rep.method == "estimate"


def test_report_round_trips_through_dict():
    clock = FakeClock(0.0)
    fake = FakePynvml([FakeGpu()])
    from greenllm.meters.nvml import NvmlMeter

    m = NvmlMeter(nvml=fake, clock=clock, env={})
    with measure([m], hz=0, clock=clock, idle_s=0) as h:
        clock.advance(1.0)
        fake.advance(1.0)
    rep = h.report
    assert EnergyReport.from_dict(rep.to_dict()) == rep
    assert rep.energy_j == pytest.approx(60.0)


def test_build_report_with_no_samples_is_zero():
    rep = build_report({"x": [DomainInfo("d", "power")]}, {"x": []}, 0.0, 10.0, 0)
    assert rep.energy_j == 0 and rep.mean_power_w == 0 and rep.domains[0].samples == 0
