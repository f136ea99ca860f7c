"""The carbon side of ``greenllm run``: fetch / read the intensity forecast, pick a low-carbon
start within the deadline, wait with a countdown, and after the run record the intensity the
report integrates against (``OUT/intensity_series.csv`` + ``OUT/intensity.json``) and the
scheduling decision (``OUT/schedule.json``). Clock, sleep, echo and the provider client are
arguments so tests inject them; no torch here."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..fsutil import atomic_write


@dataclass
class CarbonPlan:
    out: Path
    forecast: Any = None  # IntensitySeries or None
    forecast_note: str | None = None  # why there is none (provider unreachable + fallback)
    decision: Any = None  # ScheduleDecision or None
    meta: dict[str, Any] = field(default_factory=dict)


def out_dir(recipe: Any, out: Path | None) -> Path:
    from ..runner import slug

    return Path(out or recipe.output or Path("runs") / slug(recipe.name))


def _series_path(recipe: Any, raw: str) -> Path:
    p = Path(raw).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return recipe.base_dir / p


def previous_expectation(out: Path) -> tuple[float, float] | None:
    """(duration_s, mean power W) of the previous run in ``out`` from its results.json: every
    measured window (steps and benchmark repeats), or None when there is none."""
    try:
        doc = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return None
    dur = energy = 0.0
    for v in doc.get("variants") or []:
        for s in v.get("steps") or []:
            if s.get("energy_j") is not None:
                dur += float(s.get("duration_s") or 0.0)
                energy += float(s["energy_j"])
        for w in v.get("bench_windows") or []:
            if w.get("energy_j") is not None:
                dur += float(w.get("duration_s") or 0.0)
                energy += float(w["energy_j"])
    return (dur, energy / dur) if dur > 0 and energy > 0 else None


def plan(
    recipe: Any,
    out: Path,
    when: str,
    deadline: str | None,
    *,
    clock: Callable[[], float] = time.time,
    client: Any = None,
    echo: Callable[[str], None] = print,
) -> CarbonPlan:
    """Everything decided before the run (nothing written yet: a --fresh run moves files)."""
    from ..intensity import IntensityUnavailable, load_series_csv, provider
    from ..schedule import parse_duration, plan_start

    c, sch = recipe.carbon, recipe.schedule
    result = CarbonPlan(out)
    now = clock()
    if c.provider:
        try:
            cl = client or provider(c.provider, c.zone)
            result.forecast = cl.forecast(now)
            result.meta = {"source": result.forecast.source, "kind": "forecast", "at": now}
        except IntensityUnavailable as exc:
            if c.fallback != "table":
                raise
            result.forecast_note = f"{exc} -- using the offline table (carbon.fallback: table)"
            result.meta = {"error": str(exc), "fallback": "table", "at": now}
            echo(f"greenllm: warning: {result.forecast_note}")
    elif c.intensity_series:
        result.forecast = load_series_csv(_series_path(recipe, c.intensity_series))
    if when != "low-carbon":
        return result
    if result.forecast is None:
        if result.forecast_note:
            echo("greenllm: no forecast: starting now")
            return result
        raise ConfigError(
            "--when low-carbon needs a forecast: set carbon.intensity_series (a file) or "
            "carbon.provider in the recipe"
        )
    deadline_s = parse_duration(deadline or sch.deadline, "deadline")
    if sch.expected_duration_s and sch.expected_power_w:
        dur, power, origin = sch.expected_duration_s, sch.expected_power_w, "recipe schedule"
    else:
        prev = previous_expectation(out)
        if prev is None:
            raise ConfigError(
                "schedule: no expected duration and power: set schedule.expected_duration_s "
                "and schedule.expected_power_w, or run once without --when to measure them"
            )
        dur = sch.expected_duration_s or prev[0]
        power = sch.expected_power_w or prev[1]
        origin = f"previous run in {out}"
    try:
        result.decision = plan_start(
            result.forecast,
            now,
            deadline_s,
            dur,
            power,
            pue=c.pue,
            signal=c.signal,
            step_s=sch.step_s,
            expected_from=origin,
        )
    except DataError as exc:
        raise DataError(f"--when low-carbon: {exc}") from None
    echo(f"greenllm: {result.decision.summary()}")
    return result


def wait(
    decision: Any,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    echo: Callable[[str], None] = print,
    tick_s: float = 1.0,
) -> None:
    """The visible countdown to the chosen start (Ctrl-C: ScheduleCancelled)."""
    from ..schedule import countdown_text, wait_until

    last = [-1e18]

    def tick(remaining: float) -> None:
        if last[0] - remaining >= 60 or last[0] < 0 or remaining < 60:
            echo(f"greenllm: {countdown_text(remaining)} (Ctrl-C cancels)")
            last[0] = remaining

    wait_until(decision.start_unix_s, clock=clock, sleep=sleep, tick=tick, tick_s=tick_s)


def record(
    recipe: Any,
    p: CarbonPlan,
    started_unix_s: float,
    finished_unix_s: float,
    *,
    client: Any = None,
    echo: Callable[[str], None] = print,
) -> None:
    """After the run: the intensity the report uses and the scheduling decision."""
    from ..intensity import IntensityUnavailable, provider
    from ..report.lifecycle import RECORDED_META, RECORDED_SERIES
    from ..schedule import DECISION_FILE, write_decision

    c = recipe.carbon
    if c.provider:
        series, meta = p.forecast, dict(p.meta)
        try:  # actuals for the run's window replace the forecast where the provider has them
            cl = client or provider(c.provider, c.zone)
            series = cl.history(started_unix_s - 3600, finished_unix_s + 3600)
            meta = {"source": series.source, "kind": "history", "at": finished_unix_s}
        except IntensityUnavailable as exc:
            if series is not None:
                echo(f"greenllm: note: {exc}; the report uses the forecast fetched before the run")
                meta["history_error"] = str(exc)
            else:
                meta.setdefault("error", str(exc))
        if series is not None:
            atomic_write(p.out / RECORDED_SERIES, series.to_csv())
        else:
            (p.out / RECORDED_SERIES).unlink(missing_ok=True)
        atomic_write(p.out / RECORDED_META, json.dumps(meta, indent=2) + "\n")
    elif c.intensity_series and p.forecast is not None:  # the report finds it offline
        atomic_write(p.out / RECORDED_SERIES, p.forecast.to_csv())
        meta = {"source": p.forecast.source, "kind": "file"}
        atomic_write(p.out / RECORDED_META, json.dumps(meta, indent=2) + "\n")
    if p.decision is not None:
        write_decision(p.out, p.decision)
    else:
        (p.out / DECISION_FILE).unlink(missing_ok=True)  # an older run's decision is stale
