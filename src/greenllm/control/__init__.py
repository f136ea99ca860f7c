"""Control changes how the hardware runs (GPU power limit, Jetson nvpmodel / clocks) and
always puts it back: on return, exception, SIGINT and SIGTERM, and after a hard kill through
the journal (``greenllm control restore``). No torch, no SDK at module level."""

from __future__ import annotations

from ..registry import Registry

POWER_CAPS: Registry = Registry(
    "power control",
    {
        "nvml": "greenllm.control.nvml:NvmlPowerCap",
        "jetson": "greenllm.control.jetson:JetsonPowerMode",
        "nvml-clocks": "greenllm.control.clocks:NvmlLockedClocks",
        "jetson-gpu-clocks": "greenllm.control.clocks:JetsonGpuClocks",
    },
)

__all__ = ["POWER_CAPS"]
