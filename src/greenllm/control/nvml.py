"""GPU power limit through NVML (``nvidia-ml-py``), within the board's min/max constraints.

Values are watts in the API and milliwatts inside NVML. ``pynvml`` is an injectable module
object: tests pass ``greenllm.testing.FakePynvml``; by default the real one is imported through
``greenllm.errors.require``. Setting a limit needs root (and, on most boards, persistence mode:
``sudo nvidia-smi -pm 1``); NVML's "Insufficient Permissions" becomes a HardwareControlError
that says so.
"""

from __future__ import annotations

from typing import Any

from ..errors import HardwareControlError, require

MW_PER_W = 1000.0
_NO_PERMISSION = 4  # NVML_ERROR_NO_PERMISSION
_NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _is_nvml_error(nvml: Any, exc: BaseException) -> bool:
    err = getattr(nvml, "NVMLError", None)
    return (isinstance(err, type) and isinstance(exc, err)) or _code(exc) is not None


def nvml_call(dev, what: str, fn, *args, root_hint: str = "", unsupported_hint: str = ""):
    """``fn(*args)`` with NVML's errors as one clear HardwareControlError naming the GPU
    (``dev`` has ``_nvml``, ``index`` and ``gpu_name()``); other exceptions pass through."""
    try:
        return fn(*args)
    except Exception as exc:
        if not _is_nvml_error(dev._nvml, exc):
            raise
        code = _code(exc)
        if code == _NO_PERMISSION:
            raise HardwareControlError(
                f"{what} on GPU {dev.index} needs root: run as root or with sudo{root_hint}"
            ) from None
        if code == _NOT_SUPPORTED:
            raise HardwareControlError(
                f"{what} is not supported by GPU {dev.index} ({dev.gpu_name()}); {unsupported_hint}"
            ) from None
        raise HardwareControlError(f"{what} on GPU {dev.index} failed: {exc}") from None


class NvmlPowerCap:
    """``PowerCap`` for one NVIDIA GPU's power management limit (W)."""

    name = "nvml"
    JOURNAL_KEYS = ("uuid", "index")

    def __init__(self, index: int = 0, pynvml: Any = None, uuid: str | None = None):
        self.index = int(index)
        self._nvml = (
            pynvml if pynvml is not None else require("pynvml", "nvml", "setting a GPU power limit")
        )
        try:
            self._nvml.nvmlInit()
            count = self._nvml.nvmlDeviceGetCount()
        except Exception as exc:
            if not _is_nvml_error(self._nvml, exc):
                raise
            raise HardwareControlError(
                f"no NVML GPU: NVML cannot start here ({exc}); a GPU power cap needs an "
                "NVIDIA GPU with its driver loaded"
            ) from None
        if uuid is not None:
            self.index = self._index_of(str(uuid), count)
        if not 0 <= self.index < count:
            raise HardwareControlError(
                f"no NVML GPU with index {self.index} (this machine has {count}); "
                f"pass an index from 0 to {max(count - 1, 0)}"
                if count
                else "no NVML GPU: NVML reports 0 GPUs on this machine"
            )
        self._handle = self._nvml.nvmlDeviceGetHandleByIndex(self.index)

    def _index_of(self, uuid: str, count: int) -> int:
        for i in range(count):
            h = self._nvml.nvmlDeviceGetHandleByIndex(i)
            u = self._nvml.nvmlDeviceGetUUID(h)
            if (u.decode() if isinstance(u, bytes) else str(u)) == uuid:
                return i
        raise HardwareControlError(
            f"no NVML GPU with UUID {uuid[:80]!r} on this machine ({count} GPU(s))"
        )

    # -- helpers --------------------------------------------------------------------------
    def _call(self, what: str, fn, *args):
        return nvml_call(
            self,
            what,
            fn,
            *args,
            root_hint=", and enable persistence mode first with `sudo nvidia-smi -pm 1`",
            unsupported_hint="this board does not expose a settable power limit through NVML",
        )

    def gpu_name(self) -> str:
        try:
            name = self._nvml.nvmlDeviceGetName(self._handle)
        except Exception:
            return "unknown GPU"
        return name.decode() if isinstance(name, bytes) else str(name)

    # -- PowerCap -------------------------------------------------------------------------
    def get(self) -> float:
        """The current power management limit in watts."""
        mw = self._call(
            "reading the power limit", self._nvml.nvmlDeviceGetPowerManagementLimit, self._handle
        )
        return mw / MW_PER_W

    def allowed(self) -> tuple[float, float]:
        """(min_w, max_w) from nvmlDeviceGetPowerManagementLimitConstraints."""
        lo, hi = self._call(
            "reading the power limit constraints",
            self._nvml.nvmlDeviceGetPowerManagementLimitConstraints,
            self._handle,
        )
        return lo / MW_PER_W, hi / MW_PER_W

    def check(self, value: Any) -> float:
        try:
            watts = float(value)
        except (TypeError, ValueError):
            raise HardwareControlError(f"power cap {value!r} is not a number of watts") from None
        lo, hi = self.allowed()
        if not lo <= watts <= hi:
            raise HardwareControlError(
                f"power cap {watts:g} W is outside the allowed range {lo:g}-{hi:g} W of GPU "
                f"{self.index} ({self.gpu_name()}); pick a value in that range"
            )
        return watts

    def set(self, value: Any) -> None:
        watts = self.check(value)
        self._call(
            "setting the power limit",
            self._nvml.nvmlDeviceSetPowerManagementLimit,
            self._handle,
            int(round(watts * MW_PER_W)),
        )

    def describe(self) -> str:
        lo, hi = self.allowed()
        return (
            f"GPU {self.index} ({self.gpu_name()}) power limit {self.get():g} W "
            f"(allowed {lo:g}-{hi:g} W)"
        )

    def close(self) -> None:
        """Release this cap's NVML session (it does not change the limit)."""
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def device_id(self) -> str:
        """The GPU's UUID (stable across reboots and index changes)."""
        u = self._call("reading the GPU UUID", self._nvml.nvmlDeviceGetUUID, self._handle)
        return u.decode() if isinstance(u, bytes) else str(u)

    def journal_params(self) -> dict[str, Any]:
        return {"uuid": self.device_id(), "index": self.index}

    def adapter_config(self) -> dict[str, Any]:
        """Constructor arguments that never come from a journal."""
        return {"pynvml": self._nvml}

    @classmethod
    def from_journal(cls, params: dict[str, Any], pynvml: Any = None) -> NvmlPowerCap:
        """The GPU with the journal's UUID (index is informational)."""
        uuid = params.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise HardwareControlError("the nvml journal names no GPU UUID; cannot restore")
        return cls(pynvml=pynvml, uuid=uuid)
