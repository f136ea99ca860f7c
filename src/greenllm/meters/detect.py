"""detect_meters(): which meters work here, the ones measure("auto") uses, and why the
others do not. Preference: nvml (GPU) and rapl (CPU) together; on a Jetson one rail source
(jetson sysfs, else tegrastats, else jtop: they read the same INA3221 rails); the labelled
estimate only when nothing can be read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import GreenLLMError
from .base import METERS

ORDER = ("nvml", "rapl", "jetson", "tegrastats", "jtop", "estimate", "replay")
_RAIL_SOURCES = ("jetson", "tegrastats", "jtop")


@dataclass
class Detection:
    meters: list = field(default_factory=list)  # instances measure("auto") uses
    chosen: list[str] = field(default_factory=list)  # their names
    available: dict[str, str] = field(default_factory=dict)  # name -> description
    unavailable: dict[str, str] = field(default_factory=dict)  # name -> reason

    def to_json(self) -> dict:
        rows = []
        for name in ORDER:
            if name in self.available:
                rows.append(
                    {
                        "meter": name,
                        "available": True,
                        "chosen": name in self.chosen,
                        "detail": self.available[name],
                    }
                )
            elif name in self.unavailable:
                rows.append(
                    {
                        "meter": name,
                        "available": False,
                        "chosen": False,
                        "detail": self.unavailable[name],
                    }
                )
        return {
            "chosen": list(self.chosen),
            "estimated": self.chosen == ["estimate"],
            "meters": rows,
        }


def close_meters(meters) -> None:
    """Close every meter given (None entries skipped); one failing close does not keep the
    others open."""
    for meter in meters:
        if meter is not None:
            with contextlib.suppress(Exception):  # best effort: the handle is gone either way
                meter.close()


def detect_meters(
    factories: dict[str, Callable[[], object]] | None = None,
    clock: Callable[[], float] | None = None,
) -> Detection:
    """Probe every meter. ``factories`` (name -> zero-arg constructor) replaces the defaults
    for tests; unknown names are ignored."""
    det = Detection()
    instances: dict[str, object] = {}
    for name in ORDER:
        if name == "replay":
            det.unavailable[name] = "only used explicitly, to replay a recorded trace"
            continue
        meter = None
        try:
            if factories is not None:
                if name not in factories:
                    continue
                meter = factories[name]()
            else:
                cls = METERS.get(name)
                meter = cls(clock=clock) if clock is not None else cls()
            ok, reason = meter.available()  # type: ignore[attr-defined]
        except GreenLLMError as exc:
            ok, reason = False, str(exc)
        except BaseException:
            # an unexpected failure: close what this detection opened, then let it through
            close_meters([meter, *instances.values()])
            raise
        if ok:
            det.available[name] = reason
            instances[name] = meter
        else:
            det.unavailable[name] = reason
            close_meters([meter])
    chosen: list[str] = [n for n in ("nvml", "rapl") if n in instances]
    rail = next((n for n in _RAIL_SOURCES if n in instances), None)
    if rail:
        chosen.append(rail)
    if not chosen and "estimate" in instances:
        chosen = ["estimate"]
    close_meters([m for n, m in instances.items() if n not in chosen])
    det.chosen = chosen
    det.meters = [instances[n] for n in chosen]
    if not chosen:
        from ..errors import MeterUnavailable

        raise MeterUnavailable(
            "no meter is usable here: " + "; ".join(f"{k}: {v}" for k, v in det.unavailable.items())
        )
    return det
