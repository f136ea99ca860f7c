"""Meters read energy or power from hardware, or replay / estimate it.

Registry keys: nvml, rapl, jetson, tegrastats, jtop, estimate, replay. Nothing here imports
torch or a vendor SDK at module level: ``greenllm measure`` runs on a bare Jetson.
"""

from __future__ import annotations

from .base import METERS
from .detect import detect_meters

__all__ = ["METERS", "detect_meters"]
