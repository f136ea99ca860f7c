"""What could distort a metered window, read from the same boundary the meters use.

``ConditionsProbe.start()`` / ``.stop(token)`` bracket a window and return a plain dict:

* ``other_cpu_share``: the share of the machine's CPU capacity that *other* processes used
  during the window (system busy time minus this process's CPU time, over wall time x CPUs),
  from ``/proc`` via psutil;
* ``own_cpu_share``: the same for this process (all its threads);
* ``cpu_freq_mhz``: mean current frequency of the CPUs (cpufreq sysfs), start and end averaged;
* ``temperatures_c``: the thermal zones (``/sys/class/thermal/thermal_zone*/temp``) at the end,
  and ``max_temperature_c``;
* ``devfreq_hz``: current frequency of every devfreq device (a Jetson's GPU, GR3D, and EMC where
  it is exposed), at the end;
* ``gpu``: per NVML device, graphics / memory clocks (MHz), temperature and the clock-event
  (throttle) reasons bit mask, when an NVML module is given.

``power_settings()`` records the power configuration in force (CPU governor and frequency
limits, nvpmodel mode, whether ``jetson_clocks`` pinned the clocks, NVML power limit), as MLPerf
Power requires each submission to document its power management settings.

Flags (``window_flags``): ``contended`` (other processes used more than ``max_other_cpu_share``
of the CPU) and ``throttled`` (an NVML throttle reason, or a clock more than 10 % below the
run's median, see ``clock_throttle_flags``). Everything reads through injectable boundaries
(``sysfs_root``, ``cpu_times``, ``own_cpu_s``, ``nvml``, ``run_cmd``), which is how tests inject
readings. No torch.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# NVML clock-event reasons that mean the clocks were held down (nvml.h
# nvmlClocksEventReason*): SW power cap 0x4, HW slowdown 0x8, SW thermal 0x20, HW thermal 0x40,
# HW power brake 0x80. GPU idle (0x1), application clocks (0x2), sync boost (0x10) and display
# clocks (0x100) are not throttling.
NVML_THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
NVML_REASON_NAMES = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}
CLOCK_DROP_FRACTION = 0.10  # a clock this far below the run's median flags a window throttled
DEFAULT_MAX_OTHER_CPU_SHARE = 0.10


def _psutil_system_cpu() -> tuple[float, float]:
    """(busy seconds, total seconds), all CPUs since boot."""
    import psutil

    t = psutil.cpu_times()
    total = sum(t)
    return total - t.idle - getattr(t, "iowait", 0.0), total


def _psutil_own_cpu() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return float(t.user + t.system + getattr(t, "children_user", 0.0))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class ConditionsProbe:
    """Reads the conditions of a window; see the module docstring. Never raises: a source
    that cannot be read is left out of the result."""

    def __init__(
        self,
        sysfs_root: str | os.PathLike = "/",
        cpu_times: Callable[[], tuple[float, float]] | None = None,
        own_cpu_s: Callable[[], float] | None = None,
        cpu_count: int | None = None,
        nvml: Any = None,
        clock: Callable[[], float] | None = None,
    ):
        self.root = Path(sysfs_root)
        self._cpu_times = cpu_times or _psutil_system_cpu
        self._own = own_cpu_s or _psutil_own_cpu
        self.cpu_count = cpu_count or os.cpu_count() or 1
        self.nvml = nvml
        self.clock = clock or time.monotonic

    # -- sources -----------------------------------------------------------------------
    def cpu_freq_mhz(self) -> float | None:
        base = self.root / "sys/devices/system/cpu"
        vals = [
            v
            for p in sorted(base.glob("cpu[0-9]*/cpufreq/scaling_cur_freq"))
            if (v := _read_int(p)) is not None
        ]
        return sum(vals) / len(vals) / 1000.0 if vals else None

    def temperatures_c(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for zone in sorted((self.root / "sys/class/thermal").glob("thermal_zone*")):
            milli = _read_int(zone / "temp")
            if milli is None:
                continue
            name = _read(zone / "type") or zone.name
            key, n = name, 2
            while key in out:
                key, n = f"{name}#{n}", n + 1
            out[key] = milli / 1000.0
        return out

    def devfreq_hz(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for dev in sorted((self.root / "sys/class/devfreq").glob("*")):
            hz = _read_int(dev / "cur_freq")
            if hz is not None:
                out[dev.name] = hz
        emc = _read_int(self.root / "sys/kernel/debug/bpmp/debug/clk/emc/rate")
        if emc is not None:
            out["emc"] = emc
        return out

    def gpu(self) -> list[dict[str, Any]]:
        nv = self.nvml
        if nv is None:
            return []
        out = []
        try:
            n = nv.nvmlDeviceGetCount()
        except Exception:  # noqa: BLE001 - a probe never fails a window
            return []
        for i in range(n):
            row: dict[str, Any] = {"index": i}
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
            except Exception:  # noqa: BLE001
                continue
            for key, fn, args in (
                ("graphics_clock_mhz", "nvmlDeviceGetClockInfo", (0,)),
                ("memory_clock_mhz", "nvmlDeviceGetClockInfo", (2,)),
                ("temperature_c", "nvmlDeviceGetTemperature", (0,)),
            ):
                try:
                    row[key] = float(getattr(nv, fn)(h, *args))
                except Exception:  # noqa: BLE001
                    pass
            for fn in (
                "nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetCurrentClocksThrottleReasons",
            ):
                if hasattr(nv, fn):
                    try:
                        row["clock_event_reasons"] = int(getattr(nv, fn)(h))
                        break
                    except Exception:  # noqa: BLE001
                        continue
            out.append(row)
        return out

    # -- a window ----------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        token: dict[str, Any] = {"t": self.clock(), "freq": self.cpu_freq_mhz()}
        try:
            token["busy"], token["total"] = self._cpu_times()
            token["own"] = self._own()
        except Exception:  # noqa: BLE001
            pass
        return token

    def stop(self, token: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        wall = self.clock() - token["t"]
        if "busy" in token:
            try:
                busy, total = self._cpu_times()
                own = self._own()
                d_total = total - token["total"]
                if d_total > 0:
                    d_busy = max(busy - token["busy"], 0.0)
                    d_own = max(own - token["own"], 0.0)
                    # capacity: all CPUs over the window's wall time (the /proc totals count
                    # every CPU's time, so d_total is that capacity as the kernel saw it)
                    out["own_cpu_share"] = min(d_own / d_total, 1.0)
                    out["other_cpu_share"] = min(max(d_busy - d_own, 0.0) / d_total, 1.0)
            except Exception:  # noqa: BLE001
                pass
        f0, f1 = token.get("freq"), self.cpu_freq_mhz()
        freqs = [f for f in (f0, f1) if f is not None]
        if freqs:
            out["cpu_freq_mhz"] = sum(freqs) / len(freqs)
        temps = self.temperatures_c()
        if temps:
            out["temperatures_c"] = temps
            out["max_temperature_c"] = max(temps.values())
        dev = self.devfreq_hz()
        if dev:
            out["devfreq_hz"] = dev
        gpus = self.gpu()
        if gpus:
            out["gpu"] = gpus
        out["wall_s"] = wall
        return out

    # -- the power configuration ---------------------------------------------------------
    def power_settings(self, run_cmd: Callable[[list[str]], str | None] | None = None) -> dict:
        """The power settings in force (MLPerf Power: document them with every result)."""
        run_cmd = run_cmd or _run_cmd
        out: dict[str, Any] = {}
        base = self.root / "sys/devices/system/cpu"
        govs = sorted(
            {g for p in base.glob("cpu[0-9]*/cpufreq/scaling_governor") if (g := _read(p))}
        )
        if govs:
            out["cpu_governor"] = govs[0] if len(govs) == 1 else govs
        mins = [_read_int(p) for p in base.glob("cpu[0-9]*/cpufreq/scaling_min_freq")]
        maxs = [_read_int(p) for p in base.glob("cpu[0-9]*/cpufreq/scaling_max_freq")]
        mins_k = [m for m in mins if m is not None]
        maxs_k = [m for m in maxs if m is not None]
        if mins_k and maxs_k:
            out["cpu_min_freq_mhz"] = min(mins_k) / 1000.0
            out["cpu_max_freq_mhz"] = max(maxs_k) / 1000.0
        if (self.root / "etc/nv_tegra_release").exists():
            text = run_cmd(["nvpmodel", "-q"])
            if text:
                for line in text.splitlines():
                    if "Power Mode" in line and ":" in line:
                        out["nvpmodel_mode"] = line.split(":", 1)[1].strip()
                        break
            if mins_k and maxs_k:
                # jetson_clocks pins every CPU's minimum frequency to its maximum
                out["jetson_clocks"] = (
                    "on (CPU min frequency = max)" if min(mins_k) == max(maxs_k) else "off"
                )
        if self.nvml is not None:
            limits = []
            try:
                for i in range(self.nvml.nvmlDeviceGetCount()):
                    h = self.nvml.nvmlDeviceGetHandleByIndex(i)
                    limits.append(self.nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0)
            except Exception:  # noqa: BLE001
                pass
            if limits:
                out["gpu_power_limit_w"] = limits
        return out


def nvml_module() -> Any:
    """An initialised pynvml module when an NVIDIA driver is present, else None."""
    if not Path("/proc/driver/nvidia/version").exists():
        return None
    from .meters.nvml import load_pynvml  # the one place the NVML SDK is imported

    nv = load_pynvml()
    if nv is None:
        return None
    try:
        nv.nvmlInit()
        return nv
    except Exception:  # noqa: BLE001 - no usable NVML: no GPU conditions
        return None


def default_probe() -> ConditionsProbe:
    """The probe of this machine: /proc and sysfs, and NVML when a driver is present."""
    return ConditionsProbe(nvml=nvml_module())


def _run_cmd(argv: list[str]) -> str | None:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def window_flags(cond: dict[str, Any], max_other_cpu_share: float) -> list[str]:
    """The flags one window's conditions raise by themselves (contention, NVML throttling)."""
    flags = []
    other = cond.get("other_cpu_share")
    if other is not None and other > max_other_cpu_share:
        flags.append(f"contended: other processes used {other:.0%} of the CPU")
    for g in cond.get("gpu") or []:
        reasons = int(g.get("clock_event_reasons") or 0) & NVML_THROTTLE_MASK
        if reasons:
            names = [n for bit, n in NVML_REASON_NAMES.items() if reasons & bit]
            flags.append(f"throttled: GPU {g.get('index')} {'+'.join(names)}")
    return flags


