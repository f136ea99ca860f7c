"""Grid carbon intensity over time: series files, provider clients, per-window emissions.

A series is a list of points ``(t_unix_s, average g/kWh, marginal g/kWh or None)``; each point
holds from its timestamp until the next one (the last holds for one median spacing), as the
providers publish periods (the UK grid: half hours). Files are CSV::

    timestamp,g_per_kwh,marginal_g_per_kwh
    2026-06-01T12:00:00Z,180,
    2026-06-01T12:30:00Z,172,410

(a header is optional; the third column is optional; timestamps are ISO 8601 with a time zone).

The emissions of a window = its energy integrated against the intensity at its timestamps:
power is taken as constant over the window (energy_j / duration_s), so each period the window
overlaps contributes energy x overlap fraction x that period's intensity. ``signal`` picks the
average or the marginal column and every figure names which one it used.

Provider clients (stdlib ``urllib``; ``base_url`` and ``opener`` are constructor arguments so
tests point them at a local server):

- ``uk-national-grid``: the GB carbon-intensity API (api.carbonintensity.org.uk, no key):
  ``/intensity/{from}/fw48h`` (forecast) and ``/intensity/{from}/{to}`` (history with actuals);
- ``electricitymaps``: Electricity Maps v3 (``auth-token`` header from
  ``$ELECTRICITYMAPS_API_KEY``): ``/v3/carbon-intensity/forecast`` and ``/past-range``;
- ``watttime``: WattTime v3 (``/login`` with ``$WATTTIME_USERNAME`` / ``$WATTTIME_PASSWORD``,
  then ``/v3/forecast`` and ``/v3/historical``; ``co2_moer`` is MARGINAL, lbs CO2/MWh).

No network is a normal case: a client raises one ``IntensityUnavailable`` naming the provider,
the cause and the fallback (``carbon.fallback: table``). No torch here.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import statistics
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError, GreenLLMError, UnknownNameError
from .units import J_PER_KWH

G_PER_KWH_PER_LB_PER_MWH = 453.59237 / 1000.0  # 1 lb/MWh = 0.45359237 g/kWh
SIGNALS = ("average", "marginal")


class IntensityUnavailable(GreenLLMError):
    """A grid-intensity provider could not be reached or answered nonsense."""


@dataclass(frozen=True)
class IntensityPoint:
    t_unix_s: float
    g_per_kwh: float | None  # average (location-based)
    marginal_g_per_kwh: float | None = None
    forecast: bool = False  # True: a forecast value, not a measured/actual one


@dataclass(frozen=True)
class IntensitySeries:
    points: tuple[IntensityPoint, ...]
    source: str  # "file path/to.csv", "uk-national-grid (api...)", ...
    zone: str | None = None
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.points:
            raise DataError(f"intensity series from {self.source}: no points")
        pts = tuple(sorted(self.points, key=lambda p: p.t_unix_s))
        object.__setattr__(self, "points", pts)

    @property
    def period_s(self) -> float:
        """The median spacing of the points (how long the last one holds)."""
        gaps = [b.t_unix_s - a.t_unix_s for a, b in zip(self.points, self.points[1:])]
        gaps = [g for g in gaps if g > 0]
        return statistics.median(gaps) if gaps else 1800.0

    @property
    def start_unix_s(self) -> float:
        return self.points[0].t_unix_s

    @property
    def end_unix_s(self) -> float:
        return self.points[-1].t_unix_s + self.period_s

    def has(self, signal: str) -> bool:
        return any(_value(p, signal) is not None for p in self.points)

    def segments(self, signal: str = "average") -> list[tuple[float, float, float]]:
        """(start, end, g/kWh) of every period with a value for ``signal``."""
        out = []
        ends = [p.t_unix_s for p in self.points[1:]] + [self.end_unix_s]
        for p, end in zip(self.points, ends):
            v = _value(p, signal)
            if v is not None and end > p.t_unix_s:
                out.append((p.t_unix_s, end, v))
        return out

    def at(self, t_unix_s: float, signal: str = "average") -> float | None:
        for a, b, v in self.segments(signal):
            if a <= t_unix_s < b:
                return v
        return None

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["timestamp", "g_per_kwh", "marginal_g_per_kwh", "forecast"])
        for p in self.points:
            w.writerow(
                [
                    iso(p.t_unix_s),
                    "" if p.g_per_kwh is None else p.g_per_kwh,
                    "" if p.marginal_g_per_kwh is None else p.marginal_g_per_kwh,
                    "1" if p.forecast else "",
                ]
            )
        return buf.getvalue()


def _value(p: IntensityPoint, signal: str) -> float | None:
    return p.marginal_g_per_kwh if signal == "marginal" else p.g_per_kwh


def iso(t_unix_s: float) -> str:
    return datetime.fromtimestamp(t_unix_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, where: str) -> float:
    """Unix seconds of an ISO 8601 timestamp that carries a time zone (``Z`` or ``+hh:mm``)."""
    s = text.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise DataError(f"{where}: {text[:40]!r} is not an ISO 8601 timestamp") from None
    if dt.tzinfo is None:
        raise DataError(
            f"{where}: timestamp {text[:40]!r} has no time zone; add Z (UTC) or an offset"
        )
    return dt.timestamp()


def _num(text: str, where: str) -> float | None:
    if text is None or not str(text).strip():
        return None
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"{where}: {str(text)[:30]!r} is not a number of gCO2e/kWh") from None
    if not 0 <= v <= 5000:
        raise DataError(f"{where}: {v} gCO2e/kWh is outside 0..5000")
    return v


def load_series_csv(path: str | Path, source: str | None = None) -> IntensitySeries:
    """Read a series file (see the module docstring); errors name the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(
            f"carbon.intensity_series: cannot read {str(p)!r}: {exc.strerror}"
        ) from None
    points = []
    for i, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if i == 1 and row[0].strip().lower() in ("timestamp", "time", "datetime"):
            continue
        where = f"{p.name}:{i}"
        if len(row) < 2:
            raise DataError(f"{where}: expected 'timestamp,g_per_kwh[,marginal_g_per_kwh]'")
        points.append(
            IntensityPoint(
                parse_time(row[0], where),
                _num(row[1], where),
                _num(row[2], where) if len(row) > 2 else None,
                len(row) > 3 and row[3].strip() in ("1", "true", "forecast"),
            )
        )
    if not points:
        raise DataError(f"carbon.intensity_series: {str(p)!r} holds no data rows")
    return IntensitySeries(tuple(points), source or f"file {p.name}")


