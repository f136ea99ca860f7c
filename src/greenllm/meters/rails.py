"""Board-aware total power of NVIDIA Jetson rails, the rule tegrastats and jtop use.

Boards with an input rail report it as the total (it already contains every module rail):
POM_5V_IN (Nano, TX1), VDD_IN (TX2, Xavier NX, Orin NX, Orin Nano), VIN (Thor). Boards
without one (AGX Xavier, AGX Orin) get the sum of their module rails. ``NC`` channels are
not connected and never counted.
"""
from __future__ import annotations

INPUT_RAILS = ("POM_5V_IN", "VDD_IN", "VIN")
NOT_CONNECTED = ("NC",)


def total_rails(rail_names) -> list[str]:
    """The rails whose sum is the board total, in the order given."""
    present = [r for r in rail_names if r not in NOT_CONNECTED]
    for name in INPUT_RAILS:
        if name in present:
            return [name]
    return present


def board_total_w(rails_w: dict[str, float]) -> tuple[float, list[str]]:
    """(total power in W, names of the rails summed)."""
    names = total_rails(list(rails_w))
    return sum(rails_w[n] for n in names), names
