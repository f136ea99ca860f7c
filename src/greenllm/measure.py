"""measure(): energy of a window of work, from any set of meters.

    with measure() as m:            # meters="auto": the best available (detect_meters)
        run_inference()
    print(m.report.energy_j, m.report.method, m.report.estimated)

    @measure(meters=["nvml", "rapl"], hz=20)
    def step(): ...

A sampler thread reads every meter at ``hz`` (default 10). Counter domains (NVML energy,
RAPL, the estimate) give the sum of their increases; power domains (Jetson rails,
tegrastats, NVML power polling) are integrated with the trapezoidal rule. ``idle_s`` > 0
first measures an idle baseline, so the report holds gross and idle-subtracted (net)
energy. ``trace`` records every sample to CSV (replayable with greenllm.meters.replay).
``clock`` and ``sleep`` are injectable; ``hz=0`` disables the thread (samples are taken at
enter, exit and on ``m.sample()``), which is how tests drive it without sleeping.
A meter that fails mid-window is dropped, the window still closes and the report is flagged
``meter_vanished:<name>``; negative power readings are clamped to 0 and flagged.
No torch here.
"""

from __future__ import annotations

import contextlib
import csv
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError, MeterUnavailable
from .fsutil import atomic_open
from .meters.aggregate import build_report, domain_energy
from .meters.base import Meter, Reading
from .results import EnergyReport

TRACE_COLUMNS = (
    "t_s",
    "phase",
    "meter",
    "domain",
    "quantity",
    "value",
    "in_total",
    "estimated",
    "method",
)


def resolve_meters(
    meters: Any, clock: Callable[[], float] | None = None
) -> tuple[list[Meter], list[Meter]]:
    """-> (meters to use, meters we created and must close)."""
    from .meters import METERS, detect_meters

    if meters is None or meters == "auto":
        det = detect_meters(clock=clock)
        return det.meters, det.meters
    if isinstance(meters, str) or not isinstance(meters, Iterable):
        meters = [meters]
    out: list[Meter] = []
    created: list[Meter] = []
    for m in meters:
        if isinstance(m, str):
            if m == "auto":
                raise ConfigError("meters: 'auto' cannot be combined with other meters")
            cls = METERS.get(m)
            inst = cls(clock=clock) if clock is not None else cls()
            created.append(inst)
            out.append(inst)
        else:
            out.append(m)
    for m in out:
        ok, reason = m.available()
        if not ok:
            for c in created:
                c.close()
            raise MeterUnavailable(f"meter {m.name!r} is unavailable: {reason}")
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"meters: {names} lists a meter twice")
    return out, created


