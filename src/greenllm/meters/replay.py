"""Replay a CSV trace recorded by ``measure(trace=...)``.

``replay_report(path)`` rebuilds the EnergyReport of the recorded window with the same
aggregation measure() uses. ``ReplayMeter(path)`` serves the recorded readings one per
``read()`` (its timestamps are the recorded ones) and reports exhaustion as a MeterError,
so measure() flags it ``meter_vanished:replay``. Domain names are ``<meter>/<domain>``.
"""

from __future__ import annotations

import csv
import os
from collections import OrderedDict
from pathlib import Path

from ..errors import DataError, MeterError
from ..results import EnergyReport
from .base import COUNTER, POWER, BaseMeter, Clock, DomainInfo, Reading

_REQUIRED = ("t_s", "phase", "meter", "domain", "quantity", "value")


def load_trace(path: str | os.PathLike, phase: str = "window"):
    """-> (domains {meter: [DomainInfo]}, readings {meter: [Reading]}) of one phase."""
    p = Path(path)
    try:
        fh = open(p, newline="")
    except OSError as exc:
        raise DataError(f"cannot read trace {p}: {exc.strerror or exc}") from exc
    with fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{p}: not a greenllm trace (missing columns {', '.join(missing)})")
        infos: dict[str, dict[str, DomainInfo]] = OrderedDict()
        rows: dict[str, OrderedDict] = OrderedDict()
        for lineno, row in enumerate(reader, start=2):
            if row["phase"] != phase:
                continue
            try:
                t, v = float(row["t_s"]), float(row["value"])
            except ValueError:
                raise DataError(f"{p}:{lineno}: t_s/value are not numbers") from None
            meter, dom, q = row["meter"], row["domain"], row["quantity"]
            if q not in ("energy_j", "power_w"):
                raise DataError(f"{p}:{lineno}: quantity {q!r} is not energy_j or power_w")
            method = row.get("method") or ""
            infos.setdefault(meter, OrderedDict()).setdefault(
                dom,
                DomainInfo(
                    dom,
                    COUNTER if q == "energy_j" else POWER,
                    in_total=row.get("in_total", "1") != "0",
                    estimated=row.get("estimated", "0") == "1",
                    method=method if method == "estimate" else "",
                ),
            )
            slot = rows.setdefault(meter, OrderedDict()).setdefault(t, ({}, {}))
            slot[0 if q == "energy_j" else 1][dom] = v
    if not rows:
        raise DataError(f"{p}: the trace holds no {phase!r} samples")
    domains = {m: list(d.values()) for m, d in infos.items()}
    readings = {m: [Reading(t, e, pw) for t, (e, pw) in r.items()] for m, r in rows.items()}
    return domains, readings


def replay_report(path: str | os.PathLike) -> EnergyReport:
    from .aggregate import build_report

    domains, readings = load_trace(path)
    times = [r.timestamp_s for rs in readings.values() for r in rs]
    rounds = max(len(rs) for rs in readings.values())
    duration = max(times) - min(times)
    hz = (rounds - 1) / duration if duration > 0 else 0.0
    return build_report(
        domains, readings, duration, hz, rounds, flags=[f"replay:{path}"], trace_path=str(path)
    )


class ReplayMeter(BaseMeter):
    name = "replay"

    def __init__(self, path: str | os.PathLike | None = None, clock: Clock | None = None):
        super().__init__(clock)
        self.path = Path(path) if path else None
        self._loaded: tuple[list[DomainInfo], list[Reading]] | None = None
        self._pos = 0

    def _load(self):
        if self._loaded is None:
            if self.path is None:
                raise MeterError("the replay meter needs a trace file: ReplayMeter(path)")
            domains, readings = load_trace(self.path)
            merged: dict[float, tuple[dict, dict]] = {}
            infos = []
            for meter, ds in domains.items():
                infos += [
                    DomainInfo(f"{meter}/{d.name}", d.kind, d.in_total, d.estimated, d.method)
                    for d in ds
                ]
                for r in readings[meter]:
                    e, p = merged.setdefault(r.timestamp_s, ({}, {}))
                    e.update({f"{meter}/{k}": v for k, v in r.energy_j.items()})
                    p.update({f"{meter}/{k}": v for k, v in r.power_w.items()})
            self._loaded = (infos, [Reading(t, e, p) for t, (e, p) in sorted(merged.items())])
        return self._loaded

    def available(self) -> tuple[bool, str]:
        try:
            infos, rs = self._load()
        except (MeterError, DataError) as exc:
            return False, str(exc)
        return True, f"{len(rs)} recorded samples of {len(infos)} domains from {self.path}"

    def domains(self) -> list[DomainInfo]:
        return list(self._load()[0])

    def read(self) -> Reading:
        rs = self._load()[1]
        if self._pos >= len(rs):
            raise MeterError(f"trace {self.path} is exhausted after {len(rs)} samples")
        r = rs[self._pos]
        self._pos += 1
        return r
