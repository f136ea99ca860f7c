"""Jetson INA3221 power rails read straight from sysfs (fast: 10-20 Hz is fine).

Two layouts exist:
- hwmon (JetPack 5+, L4T r34+): ``<root>/<i2c-dev>/hwmon/hwmonN/in{K}_label``,
  ``in{K}_input`` (mV) and ``curr{K}_input`` (mA); power = V x I.
- legacy ina3221x (JetPack 4, L4T r32): ``<root>/<i2c-dev>/iio:deviceN/rail_name_{K}``
  and ``in_power{K}_input`` (mW).
The board total follows tegrastats (greenllm.meters.rails): the input rail where the board
has one, else the sum of module rails; the other rails are reported with in_total=False.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import MeterError, MeterUnavailable
from ..units import mw_to_w
from .base import POWER, BaseMeter, Clock, DomainInfo, Reading, read_number, read_text
from .rails import NOT_CONNECTED, total_rails

HWMON_ROOT = "/sys/bus/i2c/drivers/ina3221"
LEGACY_ROOT = "/sys/bus/i2c/drivers/ina3221x"


class _Rail:
    def __init__(self, name: str, files: tuple[Path, ...], layout: str):
        self.name, self.files, self.layout = name, files, layout

    def power_w(self) -> float:
        if self.layout == "hwmon":
            mv = read_number(self.files[0], f"rail {self.name} voltage")
            ma = read_number(self.files[1], f"rail {self.name} current")
            return mv * ma / 1e6
        return mw_to_w(read_number(self.files[0], f"rail {self.name} power"))


def _discover_hwmon(root: Path) -> list[_Rail]:
    rails = []
    for hw in sorted(root.glob("*/hwmon/hwmon*")):
        for label in sorted(hw.glob("in*_label")):
            m = re.fullmatch(r"in(\d+)_label", label.name)
            if not m:
                continue
            k = m.group(1)
            name = read_text(label, "rail label")
            volt, curr = hw / f"in{k}_input", hw / f"curr{k}_input"
            if name in NOT_CONNECTED or not curr.exists() or not volt.exists():
                continue  # NC channel, or "sum of shunt voltages" (no current)
            rails.append(_Rail(name, (volt, curr), "hwmon"))
    return rails


def _discover_legacy(root: Path) -> list[_Rail]:
    rails = []
    for dev in sorted(root.glob("*/iio:device*")):
        for label in sorted(dev.glob("rail_name_*")):
            k = label.name.rsplit("_", 1)[1]
            name = read_text(label, "rail name")
            power = dev / f"in_power{k}_input"
            if name in NOT_CONNECTED or not power.exists():
                continue
            rails.append(_Rail(name, (power,), "legacy"))
    return rails


class JetsonRailsMeter(BaseMeter):
    """Per-rail power of a Jetson board. ``root`` is the ina3221 / ina3221x driver folder."""

    name = "jetson"

    def __init__(self, root: str | os.PathLike | None = None, clock: Clock | None = None):
        super().__init__(clock)
        self.root = Path(root) if root else None
        self._rails: list[_Rail] | None = None
        self.layout: str | None = None

    def _discover(self) -> list[_Rail]:
        if self._rails is not None:
            return self._rails
        roots = [self.root] if self.root else [Path(HWMON_ROOT), Path(LEGACY_ROOT)]
        for root in roots:
            if not root.is_dir():
                continue
            for layout, finder in (("hwmon", _discover_hwmon), ("legacy", _discover_legacy)):
                rails = finder(root)
                if rails:
                    self._rails, self.layout = rails, layout
                    return rails
        where = " or ".join(str(r) for r in roots)
        raise MeterUnavailable(
            f"no INA3221 power rails under {where} (not a Jetson, or the "
            "ina3221 driver is not loaded)"
        )

    def available(self) -> tuple[bool, str]:
        try:
            rails = self._discover()
            for r in rails:
                r.power_w()
        except MeterError as exc:
            return False, str(exc)
        return True, f"{len(rails)} INA3221 rails ({self.layout} layout): " + ", ".join(
            r.name for r in rails
        )

    def domains(self) -> list[DomainInfo]:
        rails = self._discover()
        summed = set(total_rails([r.name for r in rails]))
        return [
            DomainInfo(
                r.name,
                POWER,
                in_total=r.name in summed,
                note="" if r.name in summed else "module rail inside the input rail",
            )
            for r in rails
        ]

    def read(self) -> Reading:
        rails = self._discover()
        return Reading(self.clock(), power_w={r.name: r.power_w() for r in rails})
