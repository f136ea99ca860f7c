"""Small statistics shared by the bench (model side) and the report (measurement side):
Student-t critical values and the mean with its 95 % confidence half-width. stdlib only."""

from __future__ import annotations

import math

# two-sided 95 % Student-t critical values t_{0.975, df}
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t_critical_95(df: int) -> float:
    """t_{0.975, df}: exact table to 30, then linear in 1/df towards 1.960."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975) + [math.inf]
    vals = [_T975[k] for k in sorted(_T975)] + [1.959964]
    for (k0, v0), (k1, v1) in zip(zip(keys, vals), zip(keys[1:], vals[1:])):
        if k0 < df < k1:
            x0, x1, x = 1 / k0, (0.0 if k1 == math.inf else 1 / k1), 1 / df
            return v1 + (v0 - v1) * (x - x1) / (x0 - x1)
    return 1.959964


def mean_ci95(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, half-width of the 95 % CI of the mean); CI None for fewer than 2 values."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, t_critical_95(len(xs) - 1) * math.sqrt(var) / math.sqrt(len(xs))


__all__ = ["t_critical_95", "mean_ci95"]
