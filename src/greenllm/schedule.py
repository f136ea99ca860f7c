"""Carbon-aware scheduling: from a forecast, the start time (within a deadline) that minimises a
run's expected emissions; a countdown wait with an injected clock; the decision as JSON.

The run is modelled as ``duration_s`` at a constant ``power_w``; its expected emissions at a
start time are that energy integrated against the forecast (``intensity.window_emissions``).
Candidate starts are now, every period boundary of the forecast and a grid of ``step_s``, all
such that the run ends by ``now + deadline_s`` and lies inside the forecast. The decision
records the counterfactual (started immediately) next to the chosen start, so the report can say
"started immediately: X g; scheduled: Y g (-Z %)". No torch; stdlib only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError, GreenLLMError
from .intensity import IntensitySeries, iso, window_emissions

DECISION_FILE = "schedule.json"
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$")
_UNIT_S = {"s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


class ScheduleCancelled(GreenLLMError):
    """The wait for the scheduled start was interrupted (Ctrl-C); nothing was run."""

    exit_code = 130


def parse_duration(text: str | float | int, field: str = "deadline") -> float:
    """Seconds of ``8h``, ``90m``, ``45s``, ``1.5d`` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _DURATION_RE.match(str(text))
        if not m:
            raise ConfigError(f"{field}: {str(text)[:30]!r} is not a duration such as 8h, 90m, 45s")
        value = float(m.group(1)) * _UNIT_S[m.group(2)]
    if value <= 0:
        raise ConfigError(f"{field}: must be > 0")
    return value


@dataclass(frozen=True)
class ScheduleDecision:
    decided_at_unix_s: float
    start_unix_s: float
    deadline_unix_s: float
    duration_s: float
    power_w: float
    immediate_g: float
    scheduled_g: float
    saving_pct: float  # (immediate - scheduled) / immediate * 100
    signal: str
    source: str
    expected_from: str  # where duration and power came from
    note: str = ""

    @property
    def wait_s(self) -> float:
        return max(0.0, self.start_unix_s - self.decided_at_unix_s)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["wait_s"] = self.wait_s
        d["start_iso"] = iso(self.start_unix_s)
        d["deadline_iso"] = iso(self.deadline_unix_s)
        return d

    def summary(self) -> str:
        return (
            f"started immediately: {self.immediate_g:.3g} g; scheduled at "
            f"{iso(self.start_unix_s)}: {self.scheduled_g:.3g} g (-{self.saving_pct:.1f} %)"
        )


def plan_start(
    series: IntensitySeries,
    now_unix_s: float,
    deadline_s: float,
    duration_s: float,
    power_w: float,
    *,
    pue: float = 1.0,
    signal: str = "average",
    step_s: float = 300.0,
    expected_from: str = "",
) -> ScheduleDecision:
    """The start in [now, now + deadline - duration] with the lowest expected emissions; ties go
    to the earliest start. Raises DataError when the forecast does not cover starting now."""
    if duration_s <= 0 or power_w <= 0:
        raise ConfigError("schedule: the expected duration and power must be > 0")
    energy_j = duration_s * power_w

    def cost(t: float) -> float | None:
        try:
            return window_emissions(
                energy_j, t, duration_s, series, pue=pue, signal=signal
            ).emissions_g
        except DataError:
            return None

    immediate = cost(now_unix_s)
    if immediate is None:
        raise DataError(
            f"schedule: the forecast ({series.source}, {iso(series.start_unix_s)} to "
            f"{iso(series.end_unix_s)}) does not cover a {duration_s:.0f} s run starting now "
            f"({iso(now_unix_s)})"
        )
    deadline = now_unix_s + deadline_s
    latest = min(deadline, series.end_unix_s) - duration_s
    note = ""
    if deadline_s < duration_s:
        note = "the deadline is shorter than the run: started immediately"
    candidates = {now_unix_s}
    if latest > now_unix_s:
        candidates.update(p.t_unix_s for p in series.points if now_unix_s < p.t_unix_s <= latest)
        t = now_unix_s + step_s
        while t <= latest:
            candidates.add(t)
            t += step_s
        candidates.add(latest)
    best_t, best_g = now_unix_s, immediate
    for t in sorted(candidates):
        g = cost(t)
        if g is not None and g < best_g - 1e-12:
            best_t, best_g = t, g
    saving = (immediate - best_g) / immediate * 100.0 if immediate > 0 else 0.0
    return ScheduleDecision(
        decided_at_unix_s=now_unix_s,
        start_unix_s=best_t,
        deadline_unix_s=deadline,
        duration_s=duration_s,
        power_w=power_w,
        immediate_g=immediate,
        scheduled_g=best_g,
        saving_pct=saving,
        signal=signal,
        source=series.source,
        expected_from=expected_from,
        note=note,
    )


def wait_until(
    start_unix_s: float,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    tick: Callable[[float], None] | None = None,
    tick_s: float = 1.0,
) -> None:
    """Sleep until ``clock() >= start_unix_s``, calling ``tick(remaining_s)`` about every
    ``tick_s``; Ctrl-C (KeyboardInterrupt) becomes ScheduleCancelled."""
    try:
        while True:
            remaining = start_unix_s - clock()
            if remaining <= 0:
                return
            if tick is not None:
                tick(remaining)
            sleep(min(remaining, tick_s))
    except KeyboardInterrupt:
        raise ScheduleCancelled(
            "greenllm: the scheduled run was cancelled before it started; nothing ran"
        ) from None


def countdown_text(remaining_s: float) -> str:
    s = int(round(remaining_s))
    return f"starting in {s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def write_decision(out_dir: str | Path, decision: ScheduleDecision) -> Path:
    from .fsutil import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write(out / DECISION_FILE, json.dumps(decision.to_dict(), indent=2) + "\n")


def read_decision(out_dir: str | Path) -> dict[str, Any] | None:
    """The decision a scheduled run wrote in ``out_dir``, or None (a malformed file is
    ignored: the report then says nothing about scheduling)."""
    p = Path(out_dir) / DECISION_FILE
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    need = ("start_unix_s", "immediate_g", "scheduled_g", "saving_pct", "source", "signal")
    if not isinstance(data, dict) or not all(k in data for k in need):
        return None
    return data


__all__ = [
    "DECISION_FILE",
    "ScheduleCancelled",
    "ScheduleDecision",
    "countdown_text",
    "parse_duration",
    "plan_start",
    "read_decision",
    "wait_until",
    "write_decision",
]
