"""A labelled ESTIMATE of CPU energy, for machines where nothing can be read (VMs, CI).

Model: P = idle_w + (tdp_w - idle_w) x u, where u is the CPU utilisation over the interval
since the previous reading. ``scope="process"`` (the default) counts only the CPU time of this
process (all its threads) and of its children (a ``greenllm measure -- CMD``, a llama-server or
llama-bench greenllm started) against the machine's CPU capacity (psutil.cpu_times()), so
work of other processes on a shared machine is not charged to the model; ``scope="system"``
counts every process (the whole machine's utilisation). The meter accumulates P x dt itself,
so it behaves as a counter. Defaults: tdp_w = 10 W per logical CPU (GREENLLM_CPU_TDP_W
overrides), idle_w = 30 % of tdp_w. Every domain is marked
estimated=True and method "estimate"; reports built from it say so everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from ..errors import ConfigError
from .base import COUNTER, BaseMeter, Clock, DomainInfo, Reading

DEFAULT_TDP_W_PER_CPU = 10.0
DEFAULT_IDLE_FRACTION = 0.3


def _psutil_process_cpu_times() -> tuple[float, float]:
    """(CPU seconds of this process and its children, total seconds of all CPUs since boot).
    Children count while they run (their own CPU times, grandchildren included) and after
    they are reaped (``children_user`` / ``children_system``), so a program greenllm runs (a
    llama-server, a llama-bench) is charged to the window it runs in."""
    import psutil

    me = psutil.Process()
    own = me.cpu_times()
    busy = own.user + own.system + own.children_user + own.children_system
    try:
        kids = me.children(recursive=True)
    except psutil.Error:
        kids = []
    for kid in kids:
        try:
            t = kid.cpu_times()
        except psutil.Error:  # exited between listing and reading
            continue
        busy += t.user + t.system
    return float(busy), float(sum(psutil.cpu_times()))


def _psutil_cpu_times() -> tuple[float, float]:
    """(busy seconds, total seconds) summed over all CPUs since boot."""
    import psutil

    t = psutil.cpu_times()
    total = sum(t)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


class EstimateMeter(BaseMeter):
    name = "estimate"

    def __init__(
        self,
        tdp_w: float | None = None,
        idle_w: float | None = None,
        cpu_times: Callable[[], tuple[float, float]] | None = None,
        cpu_count: int | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        scope: str = "process",
    ):
        super().__init__(clock)
        env = os.environ if env is None else env
        self.cpu_count = cpu_count or os.cpu_count() or 1
        if tdp_w is None and env.get("GREENLLM_CPU_TDP_W"):
            try:
                tdp_w = float(env["GREENLLM_CPU_TDP_W"])
            except ValueError:
                raise ConfigError(
                    f"GREENLLM_CPU_TDP_W={env['GREENLLM_CPU_TDP_W']!r} is not a number of watts"
                ) from None
        self.tdp_w = float(tdp_w) if tdp_w is not None else DEFAULT_TDP_W_PER_CPU * self.cpu_count
        self.idle_w = float(idle_w) if idle_w is not None else DEFAULT_IDLE_FRACTION * self.tdp_w
        if self.tdp_w <= 0 or not 0 <= self.idle_w <= self.tdp_w:
            raise ConfigError(
                f"estimate meter: need 0 <= idle_w ({self.idle_w}) <= tdp_w "
                f"({self.tdp_w}) and tdp_w > 0"
            )
        if scope not in ("process", "system"):
            raise ConfigError(f"estimate meter: scope {scope!r} is not 'process' or 'system'")
        self.scope = scope
        self._cpu_times = cpu_times or (
            _psutil_process_cpu_times if scope == "process" else _psutil_cpu_times
        )
        self._last: tuple[float, float, float] | None = None  # (t, busy, total)
        self._energy_j = 0.0
        self.last_utilisation: float | None = None

    def available(self) -> tuple[bool, str]:
        return True, (
            f"always available: CPU power modelled from tdp_w={self.tdp_w:g} W, "
            f"idle_w={self.idle_w:g} W and utilisation (an estimate, not a measurement)"
        )

    def notes(self) -> list[str]:
        return [
            f"estimate:cpu tdp_w={self.tdp_w:g} idle_w={self.idle_w:g} model=linear_utilisation "
            f"scope={self.scope}"
        ]

    def domains(self) -> list[DomainInfo]:
        return [
            DomainInfo(
                "cpu",
                COUNTER,
                in_total=True,
                estimated=True,
                method="estimate",
                note="modelled from TDP and utilisation",
            )
        ]

    def power_at(self, utilisation: float) -> float:
        u = min(max(utilisation, 0.0), 1.0)
        return self.idle_w + (self.tdp_w - self.idle_w) * u

    def read(self) -> Reading:
        now = self.clock()
        busy, total = self._cpu_times()
        if self._last is not None:
            t0, b0, tot0 = self._last
            dt = max(now - t0, 0.0)
            dtot = total - tot0
            u = (busy - b0) / dtot if dtot > 0 else 0.0
            self.last_utilisation = u
            self._energy_j += self.power_at(u) * dt
        self._last = (now, busy, total)
        return Reading(now, energy_j={"cpu": self._energy_j})
