"""Readings -> EnergyReport: counter domains give the sum of their increases, power domains
are integrated with the trapezoidal rule. Pure (no clock, no thread); ``measure`` and
``replay`` share it. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..results import DomainEnergy, EnergyReport
from .base import COUNTER, DomainInfo, Reading, trapezoid


def build_report(
    domains: dict[str, list[DomainInfo]],
    samples: dict[str, list[Reading]],
    duration_s: float,
    sampling_hz: float,
    rounds: int,
    idle_power_w: dict[tuple[str, str], float] | None = None,
    flags: Sequence[str] = (),
    trace_path: str | None = None,
    started_at_unix_s: float | None = None,
) -> EnergyReport:
    """Aggregate per-meter readings into an EnergyReport (pure; shared with replay)."""
    flags = list(flags)
    out: list[DomainEnergy] = []
    for meter, infos in domains.items():
        readings = samples.get(meter, [])
        for info in infos:
            energy, n = domain_energy(meter, info, readings, flags)
            idle = idle_power_w.get((meter, info.name)) if idle_power_w else None
            mean = energy / duration_s if duration_s > 0 else 0.0
            if n == 1 and info.kind != COUNTER and duration_s <= 0:
                mean = next(r.power_w[info.name] for r in readings if info.name in r.power_w)
            out.append(
                DomainEnergy(
                    meter=meter,
                    domain=info.name,
                    energy_j=energy,
                    mean_power_w=mean,
                    samples=n,
                    method=info.report_method,
                    in_total=info.in_total,
                    estimated=info.estimated,
                    idle_power_w=idle,
                    net_energy_j=None if idle is None else energy - idle * duration_s,
                )
            )
    counted = [d for d in out if d.in_total]
    total = sum(d.energy_j for d in counted)
    methods = sorted({d.method for d in counted})
    method = methods[0] if len(methods) == 1 else ("mixed" if methods else "none")
    idle_total = None
    net_total = None
    if idle_power_w is not None:
        idle_total = sum(d.idle_power_w or 0.0 for d in counted)
        net_total = total - idle_total * duration_s
    return EnergyReport(
        duration_s=duration_s,
        energy_j=total,
        mean_power_w=total / duration_s if duration_s > 0 else 0.0,
        domains=tuple(out),
        samples=rounds,
        sampling_hz=sampling_hz,
        method=method,
        estimated=any(d.estimated for d in counted),
        meters=tuple(domains),
        idle_power_w=idle_total,
        net_energy_j=net_total,
        flags=tuple(dict.fromkeys(flags)),
        trace_path=trace_path,
        started_at_unix_s=started_at_unix_s,
    )


def domain_energy(
    meter: str, info: DomainInfo, readings: list[Reading], flags: list[str]
) -> tuple[float, int]:
    if info.kind == COUNTER:
        vals = [r.energy_j[info.name] for r in readings if info.name in r.energy_j]
        energy = 0.0
        for a, b in zip(vals, vals[1:]):
            if b < a:
                flags.append(f"counter_reset:{meter}/{info.name}")
                continue
            energy += b - a
        return energy, len(vals)
    pts = [(r.timestamp_s, r.power_w[info.name]) for r in readings if info.name in r.power_w]
    if len(pts) < 2:
        return 0.0, len(pts)
    return trapezoid([t for t, _ in pts], [p for _, p in pts]), len(pts)


__all__ = ["build_report", "domain_energy"]
