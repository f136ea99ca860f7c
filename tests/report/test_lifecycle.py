"""Lifecycle carbon in the report: embodied (ACT estimate of a Jetson board), operational
integrated per window against a recorded intensity series, totals in the SCI shape, the
reference-grid line, the scheduling counterfactual, and the offline-provider cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from greenllm.devices import get_profile
from greenllm.embodied import amortised_g, embodied_for
from greenllm.intensity import load_series_csv, parse_time
from greenllm.report.build import write_report
from greenllm.results import BenchResult, DomainEnergy, EnergyReport
from greenllm.schedule import plan_start, write_decision
from greenllm.store import Store

DATA = Path(__file__).parent.parent / "data" / "intensity"
T0 = parse_time("2026-06-01T12:00:00Z", "t")
N_PROMPTS, TOKENS = 4, 32


def _energy(j, dur, start):
    d = DomainEnergy("tegrastats", "VDD_IN", j, j / dur, 100, "power_integration")
    return EnergyReport(
        duration_s=dur,
        energy_j=j,
        mean_power_w=j / dur,
        domains=(d,),
        samples=100,
        sampling_hz=10.0,
        method="power_integration",
        estimated=False,
        meters=("tegrastats",),
        started_at_unix_s=start,
    )


def _bench(req_j, window_s, start):
    """3 repeats of N_PROMPTS requests each; the last window starts at ``start``; repeat
    start times are not recorded (reconstructed back to back)."""
    win_j = req_j * N_PROMPTS
    row = {
        "energy_j": win_j,
        "duration_s": window_s,
        "energy_per_request_j": req_j,
        "output_tokens": float(TOKENS * N_PROMPTS),
    }
    m = {
        "energy_per_request_j": req_j,
        "energy_per_token_j": req_j / TOKENS,
        "duration_s": window_s,
        "output_tokens": float(TOKENS * N_PROMPTS),
        "e2e_latency_s": window_s / N_PROMPTS,
    }
    return BenchResult(
        metrics=m,
        ci95={},
        meter="tegrastats",
        estimated=False,
        repeats=3,
        workload={"prompts": "builtin:prompts", "n_prompts": N_PROMPTS},
        energy=_energy(win_j, window_s, start),
        per_repeat=(row, row, row),
    )


def _make(tmp_path, carbon):
    plan = [
        {"name": n, "variant_key": f"v{i}", "eval_keys": [], "bench_key": f"b{i}", "steps": []}
        for i, n in enumerate(("baseline", "int8"))
    ]
    recipe = {
        "name": "lifecycle",
        "model": {"id": "m", "dtype": "float32", "device": "cpu"},
        "workload": {"max_new_tokens": TOKENS, "batch_size": 1, "warmup": 0, "repeats": 3},
        "carbon": carbon,
    }
    with Store(tmp_path) as s:
        run = s.begin_run("lifecycle", recipe, plan)
        s.set_environment(
            run,
            hardware={"device_profile": {"name": "jetson-orin-nano-8gb"}},
            software={},
            meters={},
            sampling_hz=10.0,
            idle_s=0.0,
        )
        # the baseline's windows run in the 12:00 period (200 g/kWh), int8's at 13:30 (60)
        for i, (req_j, start) in enumerate(((40.0, T0 + 1200), (8.0, T0 + 5400 + 1200))):
            s.ensure_variant(f"v{i}", plan[i]["name"], {"steps": []}, 0, run)
            s.add_bench(f"b{i}", f"v{i}", _bench(req_j, 10.0, start), run)
        s.finish_run(run, "finished")
    return tmp_path


def _doc(d):
    write_report(d)
    return json.loads((d / "results.json").read_text())


def test_lifecycle_with_a_series_and_embodied_estimate(tmp_path):
    shutil.copy(DATA / "series_day.csv", tmp_path / "series.csv")
    d = _make(
        tmp_path,
        {"region": "FRA", "pue": 1.0, "intensity_series": str(tmp_path / "series.csv")},
    )
    doc = _doc(d)
    base, int8 = doc["variants"]
    # operational: 40 J/request at 200 g/kWh -> per 1,000: 40 kJ / 3.6 MJ x 200
    assert base["operational_g_per_1000_inferences"] == pytest.approx(40e3 / 3.6e6 * 200)
    assert int8["operational_g_per_1000_inferences"] == pytest.approx(8e3 / 3.6e6 * 60)
    assert base["emissions_g_per_1000_inferences"] == base["operational_g_per_1000_inferences"]
    assert base["emissions_g_per_1000_inferences_annual"] != pytest.approx(
        base["operational_g_per_1000_inferences"]
    )
    # every window names its intensity and source; reconstructed starts step back 10 s
    wins = base["bench_windows"]
    assert [w["started_at_unix_s"] for w in wins] == [T0 + 1180, T0 + 1190, T0 + 1200]
    assert all(
        "series.csv" in w["intensity_source"] and "average" in w["intensity_source"] for w in wins
    )
    # embodied: the ACT estimate of the Orin Nano, 2.5 s of device time per inference
    emb = embodied_for(get_profile("jetson-orin-nano-8gb"))
    assert base["embodied_g_per_1000_inferences"] == pytest.approx(amortised_g(emb, 2500.0))
    assert base["total_g_per_1000_inferences"] == pytest.approx(
        base["operational_g_per_1000_inferences"] + base["embodied_g_per_1000_inferences"]
    )
    assert base["sci_g_per_token"] == pytest.approx(
        base["total_g_per_1000_inferences"] / 1000 / TOKENS
    )
    assert doc["lifecycle"]["embodied"]["estimated"] is True
    # on the clean 13:30 grid the embodied share of int8 exceeds its operational share
    assert int8["embodied_share_pct"] > 50 > base["embodied_share_pct"]
    md = (d / "report.md").read_text()
    assert "## Lifecycle carbon (SCI)" in md and "embodied g/1k (estimate)" in md
    assert "MORE than the operational share" in md and "ESTIMATE" in md
    assert "reference grid" in md and "location-based" in md
    assert "Intensity source per window" in doc["methodology"]
    assert "<h2>Lifecycle carbon (SCI)</h2>" in (d / "report.html").read_text()
    assert r"\paragraph{Lifecycle carbon (SCI).}" in (d / "report.tex").read_text()
    import csv

    rows = list(csv.DictReader((d / "emissions.csv").open()))
    base_rows = [r for r in rows if r["experiment_id"].startswith("baseline/bench")]
    assert len(base_rows) == 3
    for r in base_rows:  # each window at its own intensity (the 12:00 period, 200 g/kWh)
        assert float(r["emissions"]) == pytest.approx(160.0 / 3.6e6 * 200 / 1000)


def test_schedule_counterfactual_in_the_report(tmp_path):
    d = _make(tmp_path, {"intensity_g_per_kwh": 100.0})
    series = load_series_csv(DATA / "series_day.csv")
    write_decision(d, plan_start(series, T0, 3 * 3600, 1800, 10.0, expected_from="recipe"))
    doc = _doc(d)
    assert doc["schedule"]["saving_pct"] == pytest.approx(70.0)
    md = (d / "report.md").read_text()
    assert "Carbon-aware start: chosen 2026-06-01T13:30:00Z" in md
    assert "started immediately:" in md and "(-70.0 %)" in md


def test_provider_without_a_recording(tmp_path):
    # no network during the run: nothing recorded; without fallback the figure is unknown
    d = _make(tmp_path, {"region": "GBR", "provider": "uk-national-grid"})
    doc = _doc(d)
    assert doc["variants"][0]["operational_g_per_1000_inferences"] is None
    assert "carbon.fallback: table" in doc["variants"][0]["bench_windows"][0]["intensity_source"]
    # with fallback: the table is used and every window says so
    d2 = _make(
        tmp_path / "fb", {"region": "GBR", "provider": "uk-national-grid", "fallback": "table"}
    )
    doc2 = _doc(d2)
    assert doc2["variants"][0]["operational_g_per_1000_inferences"] == pytest.approx(
        40e3 / 3.6e6 * doc2["carbon"]["intensity_g_per_kwh"]
    )
    assert "fallback" in doc2["variants"][0]["bench_windows"][0]["intensity_source"]


def test_unknown_embodied_stays_unknown(tmp_path):
    d = _make(tmp_path, {"intensity_g_per_kwh": 100.0, "device": "cpu"})
    doc = _doc(d)
    v = doc["variants"][0]
    assert v["embodied_g_per_1000_inferences"] is None and v["total_g_per_1000_inferences"] is None
    assert v["operational_g_per_1000_inferences"] == pytest.approx(40e3 / 3.6e6 * 100)
    assert "unknown" in doc["lifecycle_statement"]
    d2 = _make(
        tmp_path / "u", {"intensity_g_per_kwh": 100.0, "device": "cpu", "embodied_kg_co2e": 100.0}
    )
    v2 = _doc(d2)["variants"][0]
    assert v2["embodied_g_per_1000_inferences"] == pytest.approx(100e3 * 2500 / (4 * 8760 * 3600))
