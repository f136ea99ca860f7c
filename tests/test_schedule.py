"""Carbon-aware scheduling from a recorded forecast with an injected clock (no real sleep)."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenllm import schedule as S
from greenllm.errors import ConfigError, DataError
from greenllm.intensity import load_series_csv, parse_time

DATA = Path(__file__).parent / "data" / "intensity"
T0 = parse_time("2026-06-01T12:00:00Z", "t")


def test_parse_duration():
    assert S.parse_duration("8h") == 28800 and S.parse_duration("90m") == 5400
    assert S.parse_duration(45) == 45 and S.parse_duration("1.5d") == 129600
    with pytest.raises(ConfigError, match="deadline"):
        S.parse_duration("soon")


def test_plan_picks_the_cleanest_window_within_the_deadline():
    s = load_series_csv(DATA / "series_day.csv")
    # a 30-minute, 100 W run decided at 12:00 with a 3 h deadline: the 13:30 period (60 g/kWh)
    d = S.plan_start(s, T0, 3 * 3600, 1800, 100.0, step_s=600)
    assert d.start_unix_s == T0 + 5400
    kwh = 100 * 1800 / 3.6e6
    assert d.immediate_g == pytest.approx(kwh * 200)
    assert d.scheduled_g == pytest.approx(kwh * 60)
    assert d.saving_pct == pytest.approx(70.0)
    assert "-70.0 %" in d.summary() and d.wait_s == 5400
    # a deadline that ends before the clean period: the best reachable start
    d2 = S.plan_start(s, T0, 5400, 1800, 100.0)
    assert d2.start_unix_s == T0 + 3600 and d2.scheduled_g == pytest.approx(kwh * 120)
    # deadline shorter than the run: start now, say so
    d3 = S.plan_start(s, T0, 600, 1800, 100.0)
    assert d3.start_unix_s == T0 and d3.saving_pct == 0 and "shorter" in d3.note


def test_forecast_must_cover_now():
    s = load_series_csv(DATA / "series_day.csv")
    with pytest.raises(DataError, match="does not cover"):
        S.plan_start(s, T0 - 3600, 3600 * 8, 1800, 100.0)


def test_wait_until_counts_down_on_an_injected_clock():
    now = [1000.0]
    ticks = []

    def sleep(dt):
        now[0] += dt

    S.wait_until(1003.5, clock=lambda: now[0], sleep=sleep, tick=ticks.append)
    assert now[0] == pytest.approx(1003.5)
    assert ticks == pytest.approx([3.5, 2.5, 1.5, 0.5])
    assert S.countdown_text(3725) == "starting in 1:02:05"


def test_ctrl_c_cancels_cleanly():
    def sleep(dt):
        raise KeyboardInterrupt

    with pytest.raises(S.ScheduleCancelled, match="nothing ran"):
        S.wait_until(10**12, clock=lambda: 0.0, sleep=sleep)


def test_decision_round_trips(tmp_path):
    s = load_series_csv(DATA / "series_day.csv")
    d = S.plan_start(s, T0, 3 * 3600, 1800, 100.0, expected_from="recipe")
    S.write_decision(tmp_path, d)
    back = S.read_decision(tmp_path)
    assert back["start_unix_s"] == d.start_unix_s and back["start_iso"] == "2026-06-01T13:30:00Z"
    (tmp_path / S.DECISION_FILE).write_text("{not json")
    assert S.read_decision(tmp_path) is None
