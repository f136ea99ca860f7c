"""Variant-versus-baseline arithmetic: deltas with propagated CIs, payback, flags, Pareto.

Pure functions on plain dicts (the stored ``BenchResult`` / ``EvalResult`` records), no torch,
no plotting. Internal units only (J, s, bytes); display conversion lives in tables/html.

Paired deltas (the headline): the runner measures the baseline and every variant in rounds,
so each of a variant's windows has a baseline window of the same round (or, in the bracket
scheme, the mean of the baseline windows just before and after it). The change of a metric is
the mean over rounds of the per-round ratio ``v_r / b_r``, minus 1, with the 95 % Student-t
half-width of that mean: drift of load, clocks or temperature between rounds cancels within
each ratio instead of landing in the delta.

Unpaired fallback (stores without rounds): for ``d = v / b - 1`` the half-width is propagated
to first order (delta method, independent runs): ``hw(d) = (v / b) * sqrt((hw_v / v)^2 +
(hw_b / b)^2)``. Accuracy deltas are in percentage points with ``stderr = sqrt(se_v^2 +
se_b^2)`` (independent-samples bound; the items are shared, so the paired stderr would be
smaller).

Verdicts (``verdict``): ``greener`` when the whole CI of the saving lies above the target
(``min_energy_saving``, or 0 without one), ``not greener`` when it lies below, ``inconclusive``
when it straddles it (or has no CI). No payback is computed from an inconclusive result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# metric -> higher is better?
ACCURACY_METRICS = ("acc_norm", "acc", "f1", "em", "exact_match")
LOWER_BETTER = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def rel_delta(
    v: float | None, b: float | None, hw_v: float | None = None, hw_b: float | None = None
) -> tuple[float | None, float | None]:
    """(v/b - 1, propagated 95 % half-width) as fractions; None where undefined."""
    v, b = _num(v), _num(b)
    if v is None or b is None or b == 0:
        return None, None
    d = v / b - 1.0
    hw_v, hw_b = _num(hw_v), _num(hw_b)
    if hw_v is None and hw_b is None:
        return d, None
    terms = []
    if hw_v is not None and v != 0:
        terms.append((hw_v / v) ** 2)
    if hw_b is not None:
        terms.append((hw_b / b) ** 2)
    return d, abs(v / b) * math.sqrt(sum(terms)) if terms else None


def payback_inferences(
    compression_energy_j: float | None,
    baseline_request_j: float | None,
    variant_request_j: float | None,
) -> float | None:
    """Inferences until the compression's own energy is repaid by the per-request saving.

    None ("never") when there is no saving per request; 0 when compressing cost nothing.
    """
    c, b, v = _num(compression_energy_j), _num(baseline_request_j), _num(variant_request_j)
    if b is None or v is None:
        return None
    saving = b - v
    if saving <= 0:
        return None
    if c is None or c <= 0:
        return 0.0
    return c / saving


# metrics paired round by round (bench rows)
PAIRED_METRICS = (
    "energy_per_token_j",
    "net_energy_per_token_j",
    "energy_per_request_j",
    "e2e_latency_s",
    "tokens_per_wh",
    "edp_js",
    "decode_tokens_per_s",
)
OUTLIER_FRACTION = 0.05  # a window this far from its variant's median is flagged


def _row_usable(r: dict[str, Any]) -> bool:
    return not r.get("invalid") and not r.get("excluded") and r.get("energy_j") is not None


def paired_ratios(
    base_rows: list[dict[str, Any]],
    var_rows: list[dict[str, Any]],
    metric: str,
    keep: bool = False,
) -> list[float | None]:
    """Per round: variant / baseline of ``metric`` (rows carry ``round``). ``keep=True``
    returns one entry per variant row (None where unpaired), else only the ratios."""
    base = {r.get("round"): r for r in base_rows if _row_usable(r)}
    out: list[float | None] = []
    for r in var_rows:
        b = base.get(r.get("round"))
        ratio = None
        if b is not None and _row_usable(r):
            vv, bb = _num(r.get(metric)), _num(b.get(metric))
            if vv is not None and bb is not None and bb > 0:
                ratio = vv / bb
        if keep or ratio is not None:
            out.append(ratio)
    return out


def paired_delta(ratios: list[float | None]) -> tuple[float | None, float | None]:
    """(mean ratio - 1, 95 % half-width) as fractions; half-width None below 2 rounds."""
    xs = [x for x in ratios if x is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m - 1.0, None
    from ..stats import t_critical_95

    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m - 1.0, t_critical_95(len(xs) - 1) * math.sqrt(var / len(xs))


def paired_deltas(var_bench: dict[str, Any], per_repeat: list[dict[str, Any]]) -> dict[str, Any]:
    """Percent changes from the paired ratios stored in a variant's rows (``row['paired']``).
    Returns the keys of ``bench_deltas`` that can be paired, plus ``rounds_paired``."""
    out: dict[str, Any] = {}
    labels = {
        "energy_per_token_j": "energy_per_token",
        "net_energy_per_token_j": "net_energy_per_token",
        "energy_per_request_j": "energy_per_request",
        "e2e_latency_s": "latency",
        "tokens_per_wh": "tokens_per_wh",
        "edp_js": "edp",
        "decode_tokens_per_s": "decode_tokens_per_s",
    }
    n = 0
    for metric, label in labels.items():
        ratios = [(r.get("paired") or {}).get(metric) for r in per_repeat]
        d, hw = paired_delta(ratios)
        out[f"{label}_pct"] = None if d is None else d * 100.0
        out[f"{label}_pct_ci95"] = None if hw is None else hw * 100.0
        if metric == "energy_per_token_j":
            n = len([x for x in ratios if x is not None])
    out["rounds_paired"] = n
    return out


def outlier_flags(rows: list[dict[str, Any]], row: dict[str, Any]) -> list[str]:
    """A window whose energy per token is more than 5 % from the median of its variant's
    windows disagrees with the others (MLPerf Power-style repeatability check)."""
    vals = sorted(
        v for r in rows if _row_usable(r) and (v := _num(r.get("energy_per_token_j"))) is not None
    )
    x = _num(row.get("energy_per_token_j"))
    if len(vals) < 3 or x is None or not _row_usable(row):
        return []
    mid = len(vals) // 2
    med = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
    if med > 0 and abs(x / med - 1) > OUTLIER_FRACTION:
        return [f"disagrees: {x / med - 1:+.1%} from the median of its windows"]
    return []


def verdict(
    delta_pct: float | None,
    half_width_pct: float | None,
    min_saving: float | None = None,
) -> str:
    """``greener`` / ``not greener`` / ``inconclusive`` for an energy change in percent with
    its 95 % half-width, against a required saving (fraction; None = any saving)."""
    if delta_pct is None or half_width_pct is None:
        return "inconclusive"
    target = 100.0 * (min_saving or 0.0)
    saving = -delta_pct
    if saving - half_width_pct > target:
        return "greener"
    if saving + half_width_pct < target:
        return "not greener"
    return "inconclusive"


def not_greener(delta: float | None, half_width: float | None) -> bool:
    """True unless energy per token is lower within its CI (upper bound of the change < 0)."""
    if delta is None:
        return True
    return delta + (half_width or 0.0) >= 0.0


def primary_metric(metrics: dict[str, Any]) -> tuple[str, bool] | None:
    """The metric a variant is judged by for one eval: (name, higher_is_better)."""
    for name in ACCURACY_METRICS:
        if _num(metrics.get(name)) is not None:
            return name, True
    for name in LOWER_BETTER:
        if _num(metrics.get(name)) is not None:
            return name, False
    return None


def eval_delta(var: dict[str, Any], base: dict[str, Any]) -> dict[str, Any] | None:
    """Delta of one eval (flat ``EvalResult.to_json()`` dicts). Accuracy: pp with stderr;
    perplexity-like: relative change."""
    pm = primary_metric(base)
    if pm is None:
        return None
    name, higher = pm
    v, b = _num(var.get(name)), _num(base.get(name))
    out: dict[str, Any] = {
        "task": base.get("task"),
        "metric": name,
        "higher_is_better": higher,
        "baseline": b,
        "variant": v,
    }
    if higher:
        se_v, se_b = _num(var.get(f"{name}_stderr")), _num(base.get(f"{name}_stderr"))
        out["delta_pp"] = None if v is None or b is None else (v - b) * 100.0
        out["stderr_pp"] = (
            None
            if se_v is None and se_b is None
            else math.sqrt((se_v or 0.0) ** 2 + (se_b or 0.0) ** 2) * 100.0
        )
    else:
        d, _ = rel_delta(v, b)
        out["delta_pct"] = None if d is None else d * 100.0
    return out


def bench_deltas(var: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Percent changes of the bench metrics (flat ``BenchResult.to_json()`` dicts)."""
    out: dict[str, Any] = {}
    for metric, label in (
        ("energy_per_token_j", "energy_per_token"),
        ("energy_per_request_j", "energy_per_request"),
        ("e2e_latency_s", "latency"),
        ("size_bytes", "size"),
        ("peak_memory_bytes", "peak_memory"),
        ("tokens_per_wh", "tokens_per_wh"),
        ("edp_js", "edp"),
    ):
        d, hw = rel_delta(
            var.get(metric), base.get(metric), var.get(f"{metric}_ci95"), base.get(f"{metric}_ci95")
        )
        out[f"{label}_pct"] = None if d is None else d * 100.0
        out[f"{label}_pct_ci95"] = None if hw is None else hw * 100.0
    return out


