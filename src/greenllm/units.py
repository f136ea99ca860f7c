"""SI constants and converters. Internal values are J, W, s and bytes; convert only in report/."""

from __future__ import annotations

J_PER_WH = 3600.0
J_PER_KWH = 3.6e6
MJ_PER_J = 1e3  # millijoules in a joule
UJ_PER_J = 1e6  # microjoules in a joule
MW_PER_W = 1e3  # milliwatts in a watt
G_PER_KG = 1e3
BYTES_PER_MIB = 1024**2
BYTES_PER_GIB = 1024**3


def mj_to_j(mj: float) -> float:
    return mj / MJ_PER_J


def uj_to_j(uj: float) -> float:
    return uj / UJ_PER_J


def mw_to_w(mw: float) -> float:
    return mw / MW_PER_W


def j_to_wh(j: float) -> float:
    return j / J_PER_WH


def j_to_kwh(j: float) -> float:
    return j / J_PER_KWH


def wh_to_j(wh: float) -> float:
    return wh * J_PER_WH


def kwh_to_j(kwh: float) -> float:
    return kwh * J_PER_KWH
