"""Board-aware total power of NVIDIA Jetson rails, the rule tegrastats and jtop use.

Boards with an input rail report it as the total (it already contains every module rail):
POM_5V_IN (Nano, TX1), VDD_IN (TX2, Xavier NX, Orin NX, Orin Nano), VIN (Thor). Boards
without one (AGX Xavier, AGX Orin) get the sum of their module rails. ``NC`` channels are
not connected and never counted.

A rail that another listed rail already contains is listed on its own but left out of the
sum. On AGX Orin, ``VDDQ_VDD2_1V8AO`` (the DRAM's 1.8 V always-on rail) is measured on the
same INA3221 as the 5 V system rail and is part of ``VIN_SYS_5V0``, as NVIDIA's developer forum
answers (thread 223111, "Jetson AGX Orin power rails"): the total is
``VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0``, the power of the module rails.
"""

from __future__ import annotations

INPUT_RAILS = ("POM_5V_IN", "VDD_IN", "VIN")
NOT_CONNECTED = ("NC",)
#: rail -> the rail that already contains it (the sub-rail is not added when both are there)
CONTAINED_IN = {"VDDQ_VDD2_1V8AO": "VIN_SYS_5V0"}


def total_rails(rail_names) -> list[str]:
    """The rails whose sum is the board total, in the order given."""
    present = [r for r in rail_names if r not in NOT_CONNECTED]
    for name in INPUT_RAILS:
        if name in present:
            return [name]
    return [r for r in present if CONTAINED_IN.get(r) not in present]


def board_total_w(rails_w: dict[str, float]) -> tuple[float, list[str]]:
    """(total power in W, names of the rails summed)."""
    names = total_rails(list(rails_w))
    return sum(rails_w[n] for n in names), names
