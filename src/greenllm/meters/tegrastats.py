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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import DataError, MeterError, MeterUnavailable
from ..units import mw_to_w
from .base import POWER, BaseMeter, Clock, DomainInfo, Reading
from .rails import NOT_CONNECTED, total_rails

_TS = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)([kM]B)")
_CPU_NEW = re.compile(r"\bCPU \[([^\]]*)\]", re.IGNORECASE)
_CPU_OLD_FREQ = re.compile(r"\bCPU \[[^\]]*\]@(\d+)", re.IGNORECASE)
_GR3D = re.compile(r"\bGR3D(?:_FREQ)? (\d+)%(?:@\[?([\d,]+)\]?)?")
_RAIL = re.compile(
    r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)"
)
_TEMP = re.compile(r"(?<![\w@])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?=\s|$)")
_ABSENT_C = -256.0


@dataclass(frozen=True)
class Rail:
    cur_mw: float
    avg_mw: float | None = None
    max_mw: float | None = None


@dataclass(frozen=True)
class TegraSample:
    timestamp_s: float | None  # UTC epoch seconds of the leading timestamp
    ram_used_mb: float | None
    ram_total_mb: float | None
    cpu_load_pct: tuple[float | None, ...]  # None = core off
    cpu_freq_mhz: tuple[float | None, ...]
    gpu_util_pct: float | None
    gpu_freq_mhz: tuple[float, ...]
    rails: dict[str, Rail] = field(default_factory=dict)
    temps_c: dict[str, float | None] = field(default_factory=dict)  # None = sensor absent

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
        ts = (
            datetime.strptime(m.group(1), "%m-%d-%Y %H:%M:%S")
            .replace(tzinfo=timezone.utc)
            .timestamp()
        )
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
    gpu_util: float | None = None
    gpu_freq: tuple[float, ...] = ()
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
        rails[name] = Rail(
            float(r.group(2)), float(r.group(3)), float(r.group(4)) if r.group(4) else None
        )
    temps: dict[str, float | None] = {}
    for t in _TEMP.finditer(line):
        v = float(t.group(2))
        temps[t.group(1)] = None if v <= _ABSENT_C else v
    return TegraSample(
        ts,
        float(ram.group(1)) * scale,
        float(ram.group(2)) * scale,
        tuple(loads),
        tuple(freqs),
        gpu_util,
        gpu_freq,
        rails,
        temps,
    )


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
    if ts and all(t is not None for t in ts):
        tv = [t for t in ts if t is not None]  # same list, narrowed to float
        if all(b > a for a, b in zip(tv, tv[1:])):
            return [t - tv[0] for t in tv]
    return [i * interval_ms / 1000.0 for i in range(len(samples))]


# -- streaming analysis ------------------------------------------------------------------
# ``analyze_file`` reads a log of any size line by line in bounded memory: only running sums
# are kept (energy is linear in power, so the board total is the sum of its rails' integrals).

_RAIL_VALUE = re.compile(r"(\d+)(?:mW)?/\d+(?:mW)?(?:/\d+(?:mW)?)?")
_RAIL_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_NOT_RAILS = frozenset(("RAM", "SWAP", "IRAM")) | frozenset(NOT_CONNECTED)
MAX_LINE_CHARS = 64 * 1024  # a longer "line" is not tegrastats output


_day_s: dict[str, float] = {}


def _timestamp(text: str) -> float:
    """``MM-DD-YYYY hh:mm:ss`` (UTC) -> epoch seconds; the date part is memoised."""
    day = _day_s.get(text[:10])
    if day is None:
        import calendar

        day = float(
            calendar.timegm((int(text[6:10]), int(text[0:2]), int(text[3:5]), 0, 0, 0, 0, 0, 0))
        )
        if len(_day_s) < 4096:
            _day_s[text[:10]] = day
    return day + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])


def analysis_fields(line: str) -> tuple[float | None, dict[str, float], float | None] | None:
    """What analysis needs from one line: (timestamp_s, rail -> current mW, GPU util %), or
    None when the line is not tegrastats output. Same values as ``parse_line``, faster."""
    r = line.find("RAM ")
    if r < 0 or _RAM.match(line, r) is None:
        return None
    m = _TS.match(line) if line[:1].isdigit() else None
    ts = _timestamp(m.group(1)) if m else None
    g = line.find("GR3D")
    gm = _GR3D.match(line, g) if g >= 0 else None
    return ts, _rails_fast(line), (float(gm.group(1)) if gm else None)


