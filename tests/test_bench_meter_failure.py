"""A meter that dies mid-benchmark marks its window invalid: the repeat is rerun or its
energy excluded, never counted as 0 J; the warning reaches results.json and the methodology.
emissions.csv sums every measured window in the store. The meter is a ReplayMeter whose
recording ends (the lowest boundary: its read() raises as a vanished device would)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from greenllm.bench import bench
from greenllm.errors import MeterError
from greenllm.measure import TRACE_COLUMNS
from greenllm.meters.replay import ReplayMeter
from greenllm.report.build import write_report
from greenllm.results import BenchResult, DomainEnergy, EnergyReport, StepResult
from greenllm.store import Store
from greenllm.units import J_PER_KWH

J_PER_WINDOW = 10.0


def _trace(tmp_path, n_samples: int):
    """A RAPL-like counter recording: +10 J between consecutive samples."""
    path = tmp_path / "trace.csv"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(TRACE_COLUMNS)
    for i in range(n_samples):
        w.writerow(
            (i * 1.0, "window", "rapl", "package-0", "energy_j", i * J_PER_WINDOW, 1, 0, "counter")
        )
    path.write_text(buf.getvalue())
    return path


def _bench(tiny, meter, repeats=3):
    model, tok = tiny
    return bench(
        model,
        tok,
        {
            "prompts": ["Hello there", "The cat"],
            "max_new_tokens": 3,
            "warmup": 0,
            "repeats": repeats,
            "min_window_s": 0,
        },
        meters=[meter],
        hz=0.0,
        bandwidth_bytes_per_s=1e10,
    )


def test_meter_dies_after_two_windows_excludes_not_zero(tiny, tmp_path):
    # hz=0: a window reads its meter at enter and exit -> 4 samples = 2 whole windows
    res = _bench(tiny, ReplayMeter(_trace(tmp_path, 4)), repeats=3)
    energies = [r["energy_j"] for r in res.per_repeat]
    assert energies[:2] == [J_PER_WINDOW, J_PER_WINDOW] and energies[2] is None
    assert 0.0 not in energies
    tokens = res.per_repeat[0]["output_tokens"]
    # the mean is over the valid windows only: not 2/3 of the truth
    assert res.metrics["energy_per_token_j"] == pytest.approx(J_PER_WINDOW / tokens)
    assert res.metrics["energy_j"] == pytest.approx(J_PER_WINDOW)
    assert res.estimated is False
    assert any("rerun" in w for w in res.warnings)
    assert any(
        "repeat 3" in w and "excluded" in w and "meter_vanished:replay" in w for w in res.warnings
    )
    assert res.to_json()["warnings"] == list(res.warnings)
    assert all(r["e2e_latency_s"] for r in res.per_repeat)  # timings are kept


def test_meter_that_recovers_reruns_the_window(tiny, tmp_path):
    class Flaky(ReplayMeter):
        """Fails once, on the first read of the second window, then works."""

        def read(self):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 3:
                raise MeterError("cannot read energy_uj: No such file or directory")
            return super().read()

    res = _bench(tiny, Flaky(_trace(tmp_path, 20)), repeats=2)
    assert [r["energy_j"] for r in res.per_repeat] == [J_PER_WINDOW, J_PER_WINDOW]
    assert (
        len(res.warnings) == 1
        and "repeat 2" in res.warnings[0]
        and res.warnings[0].endswith("rerun")
    )


def test_meter_dead_from_the_start_is_an_error(tiny, tmp_path):
    with pytest.raises(MeterError, match="failed in every benchmark window"):
        _bench(tiny, ReplayMeter(_trace(tmp_path, 1)), repeats=2)


def _energy(j, dur=2.0, flags=()):
    d = DomainEnergy(
        meter="rapl",
        domain="package-0",
        energy_j=j,
        mean_power_w=j / dur,
        samples=3,
        method="counter",
    )
    return EnergyReport(
        duration_s=dur,
        energy_j=j,
        mean_power_w=j / dur,
        domains=(d,),
        samples=3,
        sampling_hz=10.0,
        method="counter",
        estimated=False,
        meters=("rapl",),
        flags=tuple(flags),
    )


def _store(tmp_path):
    """baseline bench: 3 repeats of 25, 40, 46 J; int8: a step window whose meter died and
    a bench with one excluded repeat."""
    reps = [{"energy_j": e, "duration_s": 2.0} for e in (25.0, 40.0, 46.0)]
    b0 = BenchResult(
        metrics={"energy_per_token_j": 1.0, "energy_per_request_j": 37.0},
        ci95={},
        meter="rapl",
        estimated=False,
        repeats=3,
        energy=_energy(46.0),
        per_repeat=tuple(reps),
    )
    b1 = BenchResult(
        metrics={"energy_per_token_j": 0.8, "energy_per_request_j": 30.0},
        ci95={},
        meter="rapl",
        estimated=False,
        repeats=2,
        energy=_energy(31.0),
        per_repeat=({"energy_j": 31.0, "duration_s": 2.0}, {"energy_j": None, "duration_s": 2.0}),
        warnings=("repeat 2: energy window invalid (meter_vanished:rapl); its energy is excluded",),
    )
    step = StepResult(
        step="quantize",
        method="int8_weight",
        config={},
        duration_s=3.0,
        size_bytes_before=10,
        size_bytes_after=5,
        energy=_energy(7.0, flags=("meter_vanished:rapl", "meter_error:rapl:gone")),
    )
    plan = [
        {"name": "baseline", "variant_key": "v0", "eval_keys": [], "bench_key": "b0", "steps": []},
        {
            "name": "int8",
            "variant_key": "v1",
            "eval_keys": [],
            "bench_key": "b1",
            "steps": [{"quantize": {"method": "int8_weight"}}],
        },
    ]
    recipe = {
        "name": "windows",
        "model": {"id": "m"},
        "workload": {"repeats": 3, "min_window_s": 0},
        "carbon": {"intensity_g_per_kwh": 400.0, "pue": 1.0},
    }
    with Store(tmp_path) as s:
        run = s.begin_run("windows", recipe, plan)
        s.ensure_variant("v0", "baseline", {}, 0, run)
        s.ensure_variant("v1", "int8", {}, 1, run)
        s.add_bench("b0", "v0", b0, run)
        s.add_step("v1", 0, step, run)
        s.add_bench("b1", "v1", b1, run)
        s.finish_run(run, "finished")
    return tmp_path


def test_emissions_csv_sums_every_window_and_warnings_are_reported(tmp_path):
    out = _store(tmp_path)
    write_report(out)
    rows = list(csv.DictReader((out / "emissions.csv").open()))
    total_kwh = sum(float(r["energy_consumed"]) for r in rows)
    with Store(out, create=False) as s:
        in_store = sum(st.energy.energy_j for st in s.steps("v1"))
        for key in ("b0", "b1"):
            in_store += sum(
                r["energy_j"] for r in s.get_bench(key).per_repeat if r["energy_j"] is not None
            )
    assert in_store == 25 + 40 + 46 + 7 + 31
    assert total_kwh * J_PER_KWH == pytest.approx(in_store)
    assert len(rows) == 5  # 3 + 1 windows and the step
    doc = json.loads((out / "results.json").read_text())
    warnings = doc["warnings"]
    assert any("int8: bench repeat 2" in w and "excluded" in w for w in warnings)
    assert any("int8: step 1 (quantize)" in w and "meter_vanished:rapl" in w for w in warnings)
    assert doc["variants"][1]["compression_energy_j"] is None  # unknown, not an undercount
    assert doc["variants"][1]["payback_inferences"] is None
    for w in warnings:
        assert w in doc["methodology"]
    assert "Warnings (2)" in (out / "report.md").read_text()