def accuracy_drop_pp(evals: Iterable[dict[str, Any]]) -> float | None:
    """The largest accuracy drop (pp, positive = worse) over evals with an accuracy metric."""
    drops = [-e["delta_pp"] for e in evals if e and e.get("delta_pp") is not None]
    return max(drops) if drops else None


def check_targets(
    targets: dict[str, Any], deltas: dict[str, Any], evals: list[dict[str, Any]]
) -> dict[str, Any]:
    """{target: {"value", "limit", "pass"}} for the targets the recipe sets."""
    out: dict[str, Any] = {}
    limit = _num(targets.get("max_accuracy_drop_pp"))
    if limit is not None:
        drop = accuracy_drop_pp(evals)
        out["max_accuracy_drop_pp"] = {
            "value": drop,
            "limit": limit,
            "pass": None if drop is None else drop <= limit,
        }
    limit = _num(targets.get("min_energy_saving"))
    if limit is not None:
        d = deltas.get("energy_per_token_pct")
        saving = None if d is None else -d / 100.0
        out["min_energy_saving"] = {
            "value": saving,
            "limit": limit,
            "pass": None if saving is None else saving >= limit,
        }
    return out


def quality(evals: list[dict[str, Any]]) -> tuple[float | None, str | None, bool]:
    """One quality number per variant for the Pareto plot: mean accuracy over evals that
    have one, else the first perplexity-like metric. Returns (value, label, higher_better)."""
    accs = [
        (a, pm[0])
        for e in evals
        if (pm := primary_metric(e)) and pm[1] and (a := _num(e.get(pm[0]))) is not None
    ]
    if accs:
        return sum(a for a, _ in accs) / len(accs), "mean accuracy", True
    for e in evals:
        pm = primary_metric(e)
        if pm and _num(e.get(pm[0])) is not None:
            label = pm[0] if e.get("task") == pm[0] else f"{e.get('task')} {pm[0]}"
            return _num(e.get(pm[0])), label, False
    return None, None, True


def pareto_front(
    points: list[tuple[str, float | None, float | None]], higher_better: bool = True
) -> list[str]:
    """Names not dominated in (lower energy, better quality). Points missing a value are out."""
    pts = [
        (n, e, q if higher_better else -q)
        for n, e, q in points
        if e is not None and q is not None and _num(e) is not None and _num(q) is not None
    ]
    front = []
    for n, e, q in pts:
        dominated = any((e2 <= e and q2 >= q) and (e2 < e or q2 > q) for _, e2, q2 in pts)
        if not dominated:
            front.append(n)
    return front