def _clock_series(cond: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    if cond.get("cpu_freq_mhz"):
        out["cpu_freq_mhz"] = float(cond["cpu_freq_mhz"])
    for g in cond.get("gpu") or []:
        if g.get("graphics_clock_mhz"):
            out[f"gpu{g.get('index')}_clock_mhz"] = float(g["graphics_clock_mhz"])
    for name, hz in (cond.get("devfreq_hz") or {}).items():
        out[f"devfreq:{name}"] = float(hz)
    return out


def clock_throttle_flags(conditions: list[dict[str, Any]]) -> list[list[str]]:
    """Per window: ``throttled`` flags for clocks more than 10 % below the run's median
    (over the windows given, which should be every window of the run)."""
    series: dict[str, list[float]] = {}
    per = [_clock_series(c or {}) for c in conditions]
    for row in per:
        for k, v in row.items():
            series.setdefault(k, []).append(v)
    medians = {k: statistics.median(v) for k, v in series.items() if len(v) >= 3}
    out = []
    for row in per:
        flags = []
        for k, v in row.items():
            m = medians.get(k)
            if m and v < (1 - CLOCK_DROP_FRACTION) * m:
                flags.append(f"throttled: {k} {v:.0f} is {1 - v / m:.0%} below the run's median")
        out.append(flags)
    return out


__all__ = [
    "ConditionsProbe",
    "default_probe",
    "nvml_module",
    "window_flags",
    "clock_throttle_flags",
    "DEFAULT_MAX_OTHER_CPU_SHARE",
    "NVML_THROTTLE_MASK",
]
