"""One variant of the results document: its stored results as a record (``variant_record``)
and what is derived against its baseline (``derive``: deltas, verdict, payback, targets,
emissions), plus the quality / Pareto marks (``mark_quality``). Shared by the report of one
run (build.py), of a study (study.py) and of a comparison of stores (compare.py). No torch."""

from __future__ import annotations

from typing import Any

from ..store import Store
from . import analysis as A


def _emissions(energy_j: float | None, c: dict[str, Any]) -> float | None:
    if energy_j is None:
        return None
    from .. import carbon

    return float(carbon.emissions_g(energy_j, c["intensity_g_per_kwh"], c["pue"]))


def _step_json(s) -> dict[str, Any]:
    e = s.energy
    return {
        "step": s.step,
        "method": s.method,
        "config": s.config,
        "duration_s": s.duration_s,
        "energy_j": None if e is None else e.energy_j,
        "net_energy_j": None if e is None else e.net_energy_j,
        "estimated": None if e is None else e.estimated,
        "meters": [] if e is None else list(e.meters),
        "size_bytes_before": s.size_bytes_before,
        "size_bytes_after": s.size_bytes_after,
        "stats": s.stats,
        "started_at_unix_s": None if e is None else e.started_at_unix_s,
    }


def _window(bench) -> dict[str, Any] | None:
    """The bench's whole measured window (for emissions.csv and the methodology)."""
    if bench is None or bench.energy is None:
        return None
    e = bench.energy
    return {
        "energy_j": e.energy_j,
        "net_energy_j": e.net_energy_j,
        "duration_s": e.duration_s,
        "sampling_hz": e.sampling_hz,
        "samples": e.samples,
        "method": e.method,
        "estimated": e.estimated,
        "meters": list(e.meters),
        "idle_power_w": e.idle_power_w,
        "started_at_unix_s": e.started_at_unix_s,
    }


def _bench_windows(bench) -> list[dict[str, Any]]:
    """Every valid measured window of a bench (one per repeat); older stores without
    per-repeat rows give their one recorded window."""
    if bench is None:
        return []
    rows = [
        {
            "repeat": i + 1,
            "energy_j": r["energy_j"],
            "duration_s": r.get("duration_s"),
            "started_at_unix_s": r.get("started_at_unix_s"),
        }
        for i, r in enumerate(bench.per_repeat)
        if r.get("energy_j") is not None
    ]
    if rows or bench.per_repeat:
        return rows
    w = _window(bench)
    return [{"repeat": None, "energy_j": w["energy_j"], "duration_s": w["duration_s"]}] if w else []


def _warnings(name: str, steps, bench) -> tuple[list[str], bool]:
    """(warning lines, whether a compression step's energy window is invalid)."""
    from ..measure import invalid_window_reasons

    out, bad_step = [], False
    for i, s in enumerate(steps):
        if s.energy is None:
            continue
        bad = invalid_window_reasons(s.energy)
        if bad:
            bad_step = True
            out.append(
                f"{name}: step {i + 1} ({s.step}): energy window invalid "
                f"({'; '.join(bad)}); its compression energy is unknown"
            )
    for w in bench.warnings if bench is not None else ():
        out.append(f"{name}: bench {w}")
    return out, bad_step