class Measurement(contextlib.ContextDecorator):
    """The handle measure() returns. ``.report`` is set when the block exits (also on error)."""

    def __init__(
        self,
        meters: Any = "auto",
        hz: float = 10.0,
        idle_s: float = 0.0,
        trace: str | os.PathLike | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        from .limits import check_number, check_writable_file

        check_number(hz, "hz", 0, 1000, unit="samples per second (0 = no sampler thread)")
        check_number(idle_s, "idle_s", 0, 3600, unit="seconds")
        if trace:  # fail before the measured work runs, not after it
            check_writable_file(trace, "trace file")
        self.meters_spec = meters
        self.hz = float(hz)
        self.idle_s = float(idle_s)
        self.trace = Path(trace) if trace else None
        self._given_clock = clock
        self.clock = clock or time.monotonic
        self.sleep = sleep or time.sleep
        self.report: EnergyReport | None = None
        self._lock = threading.RLock()

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> Measurement:
        self.report = None
        self._meters, self._created = resolve_meters(self.meters_spec, self._given_clock)
        self._live = {m.name: m for m in self._meters}
        self._domains = {m.name: m.domains() for m in self._meters}
        self._flags: list[str] = []
        for m in self._meters:
            notes = getattr(m, "notes", None)
            if callable(notes):
                self._flags.extend(notes())
        self._samples: dict[str, list[Reading]] = {m.name: [] for m in self._meters}
        self._rounds = 0
        self._trace_rows: list[tuple] = []
        self._idle_power: dict[tuple[str, str], float] | None = None
        if self.idle_s > 0:
            self._measure_idle()
        self._started_unix = time.time()
        self._t0 = self.clock()
        self.sample()
        self._stop = threading.Event()
        self._thread = None
        if self.hz > 0:
            self._thread = threading.Thread(target=self._run, name="greenllm-measure", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._thread is not None:
                self._stop.set()
                self._thread.join()
            self.sample()
            self._t1 = self.clock()
            self.report = self._build(self._t1)
            if self.trace is not None:
                self._write_trace()
        finally:
            for m in self._created:
                m.close()

    def _run(self) -> None:
        period = 1.0 / self.hz
        while not self._stop.wait(period):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - never kill the window from the thread
                with self._lock:
                    self._flags.append(f"sampler_error:{type(exc).__name__}")

    # -- sampling ----------------------------------------------------------------------
    def sample(self, phase: str = "window") -> None:
        """Read every live meter once (thread-safe; also callable by hand when hz=0)."""
        with self._lock:
            target = self._samples if phase == "window" else self._idle_samples
            for name, meter in list(self._live.items()):
                try:
                    r = meter.read()
                except Exception as exc:  # noqa: BLE001 - a vanished meter must not end the window
                    self._flags.append(f"meter_vanished:{name}")
                    self._flags.append(f"meter_error:{name}:{exc}")
                    del self._live[name]
                    continue
                if any(v < 0 for v in r.power_w.values()):
                    fixed = {}
                    for d, v in r.power_w.items():
                        if v < 0:
                            self._flags.append(f"negative_power_clamped:{name}/{d}")
                        fixed[d] = max(v, 0.0)
                    r = Reading(r.timestamp_s, dict(r.energy_j), fixed)
                target[name].append(r)
                if self.trace is not None:
                    self._trace_rows.append((phase, name, r))
            if phase == "window":
                self._rounds += 1

    def _measure_idle(self) -> None:
        self._idle_samples: dict[str, list[Reading]] = {m.name: [] for m in self._meters}
        period = 1.0 / self.hz if self.hz > 0 else self.idle_s
        t_start = self.clock()
        self.sample("idle")
        while (elapsed := self.clock() - t_start) < self.idle_s:
            self.sleep(min(period, self.idle_s - elapsed))
            self.sample("idle")
        span = self.clock() - t_start
        flags: list[str] = []
        self._idle_power = {}
        for meter, infos in self._domains.items():
            for info in infos:
                e, _ = domain_energy(meter, info, self._idle_samples.get(meter, []), flags)
                self._idle_power[(meter, info.name)] = e / span if span > 0 else 0.0
        self._flags.extend(flags)

    # -- results -----------------------------------------------------------------------
    def _build(self, t_end: float) -> EnergyReport:
        with self._lock:
            return build_report(
                self._domains,
                {k: list(v) for k, v in self._samples.items()},
                duration_s=max(t_end - self._t0, 0.0),
                sampling_hz=self.hz,
                rounds=self._rounds,
                idle_power_w=self._idle_power,
                flags=self._flags,
                trace_path=str(self.trace) if self.trace else None,
                started_at_unix_s=self._started_unix,
            )

    def snapshot(self) -> EnergyReport:
        """EnergyReport of the window so far (takes one fresh sample first)."""
        if self.report is not None:
            return self.report
        self.sample()
        return self._build(self.clock())

    def _write_trace(self) -> None:
        if self.trace is None:
            raise ValueError("no trace path set")
        info = {(m, d.name): d for m, ds in self._domains.items() for d in ds}
        with atomic_open(self.trace, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(TRACE_COLUMNS)
            for phase, meter, r in self._trace_rows:
                for quantity, values in (("energy_j", r.energy_j), ("power_w", r.power_w)):
                    for dom, v in values.items():
                        d = info.get((meter, dom))
                        w.writerow(
                            (
                                repr(r.timestamp_s),
                                phase,
                                meter,
                                dom,
                                quantity,
                                repr(v),
                                int(d.in_total) if d else 1,
                                int(d.estimated) if d else 0,
                                d.report_method if d else "",
                            )
                        )


_INVALIDATING = ("meter_vanished:", "meter_error:", "sampler_error:")


def invalid_window_reasons(report: EnergyReport | None) -> list[str]:
    """Why a window's energy cannot be trusted (a meter failed during it); [] when valid.
    A window whose meter stopped partway holds only part of the energy, possibly 0 J."""
    if report is None:
        return ["no report"]
    return [f[:200] for f in report.flags if f.startswith(_INVALIDATING)]


def measure(
    meters: Any = "auto",
    hz: float = 10.0,
    idle_s: float = 0.0,
    trace: str | os.PathLike | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Measurement:
    """Context manager and decorator measuring the energy of a block; see the module doc."""
    return Measurement(meters, hz=hz, idle_s=idle_s, trace=trace, clock=clock, sleep=sleep)


__all__ = [
    "measure",
    "Measurement",
    "build_report",
    "resolve_meters",
    "TRACE_COLUMNS",
    "invalid_window_reasons",
]
