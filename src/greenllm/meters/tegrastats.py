"""tegrastats: a pure parser for every line generation, log analysis, and a process meter.

Line generations handled (see tests/data/tegrastats/SOURCES.md for real examples):
- L4T r28 (TX1): ``cpu [17%,13%,29%,5%]@408 ... GR3D 3%@76`` and no power rails;
- L4T r32 (Nano, TX2, AGX Xavier): rails without unit ``POM_5V_IN 2746/2911`` (mW cur/avg);
- L4T r35+ (Xavier NX, Orin): ``VDD_IN 17946mW/15710mW`` and optional leading timestamp
  ``05-15-2025 18:30:28``; ``cur/avg/max`` triples are accepted too;
- CPU lists with ``off`` cores, GR3D_FREQ as ``0%``, ``7%@768``, ``0%@[510]``, ``0%@[0,0]``;
- absent sensors as ``-256C``; ``NC`` (not connected) channels; shell prompts and blank lines
  are skipped and counted.
The board total is the input rail, else the sum of module rails (greenllm.meters.rails).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from ..errors import DataError, MeterError, MeterUnavailable
from ..units import mw_to_w
from .base import POWER, BaseMeter, Clock, DomainInfo, Reading, trapezoid
from .rails import NOT_CONNECTED, total_rails

_TS = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)([kM]B)")
_CPU_NEW = re.compile(r"\bCPU \[([^\]]*)\]", re.IGNORECASE)
_CPU_OLD_FREQ = re.compile(r"\bCPU \[[^\]]*\]@(\d+)", re.IGNORECASE)
_GR3D = re.compile(r"\bGR3D(?:_FREQ)? (\d+)%(?:@\[?([\d,]+)\]?)?")
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_TEMP = re.compile(r"(?<![\w@])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?=\s|$)")
_ABSENT_C = -256.0


@dataclass(frozen=True)
class Rail:
    cur_mw: float
    avg_mw: float | None = None
    max_mw: float | None = None


@dataclass(frozen=True)
class TegraSample:
    timestamp_s: float | None                 # UTC epoch seconds of the leading timestamp
    ram_used_mb: float | None
    ram_total_mb: float | None
    cpu_load_pct: tuple[float | None, ...]    # None = core off
    cpu_freq_mhz: tuple[float | None, ...]
    gpu_util_pct: float | None
    gpu_freq_mhz: tuple[float, ...]
    rails: dict[str, Rail] = field(default_factory=dict)
    temps_c: dict[str, float | None] = field(default_factory=dict)   # None = sensor absent

    def rails_w(self) -> dict[str, float]:
        return {k: mw_to_w(v.cur_mw) for k, v in self.rails.items()}

    def total_power_w(self) -> tuple[float, list[str]]:
        names = total_rails(list(self.rails))
        return sum(mw_to_w(self.rails[n].cur_mw) for n in names), names


def parse_line(line: str) -> TegraSample | None:
    """One tegrastats line -> TegraSample, or None when the line is not tegrastats output."""
    ram = _RAM.search(line)
    if not ram:
        return None
    ts = None
    m = _TS.match(line)
    if m:
        ts = datetime.strptime(m.group(1), "%m-%d-%Y %H:%M:%S").replace(
            tzinfo=timezone.utc).timestamp()
    scale = 1 / 1024 if ram.group(3) == "kB" else 1.0
    loads: list[float | None] = []
    freqs: list[float | None] = []
    cpu = _CPU_NEW.search(line)
    if cpu:
        old = _CPU_OLD_FREQ.search(line)
        common = float(old.group(1)) if old else None
        for item in cpu.group(1).split(","):
            item = item.strip()
            if not item or item == "off":
                loads.append(None)
                freqs.append(None)
                continue
            pct, _, freq = item.partition("@")
            loads.append(float(pct.rstrip("%")) if pct.rstrip("%") else None)
            freqs.append(float(freq) if freq else common)
    gpu_util, gpu_freq = None, ()
    g = _GR3D.search(line)
    if g:
        gpu_util = float(g.group(1))
        if g.group(2):
            gpu_freq = tuple(float(x) for x in g.group(2).split(",") if x)
    rails: dict[str, Rail] = {}
    for r in _RAIL.finditer(line):
        name = r.group(1)
        if name in NOT_CONNECTED or name in ("RAM", "SWAP", "IRAM"):
            continue
        rails[name] = Rail(float(r.group(2)), float(r.group(3)),
                           float(r.group(4)) if r.group(4) else None)
    temps: dict[str, float | None] = {}
    for t in _TEMP.finditer(line):
        v = float(t.group(2))
        temps[t.group(1)] = None if v <= _ABSENT_C else v
    return TegraSample(ts, float(ram.group(1)) * scale, float(ram.group(2)) * scale,
                       tuple(loads), tuple(freqs), gpu_util, gpu_freq, rails, temps)


@dataclass(frozen=True)
class TegraLog:
    samples: list[TegraSample]
    skipped_lines: int


def parse_log(lines: Iterable[str]) -> TegraLog:
    samples, skipped = [], 0
    for line in lines:
        s = parse_line(line.rstrip("\r\n"))
        if s is None:
            skipped += 1
        else:
            samples.append(s)
    return TegraLog(samples, skipped)


def sample_times(samples: list[TegraSample], interval_ms: float) -> list[float]:
    """Timestamps where every sample has one and they increase, else index x interval."""
    ts = [s.timestamp_s for s in samples]
    if ts and all(t is not None for t in ts) and all(b > a for a, b in zip(ts, ts[1:])):
        return [t - ts[0] for t in ts]  # type: ignore[operator]
    return [i * interval_ms / 1000.0 for i in range(len(samples))]


def analyze(log: TegraLog, interval_ms: float = 1000.0, source: str = "<log>") -> dict:
    """Energy of a tegrastats log: the ``greenllm analyze tegrastats --json`` dict."""
    samples = log.samples
    if not samples:
        raise DataError(f"{source}: no parseable tegrastats line "
                        f"({log.skipped_lines} lines skipped); is this tegrastats output?")
    if interval_ms <= 0:
        raise DataError(f"--interval-ms must be > 0, got {interval_ms}")
    times = sample_times(samples, interval_ms)
    rail_names: list[str] = []
    for s in samples:
        for n in s.rails:
            if n not in rail_names:
                rail_names.append(n)
    summed = total_rails(rail_names)
    duration = times[-1] - times[0]
    rails_out = {}
    for n in rail_names:
        p = [mw_to_w(s.rails[n].cur_mw) if n in s.rails else 0.0 for s in samples]
        e = trapezoid(times, p)
        rails_out[n] = {"mean_power_w": e / duration if duration > 0 else sum(p) / len(p),
                        "energy_j": e}
    total = [sum(mw_to_w(s.rails[n].cur_mw) for n in summed if n in s.rails) for s in samples]
    energy = trapezoid(times, total)
    utils = [s.gpu_util_pct for s in samples if s.gpu_util_pct is not None]
    return {
        "samples": len(samples),
        "skipped_lines": log.skipped_lines,
        "duration_s": duration,
        "energy_j": energy,
        "mean_power_w": energy / duration if duration > 0 else sum(total) / len(total),
        "total_rails": summed,
        "rails": rails_out,
        "gpu_util_mean_pct": sum(utils) / len(utils) if utils else None,
    }


def analyze_file(path, interval_ms: float = 1000.0) -> dict:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            log = parse_log(fh)
    except OSError as exc:
        raise DataError(f"cannot read tegrastats log {path}: {exc.strerror or exc}") from exc
    return analyze(log, interval_ms, str(path))


# -- the process meter ------------------------------------------------------------------

Runner = Callable[[list[str]], "subprocess.Popen"]


def _popen(argv: list[str]):
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            bufsize=1)


class TegrastatsMeter(BaseMeter):
    """Runs ``tegrastats --interval N`` (no shell) and reports the rails of the latest line.

    ``runner(argv)`` returns a Popen-like object (``stdout`` line iterator, ``terminate()``,
    ``wait()``); ``which`` finds the executable. Both are injectable for tests.
    """

    name = "tegrastats"

    def __init__(self, interval_ms: int = 100, executable: str = "tegrastats",
                 runner: Runner | None = None, which: Callable[[str], str | None] | None = None,
                 clock: Clock | None = None, first_line_timeout_s: float = 5.0):
        super().__init__(clock)
        self.interval_ms = int(interval_ms)
        self.executable = executable
        self._runner = runner or _popen
        self._which = which or shutil.which
        self._timeout = first_line_timeout_s
        self._proc = None
        self._latest: TegraSample | None = None
        self._got_line = threading.Event()
        self._ended = False
        self.skipped_lines = 0

    def available(self) -> tuple[bool, str]:
        path = self._which(self.executable)
        if not path:
            return False, f"{self.executable!r} is not on PATH (not an NVIDIA Jetson)"
        return True, f"{path} --interval {self.interval_ms}"

    def _start(self) -> None:
        if self._proc is not None:
            return
        path = self._which(self.executable)
        if not path:
            raise MeterUnavailable(f"{self.executable!r} is not on PATH (not an NVIDIA Jetson)")
        try:
            self._proc = self._runner([path, "--interval", str(self.interval_ms)])
        except OSError as exc:
            raise MeterUnavailable(f"cannot start {path}: {exc}") from exc
        threading.Thread(target=self._pump, name="greenllm-tegrastats", daemon=True).start()
        if not self._got_line.wait(self._timeout):
            raise MeterError(f"{path} printed no parseable line within {self._timeout:.0f} s "
                             "(try running it with sudo to check its output)")
        if self._latest is None:
            raise MeterError(f"{path} exited before printing a parseable line")

    def _pump(self) -> None:
        try:
            for line in self._proc.stdout:
                s = parse_line(line)
                if s is None:
                    self.skipped_lines += 1
                    continue
                self._latest = s
                self._got_line.set()
        finally:
            self._ended = True
            self._got_line.set()

    def domains(self) -> list[DomainInfo]:
        self._start()
        names = list(self._latest.rails)  # type: ignore[union-attr]
        summed = set(total_rails(names))
        return [DomainInfo(n, POWER, in_total=n in summed) for n in names]

    def read(self) -> Reading:
        self._start()
        if self._ended:
            raise MeterError("tegrastats stopped printing (process exited)")
        return Reading(self.clock(), power_w=self._latest.rails_w())  # type: ignore[union-attr]

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._proc.terminate()
                self._proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self._proc = None