_name_ok: dict[str, bool] = {}


def _is_rail_name(name: str) -> bool:
    ok = _name_ok.get(name)
    if ok is None:
        ok = _RAIL_NAME.fullmatch(name) is not None and name not in _NOT_RAILS
        if len(_name_ok) < 4096:
            _name_ok[name] = ok
    return ok


def _rails_fast(line: str) -> dict[str, float]:
    """``NAME cur[mW]/avg[mW][/max[mW]]`` pairs. Every recorded generation prints its rails
    after the last ``name@temp`` field; when no '/' before that belongs to a rail (only RAM,
    SWAP, IRAM have one) only that tail is split, else the whole line is scanned."""
    at = line.rfind("@")
    if at >= 0 and line.count("/", 0, at) <= 1 + ("SWAP " in line) + ("IRAM " in line):
        out: dict[str, float] = {}
        toks = line[at:].split()
        for k in range(1, len(toks) - 1):
            val = toks[k + 1]
            if "/" in val and _is_rail_name(toks[k]):
                m = _RAIL_VALUE.fullmatch(val)
                if m:
                    out[toks[k]] = float(m.group(1))
        return out
    return _rails_scan(line)


def _rails_scan(line: str) -> dict[str, float]:
    """The general path of ``_rails_fast``: every '/' in the line."""
    out: dict[str, float] = {}
    n = len(line)
    i = line.find("/")
    while i != -1:
        start = line.rfind(" ", 0, i)
        end = line.find(" ", i)
        if end == -1:
            end = n
        if start > 0:
            name = line[line.rfind(" ", 0, start) + 1 : start]
            if _is_rail_name(name):
                m = _RAIL_VALUE.fullmatch(line, start + 1, end)
                if m:
                    out[name] = float(m.group(1))
        i = line.find("/", end)
    return out


class _Accumulator:
    """Running integrals of a tegrastats log under both time bases (timestamps, if every
    sample has an increasing one, else index x interval). A sample that lacks a rail the
    previous sample had is a truncated or garbled line: skipped and counted, never 0 W."""

    def __init__(self, interval_ms: float):
        self.dt_idx = interval_ms / 1000.0
        self.samples = self.skipped = self.truncated = 0
        self.rails: dict[str, list[float]] = {}  # name -> [prev_w, e_idx, e_ts, sum_w]
        self.ts_ok = True
        self.t_first: float | None = None
        self.t_prev: float | None = None
        self.util_sum, self.util_n = 0.0, 0
        self._prev_names: frozenset[str] = frozenset()

    def add(self, fields) -> None:
        if fields is None:
            self.skipped += 1
            return
        ts, rails_mw, util = fields
        if self._prev_names and not self._prev_names <= rails_mw.keys():
            self.truncated += 1
            return
        self._prev_names = frozenset(rails_mw)
        first = self.samples == 0
        if self.ts_ok:
            if ts is None or (self.t_prev is not None and ts <= self.t_prev):
                self.ts_ok = False
            elif first:
                self.t_first = ts
        dt_ts = ts - self.t_prev if self.ts_ok and not first else 0.0
        dt_idx = 0.0 if first else self.dt_idx
        rails = self.rails
        if len(rails_mw) != len(rails) or not rails.keys() <= rails_mw.keys():
            for name in rails_mw:
                if name not in rails:
                    rails[name] = [0.0, 0.0, 0.0, 0.0]
        get = rails_mw.get
        for name, acc in rails.items():
            w = get(name, 0.0) / 1000.0
            half = 0.5 * (acc[0] + w)
            acc[1] += half * dt_idx
            acc[2] += half * dt_ts
            acc[0] = w
            acc[3] += w
        self.t_prev = ts if self.ts_ok else None
        if util is not None:
            self.util_sum += util
            self.util_n += 1
        self.samples += 1

    def result(self, source: str) -> dict:
        if not self.samples:
            raise DataError(
                f"{source}: no parseable tegrastats line "
                f"({self.skipped + self.truncated} lines skipped); is this "
                "tegrastats output?"
            )
        use_ts = self.ts_ok and self.samples > 1
        if use_ts:
            # ts_ok held for every sample, so both timestamps were set
            assert self.t_prev is not None and self.t_first is not None
            duration = self.t_prev - self.t_first
        else:
            duration = (self.samples - 1) * self.dt_idx
        names = list(self.rails)
        summed = total_rails(names)
        rails_out = {}
        for n, acc in self.rails.items():
            e = acc[2] if use_ts else acc[1]
            rails_out[n] = {
                "mean_power_w": e / duration if duration > 0 else acc[3] / self.samples,
                "energy_j": e,
            }
        energy = sum(rails_out[n]["energy_j"] for n in summed)
        mean_sum = sum(self.rails[n][3] for n in summed) / self.samples
        return {
            "samples": self.samples,
            "skipped_lines": self.skipped + self.truncated,
            "truncated_lines": self.truncated,
            "duration_s": duration,
            "energy_j": energy,
            "mean_power_w": energy / duration if duration > 0 else mean_sum,
            "total_rails": summed,
            "rails": rails_out,
            "gpu_util_mean_pct": self.util_sum / self.util_n if self.util_n else None,
        }


