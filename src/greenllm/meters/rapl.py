"""RAPL energy counters through the Linux powercap sysfs tree (Intel, and AMD Zen via the
same interface). Zones ``intel-rapl:N`` (package-N, psys, or a top-level dram) and their
sub-zones ``intel-rapl:N:M`` (core, uncore, dram). ``energy_uj`` wraps to 0 after
``max_energy_range_uj``; the meter unwraps it, so a window only needs one sample per wrap
period (tens of seconds at full load). An unreadable counter is a MeterError naming the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MeterError, MeterUnavailable
from ..units import uj_to_j
from .base import (
    COUNTER,
    BaseMeter,
    Clock,
    CounterUnwrapper,
    DomainInfo,
    Reading,
    read_number,
    read_text,
)

DEFAULT_ROOT = "/sys/class/powercap"


def _fix(path: Path) -> str:
    return (
        f"since Linux 5.10 energy_uj is readable by root only: run as root, or grant read "
        f"access once with `sudo chmod o+r {path.parent.parent}/intel-rapl:*/energy_uj "
        f"{path.parent.parent}/intel-rapl:*/intel-rapl:*/energy_uj`"
    )


class _Zone:
    def __init__(self, path: Path, domain: str, in_total: bool, note: str):
        self.path, self.domain = path, domain
        self.energy_path = path / "energy_uj"
        rng = path / "max_energy_range_uj"
        max_range = read_number(rng, "RAPL counter range") if rng.exists() else None
        self.unwrapper = CounterUnwrapper(max_range)
        self.info = DomainInfo(domain, COUNTER, in_total=in_total, note=note)

    def raw_uj(self) -> float:
        try:
            return read_number(self.energy_path, "RAPL energy counter")
        except MeterError as exc:
            if "permission denied" in str(exc):
                raise MeterError(
                    f"cannot read {self.energy_path}: permission denied; {_fix(self.energy_path)}"
                ) from exc
            raise


class RaplMeter(BaseMeter):
    """CPU package / DRAM energy from RAPL counters. ``root`` is injectable (tests)."""

    name = "rapl"

    def __init__(self, root: str | os.PathLike | None = None, clock: Clock | None = None):
        super().__init__(clock)
        self.root = Path(root or DEFAULT_ROOT)
        self._zones: list[_Zone] | None = None

    def _discover(self) -> list[_Zone]:
        if self._zones is not None:
            return self._zones
        if not self.root.is_dir():
            raise MeterUnavailable(
                f"{self.root} does not exist (no powercap/RAPL on this "
                "kernel or machine; VMs and containers usually hide it)"
            )
        tops = sorted(p for p in self.root.glob("intel-rapl:*") if p.name.count(":") == 1)
        if not tops:
            raise MeterUnavailable(f"no intel-rapl zones under {self.root} (RAPL not exposed)")
        zones: list[_Zone] = []
        for top in tops:
            tname = read_text(top / "name", "RAPL zone name")
            # psys (platform) already contains package and dram: report it, never add it.
            psys = tname == "psys"
            zones.append(
                _Zone(
                    top,
                    tname,
                    in_total=not psys,
                    note="platform domain, contains the others" if psys else "",
                )
            )
            for sub in sorted(p for p in top.glob(f"{top.name}:*") if p.is_dir()):
                sname = read_text(sub / "name", "RAPL sub-zone name")
                # DRAM is not part of the package energy; core/uncore are.
                is_dram = sname == "dram"
                zones.append(
                    _Zone(
                        sub,
                        f"{tname}/{sname}",
                        in_total=is_dram and not psys,
                        note="" if is_dram else f"part of {tname}",
                    )
                )
        self._zones = zones
        return zones

    def available(self) -> tuple[bool, str]:
        try:
            zones = self._discover()
            for z in zones:
                z.raw_uj()
        except MeterError as exc:
            return False, str(exc)
        return True, f"{len(zones)} RAPL zones under {self.root}"

    def domains(self) -> list[DomainInfo]:
        return [z.info for z in self._discover()]

    def read(self) -> Reading:
        zones = self._discover()
        energy = {z.domain: uj_to_j(z.unwrapper.update(z.raw_uj())) for z in zones}
        return Reading(self.clock(), energy_j=energy)