# ------------------------------------------------------------------- per-window emissions


@dataclass(frozen=True)
class WindowEmissions:
    emissions_g: float
    mean_g_per_kwh: float  # energy-weighted over the window
    signal: str
    source: str
    covered_fraction: float  # of the window's duration that the series covered


def window_emissions(
    energy_j: float,
    start_unix_s: float,
    duration_s: float,
    series: IntensitySeries,
    *,
    pue: float = 1.0,
    signal: str = "average",
) -> WindowEmissions:
    """Emissions of a window of ``energy_j`` from ``start_unix_s`` for ``duration_s`` s.

    Raises DataError when the series does not cover the whole window (the caller decides
    whether a fallback is allowed). A window of zero duration takes the intensity at its
    start."""
    if signal not in SIGNALS:
        raise ConfigError(f"carbon.signal: {signal!r} is not one of {', '.join(SIGNALS)}")
    if energy_j < 0 or duration_s < 0:
        raise ConfigError("energy_j and duration_s must be >= 0")
    if duration_s == 0:
        v = series.at(start_unix_s, signal)
        if v is None:
            raise DataError(_gap(series, start_unix_s, start_unix_s, signal))
        return WindowEmissions(energy_j / J_PER_KWH * v * pue, v, signal, series.source, 1.0)
    end = start_unix_s + duration_s
    covered = 0.0
    weighted = 0.0
    for a, b, v in series.segments(signal):
        lo, hi = max(a, start_unix_s), min(b, end)
        if hi > lo:
            covered += hi - lo
            weighted += (hi - lo) * v
    # unix times near 1.8e9 s carry ~2e-7 s of float rounding: allow a millisecond
    if duration_s - covered > 1e-3:
        raise DataError(_gap(series, start_unix_s, end, signal))
    frac = min(1.0, covered / duration_s)
    mean = weighted / covered
    return WindowEmissions(energy_j / J_PER_KWH * mean * pue, mean, signal, series.source, frac)