def _check_interval(interval_ms: float) -> None:
    import math

    if not (
        isinstance(interval_ms, (int, float)) and math.isfinite(interval_ms) and interval_ms > 0
    ):
        raise DataError(f"--interval-ms must be > 0, got {interval_ms}")


def analyze(log: TegraLog, interval_ms: float = 1000.0, source: str = "<log>") -> dict:
    """Energy of a tegrastats log: the ``greenllm analyze tegrastats --json`` dict."""
    _check_interval(interval_ms)
    acc = _Accumulator(interval_ms)
    acc.skipped = log.skipped_lines
    for s in log.samples:
        acc.add((s.timestamp_s, {n: r.cur_mw for n, r in s.rails.items()}, s.gpu_util_pct))
    return acc.result(source)


def analyze_file(path, interval_ms: float = 1000.0) -> dict:
    """``analyze`` of a log file of any size, streamed (memory does not grow with the file);
    truncated and garbled lines are skipped and counted (``truncated_lines``)."""
    _check_interval(interval_ms)
    acc = _Accumulator(interval_ms)
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            while True:
                line = fh.readline(MAX_LINE_CHARS)
                if not line:
                    break
                if len(line) >= MAX_LINE_CHARS and not line.endswith("\n"):
                    while line and not line.endswith("\n"):  # drop the rest of it
                        line = fh.readline(MAX_LINE_CHARS)
                    acc.skipped += 1
                    continue
                acc.add(analysis_fields(line.rstrip("\r\n")))
    except OSError as exc:
        raise DataError(f"cannot read tegrastats log {path}: {exc.strerror or exc}") from None
    return acc.result(str(path))


# -- the process meter ------------------------------------------------------------------

Runner = Callable[[list[str]], "subprocess.Popen[str]"]


def _popen(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
    )


class TegrastatsMeter(BaseMeter):
    """Runs ``tegrastats --interval N`` (no shell) and reports the rails of the latest line.

    ``runner(argv)`` returns a Popen-like object (``stdout`` line iterator, ``terminate()``,
    ``wait()``); ``which`` finds the executable. Both are injectable for tests.
    """

    name = "tegrastats"

    def __init__(
        self,
        interval_ms: int = 100,
        executable: str = "tegrastats",
        runner: Runner | None = None,
        which: Callable[[str], str | None] | None = None,
        clock: Clock | None = None,
        first_line_timeout_s: float = 5.0,
    ):
        super().__init__(clock)
        self.interval_ms = int(interval_ms)
        self.update_hz = 1000.0 / self.interval_ms  # new readings per second (window floor)
        self.executable = executable
        self._runner = runner or _popen
        self._which = which or shutil.which
        self._timeout = first_line_timeout_s
        self._proc: subprocess.Popen[str] | None = None
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
            raise MeterError(
                f"{path} printed no parseable line within {self._timeout:.0f} s "
                "(try running it with sudo to check its output)"
            )
        if self._latest is None:
            raise MeterError(f"{path} exited before printing a parseable line")

    def _pump(self) -> None:
        try:
            proc = self._proc
            assert proc is not None and proc.stdout is not None  # set by _start before the thread
            for line in proc.stdout:
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
