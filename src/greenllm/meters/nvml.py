"""NVIDIA GPU energy through NVML (pynvml from nvidia-ml-py).

Volta and newer expose a total-energy counter in millijoules
(nvmlDeviceGetTotalEnergyConsumption); older GPUs only give power in milliwatts
(nvmlDeviceGetPowerUsage), which measure() integrates. Every GPU visible to CUDA is read:
CUDA_VISIBLE_DEVICES (indices or GPU-UUID prefixes) is honoured, and domain ``gpuN`` uses the
CUDA index N. The pynvml module is injectable (greenllm.testing.FakePynvml in tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import MeterError, MeterUnavailable, MissingDependencyError, require
from ..units import mj_to_j, mw_to_w
from .base import COUNTER, POWER, BaseMeter, Clock, DomainInfo, Reading


def load_pynvml() -> Any:
    """The pynvml module if nvidia-ml-py is installed, else None (for optional detection).
    The one place greenllm imports the NVML SDK; control/nvml.py and devices.py use it too."""
    try:
        return require("pynvml", "nvml", "NVML")
    except MissingDependencyError:
        return None


def parse_visible_devices(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES -> list of entries (None = unset = all devices).

    Like CUDA, the list ends at the first invalid entry; ``MIG-`` entries are skipped.
    """
    if value is None:
        return None
    out: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            break
        if item.isdigit() or item.startswith("GPU-"):
            out.append(item)
        elif item.startswith("MIG-"):
            continue
        else:
            break
    return out


class NvmlMeter(BaseMeter):
    name = "nvml"

    def __init__(
        self, nvml: Any = None, clock: Clock | None = None, env: Mapping[str, str] | None = None
    ):
        super().__init__(clock)
        self._nvml = nvml
        self._env = os.environ if env is None else env
        self._handles: list[tuple[str, Any, bool]] | None = None  # (domain, handle, counter)
        self._initialised = False

    # -- setup -------------------------------------------------------------------------
    def _lib(self):
        if self._nvml is None:
            try:
                self._nvml = require("pynvml", "nvml", "GPU energy measurement")
            except MissingDependencyError as exc:
                raise MeterUnavailable(str(exc)) from exc
        return self._nvml

    def _init(self) -> list[tuple[str, Any, bool]]:
        if self._handles is not None:
            return self._handles
        nv = self._lib()
        try:
            nv.nvmlInit()
            self._initialised = True
            count = nv.nvmlDeviceGetCount()
            all_handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except nv.NVMLError as exc:
            raise MeterUnavailable(
                f"NVML could not start ({exc}): no NVIDIA driver/GPU here"
            ) from exc
        if not all_handles:
            raise MeterUnavailable("NVML found no GPU")
        visible = parse_visible_devices(self._env.get("CUDA_VISIBLE_DEVICES"))
        chosen: list[Any] = []
        if visible is None:
            chosen = all_handles
        else:
            uuids = [self._uuid(h) for h in all_handles]
            for item in visible:
                if item.isdigit():
                    idx = int(item)
                    if idx >= len(all_handles):
                        break  # CUDA stops at the first invalid ordinal
                    chosen.append(all_handles[idx])
                else:
                    hits = [h for h, u in zip(all_handles, uuids) if u.startswith(item)]
                    if len(hits) != 1:
                        break
                    chosen.append(hits[0])
        if not chosen:
            raise MeterUnavailable(
                f"CUDA_VISIBLE_DEVICES={self._env.get('CUDA_VISIBLE_DEVICES')!r} hides every GPU"
            )
        handles = []
        for cuda_idx, h in enumerate(chosen):
            handles.append((f"gpu{cuda_idx}", h, self._has_counter(h)))
        self._handles = handles
        return handles

    def _uuid(self, h) -> str:
        u = self._nvml.nvmlDeviceGetUUID(h)
        return u.decode() if isinstance(u, bytes) else str(u)

    def _has_counter(self, h) -> bool:
        nv = self._nvml
        try:
            nv.nvmlDeviceGetTotalEnergyConsumption(h)
            return True
        except nv.NVMLError as exc:
            if getattr(exc, "value", None) == nv.NVML_ERROR_NOT_SUPPORTED:
                try:
                    nv.nvmlDeviceGetPowerUsage(h)
                except nv.NVMLError as exc2:
                    raise MeterUnavailable(
                        f"GPU reports neither energy nor power: {exc2}"
                    ) from exc2
                return False
            raise MeterUnavailable(f"cannot read GPU energy: {exc}") from exc

    # -- Meter protocol ------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        try:
            handles = self._init()
        except MeterError as exc:
            return False, str(exc)
        kinds = sorted({"energy counter" if c else "power polling" for _, _, c in handles})
        return True, f"{len(handles)} GPU(s) via NVML ({', '.join(kinds)})"

    def domains(self) -> list[DomainInfo]:
        return [DomainInfo(d, COUNTER if c else POWER) for d, _, c in self._init()]

    def device_names(self) -> dict[str, str]:
        out = {}
        for d, h, _ in self._init():
            n = self._nvml.nvmlDeviceGetName(h)
            out[d] = n.decode() if isinstance(n, bytes) else str(n)
        return out

    def read(self) -> Reading:
        handles = self._init()
        nv = self._nvml
        energy: dict[str, float] = {}
        power: dict[str, float] = {}
        try:
            for d, h, counter in handles:
                if counter:
                    energy[d] = mj_to_j(float(nv.nvmlDeviceGetTotalEnergyConsumption(h)))
                else:
                    power[d] = mw_to_w(float(nv.nvmlDeviceGetPowerUsage(h)))
        except nv.NVMLError as exc:
            raise MeterError(
                f"NVML read failed ({exc}); the GPU may have been lost or reset"
            ) from exc
        return Reading(self.clock(), energy_j=energy, power_w=power)

    def close(self) -> None:
        if self._initialised:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down a lost GPU must not mask results
                pass
            self._initialised = False
            self._handles = None
