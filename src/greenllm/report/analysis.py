"""Variant-versus-baseline arithmetic: deltas with propagated CIs, payback, flags, Pareto.

Pure functions on plain dicts (the stored ``BenchResult`` / ``EvalResult`` records), no torch,
no plotting. Internal units only (J, s, bytes); display conversion lives in tables/html.

Confidence intervals: a bench reports the 95 % half-width of each mean over its repeats. For a
relative change ``d = v / b - 1`` the half-width is propagated to first order (delta method,
independent runs): ``hw(d) = (v / b) * sqrt((hw_v / v)^2 + (hw_b / b)^2)``. Accuracy deltas are
in percentage points with ``stderr = sqrt(se_v^2 + se_b^2)`` (independent-samples bound; the
items are shared, so the paired stderr would be smaller).
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
