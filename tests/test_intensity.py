"""Time-resolved intensity: the series file, per-window integration, and the provider clients
against a local HTTP server replaying recorded answers (no test reaches the internet)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from pathlib import Path

import pytest

from greenllm import intensity as I
from greenllm.errors import ConfigError, DataError

DATA = Path(__file__).parent / "data" / "intensity"
T0 = I.parse_time("2026-06-01T12:00:00Z", "t")


def test_series_file_and_lookup():
    s = I.load_series_csv(DATA / "series_day.csv")
    assert len(s.points) == 6 and s.period_s == 1800
    assert s.at(T0 + 10) == 200 and s.at(T0 + 1800) == 180
    assert s.at(T0 + 10, "marginal") == 450
    assert s.at(T0 - 1) is None and s.end_unix_s == T0 + 6 * 1800


def test_series_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "s.csv"
    bad.write_text("timestamp,g_per_kwh\n2026-06-01T12:00:00,200\n")
    with pytest.raises(DataError, match=r"s.csv:2.*time zone"):
        I.load_series_csv(bad)
    bad.write_text("2026-06-01T12:00:00Z,lots\n")
    with pytest.raises(DataError, match=r"s.csv:1.*not a number"):
        I.load_series_csv(bad)


def test_window_integration_splits_energy_over_periods():
    s = I.load_series_csv(DATA / "series_day.csv")
    # 3.6 MJ = 1 kWh over one hour starting 12:15: 15 min at 200, 30 at 180, 15 at 120
    w = I.window_emissions(3.6e6, T0 + 900, 3600, s)
    assert w.emissions_g == pytest.approx(0.25 * 200 + 0.5 * 180 + 0.25 * 120)
    assert w.mean_g_per_kwh == pytest.approx(170.0) and w.signal == "average"
    m = I.window_emissions(3.6e6, T0 + 900, 3600, s, signal="marginal", pue=1.5)
    assert m.emissions_g == pytest.approx((0.25 * 450 + 0.5 * 430 + 0.25 * 400) * 1.5)
    with pytest.raises(DataError, match="does not cover"):
        I.window_emissions(1.0, T0 - 60, 120, s)


def test_reference_intensity_is_the_generation_weighted_world_mean():
    pytest.importorskip("codecarbon")
    value, source = I.reference_intensity()
    assert 300 < value < 600 and "generation-weighted" in source


class _Replay(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.seen.append((self.path, dict(self.headers)))
        path = self.path.split("?")[0]
        for prefix, (status, body, check) in self.routes.items():
            if path.startswith(prefix):
                if check and not check(self.headers):
                    status, body = 401, {"error": "unauthorized"}
                raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def replay():
    _Replay.routes, _Replay.seen = {}, []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Replay
    srv.shutdown()
    srv.server_close()
    th.join(5)


def _load(name):
    return json.loads((DATA / name).read_text())


def test_uk_national_grid_forecast(replay):
    url, h = replay
    h.routes["/intensity/"] = (200, _load("uk_fw48h.json"), None)
    s = I.UKNationalGrid(base_url=url).forecast(T0)
    assert h.seen[0][0] == "/intensity/2026-06-01T12:00Z/fw48h"
    assert [p.g_per_kwh for p in s.points] == [198, 180, 120, 60, 90, 210]  # actual wins
    assert [p.forecast for p in s.points][:2] == [False, True]
    assert s.zone == "GB" and "uk-national-grid" in s.source


def test_electricitymaps_sends_the_key_and_parses(replay):
    url, h = replay
    key_ok = lambda hd: hd.get("auth-token") == "k-123"  # noqa: E731
    h.routes["/v3/carbon-intensity/forecast"] = (
        200,
        _load("electricitymaps_forecast.json"),
        key_ok,
    )
    h.routes["/v3/carbon-intensity/past-range"] = (
        200,
        _load("electricitymaps_past_range.json"),
        key_ok,
    )
    c = I.ElectricityMaps("DE", base_url=url, env={"ELECTRICITYMAPS_API_KEY": "k-123"})
    assert [p.g_per_kwh for p in c.forecast(T0).points] == [410, 380, 300]
    hist = c.history(T0, T0 + 7200)
    assert [p.g_per_kwh for p in hist.points] == [402, 376]
    assert "zone=DE" in h.seen[-1][0] and "start=2026-06-01T12%3A00%3A00Z" in h.seen[-1][0]
    bad = I.ElectricityMaps("DE", base_url=url, env={"ELECTRICITYMAPS_API_KEY": "wrong"})
    with pytest.raises(I.IntensityUnavailable, match="HTTP 401.*key was refused"):
        bad.forecast(T0)
    with pytest.raises(ConfigError, match="ELECTRICITYMAPS_API_KEY"):
        I.ElectricityMaps("DE", base_url=url, env={})


def test_watttime_logs_in_and_converts_lbs_per_mwh(replay):
    url, h = replay
    basic = "Basic " + base64.b64encode(b"ann:pw").decode()
    h.routes["/login"] = (
        200,
        _load("watttime_login.json"),
        lambda hd: hd.get("Authorization") == basic,
    )
    h.routes["/v3/forecast"] = (
        200,
        _load("watttime_forecast.json"),
        lambda hd: hd.get("Authorization") == "Bearer recorded-test-token",
    )
    env = {"WATTTIME_USERNAME": "ann", "WATTTIME_PASSWORD": "pw"}
    c = I.WattTime("CAISO_NORTH", base_url=url, env=env)
    s = c.forecast(T0)
    assert c.signal == "marginal" and s.points[0].g_per_kwh is None
    assert s.points[0].marginal_g_per_kwh == pytest.approx(900 * 0.45359237)
    assert s.period_s == 300


def test_no_network_is_one_clear_error():
    # a port on 127.0.0.1 nobody listens on: connection refused, like a machine offline
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    c = I.UKNationalGrid(base_url=f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(I.IntensityUnavailable) as exc:
        c.forecast(T0)
    msg = str(exc.value)
    assert "no connection" in msg and "carbon.fallback: table" in msg and "\n" not in msg


def test_malformed_answer(replay):
    url, h = replay
    h.routes["/intensity/"] = (200, b"<html>", None)
    with pytest.raises(I.IntensityUnavailable, match="not JSON"):
        I.UKNationalGrid(base_url=url).forecast(T0)
    with pytest.raises(Exception, match="unknown intensity provider"):
        I.provider("uk-grid")


def test_recipe_carbon_fields_are_checked():
    from greenllm.recipe import load_recipe

    base = {"schema_version": 1, "name": "c", "model": "m"}
    bad = [
        ({"region": "GBR", "provider": "uk-grid"}, "did you mean 'uk-national-grid'"),
        ({"region": "DEU", "provider": "electricitymaps"}, "needs a zone"),
        ({"region": "GBR", "accounting": "market"}, "contractual intensity"),
        ({"region": "GBR", "intensity_series": "a.csv", "provider": "watttime"}, "not both"),
        ({"region": "GBR", "utilisation": 2}, "fraction"),
        ({"region": "GBR", "device": "jetson-orin-nan"}, "jetson-orin-nano"),
    ]
    for carbon, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            load_recipe({**base, "carbon": carbon})
    r = load_recipe(
        {
            **base,
            "carbon": {"region": "GBR", "provider": "uk-national-grid", "fallback": "table"},
            "schedule": {"when": "low-carbon", "deadline": "6h"},
        }
    )
    assert r.schedule.deadline == "6h" and load_recipe(r.to_dict()).schedule == r.schedule
    with pytest.raises(ConfigError, match="deadline"):
        load_recipe({**base, "carbon": {"region": "GBR"}, "schedule": {"deadline": "soon"}})


def test_short_window_at_real_unix_times():
    # a 0.53 s window at 2026 timestamps: float rounding of start + duration must not read
    # as a gap in the series
    t = 1796182876.0
    s = I.IntensitySeries((I.IntensityPoint(t, 100.0), I.IntensityPoint(t + 1800, 250.0)), "t")
    w = I.window_emissions(10.0, t + 11.3172817, 0.5317076309997901, s)
    assert w.mean_g_per_kwh == pytest.approx(100.0) and w.covered_fraction == pytest.approx(1.0)
