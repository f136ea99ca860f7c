"""Which PowerCap holds a power setting, in one place for the runner, ``greenllm bench`` and
the training search.

A power setting is ``power_cap_w`` (watts: the GPU power limit, through NVML, adapter
``nvml``) or ``power_mode`` (a Jetson nvpmodel mode id or name, adapter ``jetson``), never
both. ``select_power_cap`` builds the adapter for this device and checks the value(s) against
it before any work starts. No torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .base import PowerCap

# setting -> the POWER_CAPS key of the adapter that holds it
ADAPTER_FOR = {"power_cap_w": "nvml", "power_mode": "jetson"}


def _given(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (list, tuple)):
        return len(value) > 0
    return True


def cap_kind(
    power_cap_w: Any = None,
    power_mode: Any = None,
    *,
    names: tuple[str, str] = ("power_cap_w", "power_mode"),
) -> str | None:
    """``"nvml"`` for ``power_cap_w``, ``"jetson"`` for ``power_mode``, None for neither.

    A value may be a list (the settings a search tries); an empty list counts as not given.
    Both given is a ConfigError naming ``names`` (the fields or options the user wrote).
    """
    if _given(power_cap_w) and _given(power_mode):
        raise ConfigError(
            f"{names[0]} and {names[1]} are exclusive: give one of them "
            f"({names[0]} for a GPU power cap in W, {names[1]} for a Jetson "
            "nvpmodel mode)"
        )
    if _given(power_cap_w):
        return ADAPTER_FOR["power_cap_w"]
    if _given(power_mode):
        return ADAPTER_FOR["power_mode"]
    return None


def _build(kind: str, profile: Any = None) -> PowerCap:
    from . import POWER_CAPS

    cls = POWER_CAPS.get(kind)
    if kind == "jetson" and profile is not None:
        return cls(profile=profile)
    return cls()


def select_power_cap(
    power_cap_w: Any = None,
    power_mode: Any = None,
    *,
    profile: Any = None,
    names: tuple[str, str] = ("power_cap_w", "power_mode"),
    factory: Callable[[str, Any], PowerCap] | None = None,
) -> tuple[PowerCap | None, Any]:
    """``(cap, value)``: the adapter for the setting on this device and the checked value;
    ``(None, None)`` when neither setting is given.

    ``power_cap_w`` / ``power_mode`` may each be one value or a list of values (a search);
    a list comes back as the list of checked values. ``profile`` is the device profile (name
    or object) for the Jetson adapter (detected when None). ``factory(kind, profile)`` builds
    the adapter instead of ``POWER_CAPS`` (tests pass fakes). An adapter that cannot run here
    raises its own HardwareControlError / MissingDependencyError (what is missing and why);
    a value it does not allow raises before anything changes.
    """
    kind = cap_kind(power_cap_w, power_mode, names=names)
    if kind is None:
        return None, None
    cap = (factory or _build)(kind, profile)
    raw = power_cap_w if kind == ADAPTER_FOR["power_cap_w"] else power_mode
    if isinstance(raw, (list, tuple)):
        return cap, [cap.check(v) for v in raw]
    return cap, cap.check(raw)


def clocks_kind(profile: Any = None) -> str:
    """``jetson-gpu-clocks`` on a Jetson board (profile kind ``jetson``), else
    ``nvml-clocks``; ``profile`` is a name, a DeviceProfile or None (detected)."""
    from ..devices import detect_device, get_profile

    prof = get_profile(profile) if isinstance(profile, str) else profile
    if prof is None:
        prof = detect_device(nvml=None).profile  # the device tree is enough to spot a Jetson
    return "jetson-gpu-clocks" if getattr(prof, "kind", None) == "jetson" else "nvml-clocks"


def select_clocks(
    clocks: Any,
    *,
    profile: Any = None,
    names: str = "--clocks",
    factory: Callable[[str, Any], PowerCap] | None = None,
) -> tuple[PowerCap | None, Any]:
    """``(cap, value)`` for locked GPU clocks (``control.clocks`` values: ``1410``,
    ``gpu=810-1410,mem=5001``); a list of values (a search) comes back checked as a list;
    ``(None, None)`` when none is given. Every value is checked before anything changes."""
    if not _given(clocks):
        return None, None
    from . import POWER_CAPS
    from .clocks import parse_clocks

    for v in clocks if isinstance(clocks, (list, tuple)) else [clocks]:
        parse_clocks(v)  # a malformed value fails before any device is touched
    kind = clocks_kind(profile)
    cap = factory(kind, profile) if factory else POWER_CAPS.get(kind)()
    try:
        if isinstance(clocks, (list, tuple)):
            return cap, [cap.check(v) for v in clocks]
        return cap, cap.check(clocks)
    except ConfigError as exc:
        raise ConfigError(f"{names}: {exc}") from None


__all__ = ["ADAPTER_FOR", "cap_kind", "clocks_kind", "select_clocks", "select_power_cap"]
