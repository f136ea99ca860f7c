"""`greenllm run --when low-carbon`: the plan from a recorded forecast (file or provider), the
countdown on an injected clock, Ctrl-C, the provider offline with and without the fallback,
and what is recorded for the report. The runner itself is replaced by a stand-in: these tests
are about what happens before and after it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from greenllm.cli import carbon_run as CR
from greenllm.errors import ConfigError
from greenllm.intensity import IntensityUnavailable, load_series_csv, parse_time
from greenllm.recipe import load_recipe

DATA = Path(__file__).parent / "data" / "intensity"
T0 = parse_time("2026-06-01T12:00:00Z", "t")


def _recipe(tmp_path, carbon, schedule=None):
    shutil.copy(DATA / "series_day.csv", tmp_path / "series.csv")
    data = {
        "schema_version": 1,
        "name": "sched",
        "model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "carbon": carbon,
    }
    if schedule:
        data["schedule"] = schedule
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


class _Client:
    """A provider at the lowest boundary the CLI uses: forecast / history, or offline."""

    def __init__(self, offline=False):
        self.offline, self.calls = offline, []

    def forecast(self, t):
        self.calls.append(("forecast", t))
        if self.offline:
            raise IntensityUnavailable(
                "grid intensity from uk-national-grid unavailable: no connection"
            )
        return load_series_csv(DATA / "series_day.csv", source="uk-national-grid (replay)")

    def history(self, a, b):
        self.calls.append(("history", a, b))
        raise IntensityUnavailable("no connection")


def test_plan_from_a_series_file_then_wait_on_an_injected_clock(tmp_path):
    r = _recipe(
        tmp_path,
        {"region": "GBR", "intensity_series": "series.csv"},
        {"when": "low-carbon", "expected_duration_s": 1800, "expected_power_w": 10},
    )
    msgs: list[str] = []
    p = CR.plan(r, tmp_path / "out", "low-carbon", "3h", clock=lambda: T0, echo=msgs.append)
    assert p.decision.start_unix_s == T0 + 5400 and p.decision.saving_pct == pytest.approx(70)
    assert "started immediately" in msgs[0] and p.decision.expected_from == "recipe schedule"
    now = [T0]

    def sleep(dt):
        now[0] += dt

    CR.wait(p.decision, clock=lambda: now[0], sleep=sleep, echo=msgs.append, tick_s=600)
    assert now[0] == pytest.approx(T0 + 5400)
    assert any("starting in 1:30:00" in m for m in msgs)
    CR.record(r, p, T0 + 5400, T0 + 7200)
    saved = json.loads((tmp_path / "out" / "schedule.json").read_text())
    assert saved["start_iso"] == "2026-06-01T13:30:00Z"


def test_expected_duration_and_power_from_the_previous_run(tmp_path):
    r = _recipe(tmp_path, {"region": "GBR", "intensity_series": str(tmp_path / "series.csv")})
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="expected_duration_s"):
        CR.plan(r, out, "low-carbon", "3h", clock=lambda: T0, echo=lambda m: None)
    out.mkdir()
    prev = {
        "variants": [
            {
                "steps": [{"energy_j": 600.0, "duration_s": 60.0}],
                "bench_windows": [{"energy_j": 1200.0, "duration_s": 120.0}],
            }
        ]
    }
    (out / "results.json").write_text(json.dumps(prev))
    assert CR.previous_expectation(out) == (180.0, 10.0)
    p = CR.plan(r, out, "low-carbon", None, clock=lambda: T0, echo=lambda m: None)
    assert p.decision.duration_s == 180 and p.decision.power_w == 10
    assert "previous run" in p.decision.expected_from


def test_provider_offline_without_fallback_fails_before_anything_runs(tmp_path):
    r = _recipe(tmp_path, {"region": "GBR", "provider": "uk-national-grid"})
    with pytest.raises(IntensityUnavailable, match="no connection"):
        CR.plan(r, tmp_path / "o", "low-carbon", "8h", clock=lambda: T0, client=_Client(True))


def test_provider_offline_with_fallback_runs_now_and_the_report_says_so(tmp_path):
    r = _recipe(tmp_path, {"region": "GBR", "provider": "uk-national-grid", "fallback": "table"})
    msgs: list[str] = []
    out = tmp_path / "o"
    out.mkdir()
    p = CR.plan(
        r, out, "low-carbon", "8h", clock=lambda: T0, client=_Client(True), echo=msgs.append
    )
    assert p.decision is None and "offline table" in msgs[0] and "starting now" in msgs[1]
    CR.record(r, p, T0, T0 + 60, client=_Client(True), echo=msgs.append)
    meta = json.loads((out / "intensity.json").read_text())
    assert meta["fallback"] == "table" and "no connection" in meta["error"]
    assert not (out / "intensity_series.csv").exists()


def test_provider_forecast_is_recorded_when_history_is_unavailable(tmp_path):
    r = _recipe(
        tmp_path,
        {"region": "GBR", "provider": "uk-national-grid"},
        {"expected_duration_s": 1800, "expected_power_w": 10},
    )
    out = tmp_path / "o"
    out.mkdir()
    cl = _Client()
    p = CR.plan(r, out, "low-carbon", "3h", clock=lambda: T0, client=cl, echo=lambda m: None)
    assert p.decision.start_unix_s == T0 + 5400
    CR.record(r, p, T0 + 5400, T0 + 7200, client=cl, echo=lambda m: None)
    assert [c[0] for c in cl.calls] == ["forecast", "history"]
    assert load_series_csv(out / "intensity_series.csv").at(T0 + 5400) == 60
    meta = json.loads((out / "intensity.json").read_text())
    assert meta["kind"] == "forecast" and "history_error" in meta


def test_cli_options_are_checked_and_ctrl_c_cancels(tmp_path, monkeypatch):
    from greenllm.cli import run as cli_run

    r = _recipe(tmp_path, {"region": "GBR"})
    ran = []
    fake_run = lambda *a, **k: ran.append(a) or SimpleNamespace(out_dir=tmp_path)  # noqa: E731
    with pytest.raises(ConfigError, match="--when"):
        cli_run._run_with_carbon(fake_run, r.source, None, True, True, "later", None)
    with pytest.raises(ConfigError, match="needs a forecast"):
        cli_run._run_with_carbon(fake_run, r.source, None, True, True, "low-carbon", "8h")
    assert not ran
    r2 = _recipe(
        tmp_path,
        {"region": "GBR", "intensity_series": "series.csv"},
        {"expected_duration_s": 1800, "expected_power_w": 10},
    )
    monkeypatch.setattr("time.time", lambda: T0)

    def interrupted(dt):
        raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", interrupted)
    import typer

    with pytest.raises(typer.Exit) as exc:
        cli_run._run_with_carbon(
            fake_run, r2.source, tmp_path / "o", True, True, "low-carbon", "3h"
        )
    assert exc.value.exit_code == 130 and not ran


def test_greenllm_run_low_carbon_end_to_end_on_the_tiny_model(tmp_path):
    """The real runner, CLI and report: a series around now whose cleanest window is now (so
    nothing sleeps), every window integrated against it, the decision in the report."""
    pytest.importorskip("torch")
    import time as _time

    import yaml
    from test_runner import make_tiny_recipe

    from greenllm.cli import main
    from greenllm.intensity import iso

    now = _time.time()
    start = now - 3600
    rows = ["timestamp,g_per_kwh"] + [
        f"{iso(start + i * 1800)},{v}" for i, v in enumerate((300, 300, 100, 250, 400, 400, 400))
    ]
    (tmp_path / "grid.csv").write_text("\n".join(rows) + "\n")
    recipe = make_tiny_recipe(tmp_path, variants={}, repeats=2)
    recipe["carbon"] = {
        "intensity_g_per_kwh": 400.0,
        "intensity_series": "grid.csv",
        "embodied_kg_co2e": 100.0,
    }
    recipe["schedule"] = {"expected_duration_s": 60, "expected_power_w": 20, "step_s": 600}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    # now is the start of the 100 g/kWh period: the best start is now, nothing waits
    assert (
        main(
            [
                "run",
                str(path),
                "--out",
                str(out),
                "--quiet",
                "--when",
                "low-carbon",
                "--deadline",
                "1h",
            ]
        )
        == 0
    )
    doc = json.loads((out / "results.json").read_text())
    assert doc["schedule"]["saving_pct"] == 0.0 and doc["schedule"]["wait_s"] == 0
    base = doc["variants"][0]
    assert all(w["intensity_g_per_kwh"] == 100 for w in base["bench_windows"])
    assert base["operational_g_per_1000_inferences"] is not None
    assert base["total_g_per_1000_inferences"] > base["operational_g_per_1000_inferences"]
    assert (out / "intensity_series.csv").exists() and "Carbon-aware start" in (
        out / "report.md"
    ).read_text()