def _gap(series: IntensitySeries, start: float, end: float, signal: str) -> str:
    return (
        f"the {signal} intensity series ({series.source}, {iso(series.start_unix_s)} to "
        f"{iso(series.end_unix_s)}) does not cover the window {iso(start)} to {iso(end)}"
    )


def reference_intensity() -> tuple[float, str]:
    """The world-average grid intensity (g/kWh) and its source: the generation-weighted mean
    of codecarbon's packaged country table (carbon_intensity x total_TWh per country)."""
    from . import carbon

    table, version = carbon._energy_mix()
    num = den = 0.0
    years = set()
    for row in table.values():
        ci, twh = row.get("carbon_intensity"), row.get("total_TWh")
        if isinstance(ci, (int, float)) and isinstance(twh, (int, float)) and twh > 0:
            num += ci * twh
            den += twh
            if row.get("year"):
                years.add(int(row["year"]))
    if den <= 0:
        raise DataError("codecarbon's table has no generation data for a world average")
    yrs = f", data years {min(years)}-{max(years)}" if years else ""
    return num / den, (
        f"generation-weighted mean of codecarbon {version} global_energy_mix.json "
        f"({len(table)} countries{yrs})"
    )


# ------------------------------------------------------------------------ providers

Opener = Any  # callable(urllib.request.Request, timeout=) -> response with .read()


def _default_opener(req: urllib.request.Request, timeout: float) -> Any:
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (https / test http)


