"""Locked GPU clocks as a PowerCap, held with ``capped()``'s journal, lock and restore
guarantees (the ``clocks`` kind of power control).

A clocks value is a short string: ``"1410"`` (graphics clock locked at 1410 MHz),
``"810-1410"`` (a range), ``"gpu=1410,mem=5001"`` or ``"gpu=810-1410,mem=405-810"``; the
journal stores it as that string (a plain scalar, as every journal value). The original is
``"default"``: the driver-managed clocks, which is what restoring puts back.

- ``NvmlLockedClocks`` (``nvml-clocks``): ``nvmlDeviceSetGpuLockedClocks`` /
  ``nvmlDeviceResetGpuLockedClocks`` and ``nvmlDeviceSetMemoryLockedClocks`` /
  ``nvmlDeviceResetMemoryLockedClocks`` (Volta and newer; root). NVML cannot report whether a
  lock is in place, so restoring always resets (a reset of an unlocked clock is harmless). The
  allowed values are the supported clocks NVML lists (``nvmlDeviceGetSupportedMemoryClocks`` /
  ``nvmlDeviceGetSupportedGraphicsClocks``).
- ``JetsonGpuClocks`` (``jetson-gpu-clocks``): the GPU's devfreq ``min_freq`` / ``max_freq``
  in sysfs (Hz; the API speaks MHz), checked against ``available_frequencies``; the original
  is the ``"min-max"`` range read before the change. The sysfs root is a constructor argument
  (tests use a tree under ``tmp_path``); a journal names only the devfreq device.

``parse_clocks`` is pure; no torch, no SDK at module level.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import HardwareControlError, require
from .nvml import nvml_call

DEFAULT = "default"
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def _range(text: str, what: str) -> tuple[int, int]:
    m = _RANGE.match(text)
    if not m:
        raise HardwareControlError(
            f"clocks {what} {text[:30]!r} is not MHz or MIN-MAX MHz (e.g. 1410 or 810-1410)"
        )
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if lo > hi:
        raise HardwareControlError(f"clocks {what} {text[:30]!r}: the minimum exceeds the maximum")
    return lo, hi


def parse_clocks(value: Any) -> dict[str, tuple[int, int]]:
    """``{"gpu": (min, max), "mem": (min, max)}`` (either may be absent) from a clocks value."""
    text = str(value).strip()
    if not text or text == DEFAULT:
        return {}
    out: dict[str, tuple[int, int]] = {}
    for part in text.split(","):
        key, sep, rest = part.partition("=")
        if not sep:
            key, rest = "gpu", part
        key = key.strip().lower()
        if key not in ("gpu", "mem") or key in out:
            raise HardwareControlError(
                f"clocks {text[:40]!r}: use gpu=MHz[,mem=MHz] (each once), e.g. gpu=1410,mem=5001"
            )
        out[key] = _range(rest, key)
    return out


def format_clocks(spec: dict[str, tuple[int, int]]) -> str:
    if not spec:
        return DEFAULT
    parts = []
    for key in ("gpu", "mem"):
        if key in spec:
            lo, hi = spec[key]
            parts.append(f"{key}={lo}" if lo == hi else f"{key}={lo}-{hi}")
    return ",".join(parts)


class NvmlLockedClocks:
    """``PowerCap`` for one NVIDIA GPU's locked graphics (and memory) clocks."""

    name = "nvml-clocks"
    JOURNAL_KEYS = ("uuid", "index")

    def __init__(self, index: int = 0, pynvml: Any = None, uuid: str | None = None):
        from .nvml import NvmlPowerCap

        self._nvml = (
            pynvml if pynvml is not None else require("pynvml", "nvml", "locking GPU clocks")
        )
        # the device lookup (index / UUID) and its errors are the power cap's
        self._dev = NvmlPowerCap(index, pynvml=self._nvml, uuid=uuid)
        self.index, self._handle = self._dev.index, self._dev._handle

    def gpu_name(self) -> str:
        return self._dev.gpu_name()

    def _call(self, what: str, fn, *args):
        return nvml_call(
            self, what, fn, *args, unsupported_hint="locked clocks need a Volta or newer GPU"
        )

    def supported(self) -> dict[str, list[int]]:
        """Supported memory clocks and graphics clocks (over all memory clocks), MHz."""
        mem = sorted(
            self._call(
                "reading the supported memory clocks",
                self._nvml.nvmlDeviceGetSupportedMemoryClocks,
                self._handle,
            )
        )
        gpu: set[int] = set()
        for m in mem:
            gpu.update(
                self._call(
                    "reading the supported graphics clocks",
                    self._nvml.nvmlDeviceGetSupportedGraphicsClocks,
                    self._handle,
                    m,
                )
            )
        return {"gpu": sorted(gpu), "mem": mem}

    # -- PowerCap -------------------------------------------------------------------------
    def get(self) -> str:
        """Always ``"default"``: NVML cannot read a lock, and a holder restores by resetting."""
        return DEFAULT

    def allowed(self) -> dict[str, tuple[int, int]]:
        sup = self.supported()
        return {k: (v[0], v[-1]) for k, v in sup.items() if v}

    def check(self, value: Any) -> str:
        spec = parse_clocks(value)
        if not spec:
            return DEFAULT
        allowed = self.allowed()
        for key, (lo, hi) in spec.items():
            if key not in allowed:
                raise HardwareControlError(f"GPU {self.index} lists no supported {key} clocks")
            a, b = allowed[key]
            if lo < a or hi > b:
                raise HardwareControlError(
                    f"{key} clocks {lo}-{hi} MHz are outside the supported {a}-{b} MHz of GPU "
                    f"{self.index} ({self._dev.gpu_name()}); pick values in that range"
                )
        return format_clocks(spec)

    def set(self, value: Any) -> None:
        spec = parse_clocks(self.check(value))
        if not spec:
            self.restore(DEFAULT)
            return
        if "gpu" in spec:
            self._call(
                "locking the GPU clocks",
                self._nvml.nvmlDeviceSetGpuLockedClocks,
                self._handle,
                *spec["gpu"],
            )
        if "mem" in spec:
            self._call(
                "locking the memory clocks",
                self._nvml.nvmlDeviceSetMemoryLockedClocks,
                self._handle,
                *spec["mem"],
            )

    def restore(self, original: Any) -> None:
        """Reset both locks (the driver's default clocks); a locked original is re-applied."""
        self._call(
            "resetting the GPU clocks", self._nvml.nvmlDeviceResetGpuLockedClocks, self._handle
        )
        try:
            self._call(
                "resetting the memory clocks",
                self._nvml.nvmlDeviceResetMemoryLockedClocks,
                self._handle,
            )
        except HardwareControlError as exc:
            if "not supported" not in str(exc):  # boards without memory locks: nothing to undo
                raise
        if str(original) != DEFAULT:
            self.set(original)

    def describe(self) -> str:
        a = self.allowed()
        return f"GPU {self.index} ({self._dev.gpu_name()}) locked clocks (supported {a} MHz)"

    def device_id(self) -> str:
        return self._dev.device_id()

    def journal_params(self) -> dict[str, Any]:
        return {"uuid": self.device_id(), "index": self.index}

    def adapter_config(self) -> dict[str, Any]:
        return {"pynvml": self._nvml}

    @classmethod
    def from_journal(cls, params: dict[str, Any], pynvml: Any = None, **_: Any) -> NvmlLockedClocks:
        uuid = params.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise HardwareControlError("the nvml-clocks journal names no GPU UUID; cannot restore")
        return cls(pynvml=pynvml, uuid=uuid)


