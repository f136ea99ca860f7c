"""Meters read energy or power from hardware, or replay / estimate it.

Registry keys: nvml, rapl, jetson, tegrastats, jtop, estimate, replay. Nothing here imports
torch or a vendor SDK at module level: ``greenllm measure`` runs on a bare Jetson.
"""
from __future__ import annotations

from ..registry import Registry

METERS: Registry = Registry("meter", {
    "nvml": "greenllm.meters.nvml:NvmlMeter",
    "rapl": "greenllm.meters.rapl:RaplMeter",
    "jetson": "greenllm.meters.jetson:JetsonRailsMeter",
    "tegrastats": "greenllm.meters.tegrastats:TegrastatsMeter",
    "jtop": "greenllm.meters.jtop:JtopMeter",
    "estimate": "greenllm.meters.estimate:EstimateMeter",
    "replay": "greenllm.meters.replay:ReplayMeter",
})


def detect_meters(*args, **kwargs):
    from .detect import detect_meters as _detect
    return _detect(*args, **kwargs)


__all__ = ["METERS", "detect_meters"]