class _Client:
    name = ""
    signal = "average"
    fix = ""

    def __init__(self, base_url: str, opener: Opener | None, timeout_s: float):
        self.base_url = base_url.rstrip("/")
        self.opener = opener or _default_opener
        self.timeout_s = float(timeout_s)

    def forecast(self, start_unix_s: float) -> IntensitySeries:
        """The provider's forecast from ``start_unix_s`` on."""
        raise NotImplementedError

    def history(self, start_unix_s: float, end_unix_s: float) -> IntensitySeries:
        """Measured (or best-known) intensity between the two times."""
        raise NotImplementedError

    def _fail(self, why: str) -> IntensityUnavailable:
        return IntensityUnavailable(
            f"grid intensity from {self.name} ({self.base_url}) unavailable: {why}; "
            "check the network (or the key), give carbon.intensity_series FILE, or allow the "
            "offline table with carbon.fallback: table"
        )

    def _get(self, path: str, query: dict[str, str] | None = None, headers=None) -> Any:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, headers={"Accept": "application/json", **(headers or {})})
        try:
            with self.opener(req, timeout=self.timeout_s) as resp:
                raw = resp.read(8 * 1024 * 1024)
        except urllib.error.HTTPError as exc:
            hint = " (the key was refused)" if exc.code in (401, 403) else ""
            raise self._fail(f"HTTP {exc.code} {exc.reason}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise self._fail(f"no connection ({str(reason)[:120]})") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._fail("the answer is not JSON") from None

    def _series(self, points: list[IntensityPoint], zone: str | None) -> IntensitySeries:
        if not points:
            raise self._fail("the answer holds no intensity values")
        return IntensitySeries(tuple(points), f"{self.name} ({self.base_url})", zone)


class UKNationalGrid(_Client):
    """GB national carbon intensity (average), half-hourly; no key."""

    name = "uk-national-grid"
    DEFAULT_URL = "https://api.carbonintensity.org.uk"

    def __init__(
        self,
        zone: str | None = None,
        *,
        base_url: str | None = None,
        opener=None,
        timeout_s: float = 10.0,
        env=None,
    ):
        super().__init__(base_url or self.DEFAULT_URL, opener, timeout_s)
        self.zone = zone or "GB"

    @staticmethod
    def _stamp(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")

    def _parse(self, doc: Any) -> list[IntensityPoint]:
        rows = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(rows, list):
            raise self._fail("the answer has no 'data' list")
        out = []
        for r in rows:
            try:
                t = parse_time(r["from"], self.name)
                it = r.get("intensity") or {}
                actual, fc = it.get("actual"), it.get("forecast")
            except (KeyError, TypeError, AttributeError, DataError):
                raise self._fail("a 'data' entry lacks 'from' / 'intensity'") from None
            value = actual if actual is not None else fc
            if value is None:
                continue
            out.append(IntensityPoint(t, float(value), None, actual is None))
        return out

    def forecast(self, start_unix_s: float) -> IntensitySeries:
        doc = self._get(f"/intensity/{self._stamp(start_unix_s)}/fw48h")
        return self._series(self._parse(doc), self.zone)

    def history(self, start_unix_s: float, end_unix_s: float) -> IntensitySeries:
        doc = self._get(f"/intensity/{self._stamp(start_unix_s)}/{self._stamp(end_unix_s)}")
        return self._series(self._parse(doc), self.zone)


class ElectricityMaps(_Client):
    """Electricity Maps v3 carbon intensity (average, lifecycle) of a zone; key from env."""

    name = "electricitymaps"
    DEFAULT_URL = "https://api.electricitymap.org"
    ENV_KEY = "ELECTRICITYMAPS_API_KEY"

    def __init__(
        self,
        zone: str | None = None,
        *,
        base_url: str | None = None,
        opener=None,
        timeout_s: float = 10.0,
        env=None,
    ):
        super().__init__(base_url or self.DEFAULT_URL, opener, timeout_s)
        if not zone:
            raise ConfigError("carbon.zone: electricitymaps needs a zone, e.g. DE or US-CAL-CISO")
        self.zone = zone
        self.key = (env if env is not None else os.environ).get(self.ENV_KEY)
        if not self.key:
            raise ConfigError(f"carbon.provider electricitymaps: set ${self.ENV_KEY} to your key")

    def _parse(self, rows: Any) -> list[IntensityPoint]:
        if not isinstance(rows, list):
            raise self._fail("the answer has no intensity list")
        out = []
        for r in rows:
            try:
                t = parse_time(r["datetime"], self.name)
                v = r["carbonIntensity"]
            except (KeyError, TypeError, DataError):
                raise self._fail("an entry lacks 'datetime' / 'carbonIntensity'") from None
            if v is not None:
                out.append(IntensityPoint(t, float(v), None, False))
        return out

    def forecast(self, start_unix_s: float) -> IntensitySeries:
        doc = self._get(
            "/v3/carbon-intensity/forecast", {"zone": self.zone}, {"auth-token": self.key}
        )
        pts = [
            IntensityPoint(p.t_unix_s, p.g_per_kwh, None, True)
            for p in self._parse((doc or {}).get("forecast"))
        ]
        return self._series(pts, self.zone)

    def history(self, start_unix_s: float, end_unix_s: float) -> IntensitySeries:
        doc = self._get(
            "/v3/carbon-intensity/past-range",
            {"zone": self.zone, "start": iso(start_unix_s), "end": iso(end_unix_s)},
            {"auth-token": self.key},
        )
        return self._series(self._parse((doc or {}).get("data")), self.zone)


class WattTime(_Client):
    """WattTime v3: ``co2_moer`` (marginal, default) or ``co2_aoer`` (average) of a region."""

    name = "watttime"
    DEFAULT_URL = "https://api.watttime.org"
    ENV_USER, ENV_PASSWORD = "WATTTIME_USERNAME", "WATTTIME_PASSWORD"

    def __init__(
        self,
        zone: str | None = None,
        *,
        base_url: str | None = None,
        opener=None,
        timeout_s: float = 10.0,
        env=None,
        signal_type: str = "co2_moer",
    ):
        super().__init__(base_url or self.DEFAULT_URL, opener, timeout_s)
        if not zone:
            raise ConfigError("carbon.zone: watttime needs a region, e.g. CAISO_NORTH")
        e = env if env is not None else os.environ
        self.zone, self.user, self.password = zone, e.get(self.ENV_USER), e.get(self.ENV_PASSWORD)
        if not self.user or not self.password:
            raise ConfigError(
                f"carbon.provider watttime: set ${self.ENV_USER} and ${self.ENV_PASSWORD}"
            )
        if signal_type not in ("co2_moer", "co2_aoer"):
            raise ConfigError(f"watttime signal_type {signal_type!r}: use co2_moer or co2_aoer")
        self.signal_type = signal_type
        self.signal = "marginal" if signal_type == "co2_moer" else "average"
        self._token: str | None = None

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            doc = self._get("/login", None, {"Authorization": f"Basic {basic}"})
            token = doc.get("token") if isinstance(doc, dict) else None
            if not isinstance(token, str):
                raise self._fail("login returned no token")
            self._token = token
        return {"Authorization": f"Bearer {self._token}"}

    def _parse(self, doc: Any, forecast: bool) -> list[IntensityPoint]:
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise self._fail("the answer has no 'data' list")
        units = str((doc.get("meta") or {}).get("units") or "lbs_co2_per_mwh")
        scale = G_PER_KWH_PER_LB_PER_MWH if units.startswith("lbs") else 1.0
        out = []
        for r in doc["data"]:
            try:
                t = parse_time(r["point_time"], self.name)
                v = float(r["value"]) * scale
            except (KeyError, TypeError, ValueError, DataError):
                raise self._fail("an entry lacks 'point_time' / 'value'") from None
            if self.signal == "marginal":
                out.append(IntensityPoint(t, None, v, forecast))
            else:
                out.append(IntensityPoint(t, v, None, forecast))
        return out

    def forecast(self, start_unix_s: float) -> IntensitySeries:
        q = {"region": self.zone, "signal_type": self.signal_type}
        return self._series(
            self._parse(self._get("/v3/forecast", q, self._auth()), True), self.zone
        )

    def history(self, start_unix_s: float, end_unix_s: float) -> IntensitySeries:
        q = {
            "region": self.zone,
            "signal_type": self.signal_type,
            "start": iso(start_unix_s),
            "end": iso(end_unix_s),
        }
        return self._series(
            self._parse(self._get("/v3/historical", q, self._auth()), False), self.zone
        )


PROVIDERS: dict[str, Any] = {c.name: c for c in (UKNationalGrid, ElectricityMaps, WattTime)}


def provider(name: str, zone: str | None = None, **kwargs: Any) -> _Client:
    """A provider client by name (``uk-national-grid``, ``electricitymaps``, ``watttime``)."""
    try:
        cls = PROVIDERS[name]
    except KeyError:
        from .registry import did_you_mean

        known = sorted(PROVIDERS)
        raise UnknownNameError(
            "intensity provider", name, known, did_you_mean(name, known)
        ) from None
    return cls(zone, **kwargs)


__all__ = [
    "IntensityPoint",
    "IntensitySeries",
    "IntensityUnavailable",
    "PROVIDERS",
    "WindowEmissions",
    "load_series_csv",
    "provider",
    "reference_intensity",
    "window_emissions",
]