# Jetson GPU devfreq device names (Orin, Xavier, TX2, Nano / TX1)
JETSON_GPU_DEVFREQ = ("17000000.ga10b", "17000000.gv11b", "17000000.gp10b", "57000000.gpu")
_DEVFREQ_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
HZ_PER_MHZ = 1_000_000


class JetsonGpuClocks:
    """``PowerCap`` for a Jetson GPU's devfreq frequency range (fixed clocks: min = max)."""

    name = "jetson-gpu-clocks"
    JOURNAL_KEYS = ("device",)

    def __init__(
        self,
        device: str | None = None,
        sysfs_root: str | Path = "/sys",
        board_id: str | None = None,
    ):
        base = Path(sysfs_root) / "class" / "devfreq"
        if device is None:
            found = [n for n in JETSON_GPU_DEVFREQ if (base / n).is_dir()]
            if not found:
                raise HardwareControlError(
                    f"no Jetson GPU devfreq device under {base} (looked for "
                    f"{', '.join(JETSON_GPU_DEVFREQ)}); fixed GPU clocks need a Jetson board"
                )
            device = found[0]
        if not _DEVFREQ_NAME.match(device):
            raise HardwareControlError(f"devfreq device {device[:64]!r} is not a device name")
        self.device, self.dir = device, base / device
        if not self.dir.is_dir():
            raise HardwareControlError(f"no devfreq device {str(self.dir)!r}")
        from .jetson import board_identity

        self.board_id = board_id or board_identity()
        self.sysfs_root = str(sysfs_root)

    def _read(self, name: str) -> str:
        try:
            return (self.dir / name).read_text().strip()
        except OSError as exc:
            raise HardwareControlError(f"cannot read {self.dir / name}: {exc.strerror}") from None

    def _write(self, name: str, hz: int) -> None:
        try:
            (self.dir / name).write_text(f"{hz}\n")
        except PermissionError:
            raise HardwareControlError(
                f"writing {self.dir / name} needs root: run with sudo"
            ) from None
        except OSError as exc:
            raise HardwareControlError(f"cannot write {self.dir / name}: {exc.strerror}") from None

    def frequencies_mhz(self) -> list[int]:
        raw = self._read("available_frequencies").split()
        return sorted({int(x) // HZ_PER_MHZ for x in raw if x.isdigit()})

    def get(self) -> str:
        lo = int(self._read("min_freq")) // HZ_PER_MHZ
        hi = int(self._read("max_freq")) // HZ_PER_MHZ
        return f"gpu={lo}-{hi}"

    def allowed(self) -> list[int]:
        return self.frequencies_mhz()

    def check(self, value: Any) -> str:
        spec = parse_clocks(value)
        if "mem" in spec:
            raise HardwareControlError(
                "Jetson memory clocks are not set here (EMC clocks follow the power mode)"
            )
        if "gpu" not in spec:
            raise HardwareControlError("give the GPU clock for a Jetson, e.g. 624 or 306-918")
        freqs = self.frequencies_mhz()
        for f in spec["gpu"]:
            if f not in freqs:
                raise HardwareControlError(
                    f"{f} MHz is not an available frequency of the Jetson GPU ({self.device}: "
                    f"{', '.join(map(str, freqs))} MHz)"
                )
        return format_clocks(spec)

    def set(self, value: Any) -> None:
        lo, hi = parse_clocks(self.check(value))["gpu"]
        cur_lo = int(self._read("min_freq")) // HZ_PER_MHZ
        # keep min <= max at every step: raise max first when going up, min first going down
        if lo > cur_lo:
            self._write("max_freq", hi * HZ_PER_MHZ)
            self._write("min_freq", lo * HZ_PER_MHZ)
        else:
            self._write("min_freq", lo * HZ_PER_MHZ)
            self._write("max_freq", hi * HZ_PER_MHZ)

    def describe(self) -> str:
        return f"Jetson GPU clocks ({self.device}, {self.get()} MHz now)"

    def device_id(self) -> str:
        return self.board_id

    def journal_params(self) -> dict[str, Any]:
        return {"device": self.device}

    def adapter_config(self) -> dict[str, Any]:
        return {"sysfs_root": self.sysfs_root, "board_id": self.board_id}

    @classmethod
    def from_journal(
        cls,
        params: dict[str, Any],
        sysfs_root: str | Path = "/sys",
        board_id: str | None = None,
        **_: Any,
    ) -> JetsonGpuClocks:
        dev = params.get("device")
        if not isinstance(dev, str):
            raise HardwareControlError("the jetson-gpu-clocks journal names no devfreq device")
        return cls(dev, sysfs_root=sysfs_root, board_id=board_id)


__all__ = ["JetsonGpuClocks", "NvmlLockedClocks", "format_clocks", "parse_clocks"]
