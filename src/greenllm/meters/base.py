"""The Meter protocol, the Reading a meter returns, and the integration helpers.

A meter reports, per domain, either a cumulative energy counter (``energy_j``, already
unwrapped so it only grows) or an instantaneous power (``power_w``). ``measure()`` turns
counters into deltas and integrates power with the trapezoidal rule. No torch, no vendor SDK.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, runtime_checkable

from ..errors import MeterError
from ..registry import Registry

Clock = Callable[[], float]

Kind = Literal["counter", "power"]
COUNTER: Final = "counter"
POWER: Final = "power"


@dataclass(frozen=True)
class DomainInfo:
    """One thing a meter measures (a GPU, a RAPL zone, a power rail)."""

    name: str  # "gpu0", "package-0", "package-0/dram", "VDD_IN"
    kind: Kind  # counter -> energy_j readings, power -> power_w
    in_total: bool = True  # counted in the report total (False: sub-rail)
    estimated: bool = False  # modelled, not measured
    method: str = ""  # override of the report method ("estimate")
    note: str = ""  # e.g. "sub-zone of package-0 (included there)"

    @property
    def report_method(self) -> str:
        if self.method:
            return self.method
        return "counter" if self.kind == COUNTER else "power_integration"


@dataclass(frozen=True)
class Reading:
    """One sample: timestamp from the meter's (injected) clock, values per domain name."""

    timestamp_s: float
    energy_j: dict[str, float] = field(default_factory=dict)  # cumulative, monotonic
    power_w: dict[str, float] = field(default_factory=dict)  # instantaneous


@runtime_checkable
class Meter(Protocol):
    name: str

    def available(self) -> tuple[bool, str]: ...

    def domains(self) -> list[DomainInfo]: ...

    def read(self) -> Reading: ...

    def close(self) -> None: ...


# registry keys -> meter classes (lazy targets: a meter's module loads when it is used)
METERS: Registry[type] = Registry(
    "meter",
    {
        "nvml": "greenllm.meters.nvml:NvmlMeter",
        "rapl": "greenllm.meters.rapl:RaplMeter",
        "jetson": "greenllm.meters.jetson:JetsonRailsMeter",
        "tegrastats": "greenllm.meters.tegrastats:TegrastatsMeter",
        "jtop": "greenllm.meters.jtop:JtopMeter",
        "estimate": "greenllm.meters.estimate:EstimateMeter",
        "replay": "greenllm.meters.replay:ReplayMeter",
    },
)


# What each meter's total covers (its measurement boundary). Deltas are only ever computed
# between results of the same boundary.
BOUNDARIES = {
    "nvml": "gpu board",
    "rapl": "cpu package",
    "jetson": "module rails",
    "tegrastats": "module rails",
    "jtop": "module rails",
    "estimate": "model",
    "replay": "replayed trace",
}


def boundary_of(meters: Iterable[object]) -> str:
    """The measurement boundary of a set of meters (names or objects), e.g. ``gpu board`` or
    ``gpu board + cpu package``; a meter object may declare its own ``boundary`` (an external
    wall meter says ``wall``)."""
    out: list[str] = []
    for m in meters:
        if isinstance(m, str):
            b = BOUNDARIES.get(m, m)
        else:
            b = getattr(m, "boundary", None) or BOUNDARIES.get(getattr(m, "name", ""), "unknown")
        if b not in out:
            out.append(b)
    return " + ".join(out) if out else "none"


class BaseMeter:
    """Shared plumbing: an injectable clock, a no-op close, context-manager use."""

    name = "base"

    def __init__(self, clock: Clock | None = None):
        self.clock: Clock = clock or time.monotonic

    def notes(self) -> list[str]:
        """Extra lines for EnergyReport.flags (e.g. the assumptions of an estimate)."""
        return []

    def close(self) -> None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def require_available(self) -> None:
        from ..errors import MeterUnavailable

        ok, reason = self.available()  # type: ignore[attr-defined]
        if not ok:
            raise MeterUnavailable(f"meter {self.name!r} is unavailable: {reason}")


def trapezoid(times_s: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoidal integral of ``values`` over ``times_s`` (W over s -> J)."""
    if len(times_s) != len(values):
        raise ValueError("times_s and values differ in length")
    total = 0.0
    for i in range(1, len(times_s)):
        dt = times_s[i] - times_s[i - 1]
        if dt < 0:
            raise ValueError(f"time goes backwards at sample {i}: {times_s[i - 1]} -> {times_s[i]}")
        total += 0.5 * (values[i] + values[i - 1]) * dt
    return total


def counter_delta(previous: float, current: float, max_range: float | None) -> float:
    """Increase of a counter that wraps to 0 after ``max_range`` (RAPL ``max_energy_range_uj``).

    A decrease without a known range is an error: we never guess.
    """
    if current >= previous:
        return current - previous
    if max_range is None or max_range <= 0:
        raise MeterError(
            f"energy counter went backwards ({previous} -> {current}) and its "
            "wrap range is unknown; cannot compute the delta"
        )
    if previous > max_range:
        raise MeterError(f"counter value {previous} exceeds its range {max_range}")
    return (max_range - previous) + current


class CounterUnwrapper:
    """Turns a raw wrapping counter into a monotonic running total (same unit)."""

    def __init__(self, max_range: float | None):
        self.max_range = max_range
        self._last: float | None = None
        self.total = 0.0
        self.wraps = 0

    def update(self, raw: float) -> float:
        if self._last is not None:
            if raw < self._last:
                self.wraps += 1
            self.total += counter_delta(self._last, raw, self.max_range)
        self._last = raw
        return self.total


def read_text(path, what: str) -> str:
    """Read a small sysfs file; PermissionError / OSError become MeterError naming the file."""
    try:
        with open(path) as fh:
            return fh.read().strip()
    except PermissionError as exc:
        raise MeterError(f"cannot read {path} ({what}): permission denied") from exc
    except OSError as exc:
        raise MeterError(f"cannot read {path} ({what}): {exc.strerror or exc}") from exc


def read_number(path, what: str) -> float:
    text = read_text(path, what)
    try:
        return float(text)
    except ValueError as exc:
        raise MeterError(f"{path} ({what}) holds {text!r}, not a number") from exc


def names(domains: Iterable[DomainInfo]) -> list[str]:
    return [d.name for d in domains]