def derive(
    v: dict[str, Any], base: dict[str, Any], carbon: dict[str, Any], targets: dict[str, Any]
) -> None:
    b, vb = base.get("bench") or {}, v.get("bench") or {}
    deltas: dict[str, Any] = {}
    boundary_v = (vb.get("device") or {}).get("boundary")
    boundary_b = (b.get("device") or {}).get("boundary")
    cross = bool(boundary_v and boundary_b and boundary_v != boundary_b)
    if v is not base and vb and b and not cross:
        deltas = A.bench_deltas(vb, b)  # unpaired: size, memory (and old stores)
        rows = v.get("_per_repeat") or []
        if any(r.get("paired") for r in rows):
            deltas.update(A.paired_deltas(vb, rows))
            deltas["basis"] = "paired rounds"
        else:
            deltas["basis"] = "unpaired (independent repeats)"
    elif cross:
        deltas["basis"] = (
            f"none: the baseline was measured at the {boundary_b} boundary and this variant at "
            f"the {boundary_v} boundary; energies across boundaries are not compared"
        )
    ev = []
    if v is not base:
        for e_v, e_b in zip(v["evals"], base["evals"]):
            ev.append(A.eval_delta(e_v, e_b) if e_v and e_b else None)
    deltas["evals"] = ev
    v["deltas"] = deltas
    v["boundary"] = boundary_v
    headline = (vb.get("workload") or {}).get("headline_metric") or "energy_per_token_j"
    if headline == "net_energy_per_token_j" and vb.get("net_energy_per_token_j") is None:
        headline = "energy_per_token_j"
    v["headline_metric"] = headline
    req_j = vb.get("energy_per_request_j")
    v["emissions_g_per_1000_inferences"] = _emissions(
        None if req_j is None else 1000.0 * req_j, carbon
    )
    v["compression_emissions_g"] = _emissions(v["compression_energy_j"], carbon)
    v["tokens_per_wh"] = vb.get("tokens_per_wh")
    v["edp_js"] = vb.get("edp_js")
    v["flagged_windows"] = sum(1 for r in v.get("_per_repeat") or [] if r.get("flags"))
    v["excluded_windows"] = sum(
        1 for r in v.get("_per_repeat") or [] if r.get("excluded") or r.get("invalid")
    )
    v["rerun_windows"] = sum(int(r.get("reruns") or 0) for r in v.get("_per_repeat") or [])
    if v is base:
        v["payback_inferences"], v["not_greener"], v["targets"] = None, False, {}
        v["verdict"] = None
        return
    label = "net_energy_per_token" if headline.startswith("net_") else "energy_per_token"
    d, hw = deltas.get(f"{label}_pct"), deltas.get(f"{label}_pct_ci95")
    v["headline_delta_pct"], v["headline_delta_pct_ci95"] = d, hw
    v["verdict"] = A.verdict(d, hw, _num_or_none(targets.get("min_energy_saving")))
    precision = (vb.get("workload") or {}).get("precision")
    v["verdict_note"] = (
        f"inconclusive (±{hw:.1f} % > precision ±{100 * float(precision):.0f} %): rerun with "
        "more rounds or on a quieter machine"
        if v["verdict"] == "inconclusive" and hw is not None and precision and hw > 100 * precision
        else "inconclusive: no significant difference"
        if v["verdict"] == "inconclusive" and hw is not None
        else "inconclusive: no confidence interval (one round, or no paired windows)"
        if v["verdict"] == "inconclusive"
        else v["verdict"]
    )
    # unknown compression energy (a step's meter failed, or steps missing), or an
    # inconclusive energy change: no payback is computed
    v["payback_inferences"] = (
        None
        if v["compression_energy_j"] is None or v["verdict"] == "inconclusive"
        else A.payback_inferences(v["compression_energy_j"], b.get("energy_per_request_j"), req_j)
    )
    v["not_greener"] = v["verdict"] == "not greener"
    v["targets"] = A.check_targets(targets, deltas, [e for e in ev if e])
    if "min_energy_saving" in v["targets"]:
        v["targets"]["min_energy_saving"]["pass"] = (
            None if v["verdict"] == "inconclusive" else v["verdict"] == "greener"
        )


def _num_or_none(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def variant_record(store: Store, entry: dict[str, Any], name: str) -> tuple[dict, list[str]]:
    """(the variant's record before ``derive``, its warnings) from the store, for one plan
    entry; ``name`` is what the report calls it (a study cell's label)."""
    steps = store.steps(entry["variant_key"])
    evals = [store.get_eval(k) for k in entry["eval_keys"]]
    bench = store.get_bench(entry["bench_key"])
    comp_j = sum(s.energy.energy_j for s in steps if s.energy is not None) if steps else 0.0
    complete = (
        len(steps) == len(entry["steps"])
        and all(e is not None for e in evals)
        and bench is not None
    )
    warn, bad_step = _warnings(name, steps, bench)
    record = {
        "name": name,
        "variant_key": entry["variant_key"],
        "definition": entry["steps"],
        "steps": [_step_json(s) for s in steps],
        "evals": [e.to_json() if e is not None else None for e in evals],
        "bench": bench.to_json() if bench is not None else None,
        "bench_window": _window(bench),
        "bench_windows": _bench_windows(bench),
        "compression_energy_j": (
            comp_j if len(steps) == len(entry["steps"]) and not bad_step else None
        ),
        "warnings": warn,
        "compression_duration_s": sum(s.duration_s for s in steps),
        "compression_estimated": any(s.energy is not None and s.energy.estimated for s in steps),
        "complete": complete,
        "_per_repeat": list(bench.per_repeat) if bench is not None else [],
    }
    return record, warn


def mark_quality(
    variants: list[dict[str, Any]], group: str | None = None
) -> tuple[str | None, bool, list[str]]:
    """Set every variant's ``quality`` and ``pareto``; returns (quality label, higher is
    better, the names on the Pareto front). With ``group`` (a key of the variants, such as
    ``"device"``) each group has its own front: a variant is only compared with those that
    ran where it ran."""
    qual = [A.quality([e for e in v["evals"] if e])[0] for v in variants]
    q_label, q_higher = None, True
    for v in variants:
        _, lab, hb = A.quality([e for e in v["evals"] if e])
        if lab:
            q_label, q_higher = lab, hb
            break
    keys = [None if group is None else v.get(group) for v in variants]
    on_front: set[str] = set()
    for key in dict.fromkeys(keys):
        points = [
            (v["name"], (v["bench"] or {}).get("energy_per_token_j"), q)
            for v, q, k in zip(variants, qual, keys)
            if k == key
        ]
        on_front.update(A.pareto_front(points, q_higher))
    front = [v["name"] for v in variants if v["name"] in on_front]
    for v, q in zip(variants, qual):
        v["quality"] = q
        v["pareto"] = v["name"] in front
    return q_label, q_higher, front
