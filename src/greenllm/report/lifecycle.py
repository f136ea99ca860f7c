"""Lifecycle carbon of every variant, in the shape of the Software Carbon Intensity
specification (ISO/IEC 21031): SCI = (E x I + M) per R, with R one inference or one token.

- E x I (operational): the energy of the measured windows integrated against the grid
  intensity at their timestamps where an intensity series is configured (``carbon.
  intensity_series``, or the series ``greenllm run`` recorded from ``carbon.provider`` in
  ``OUT/intensity_series.csv``); else the annual figure of the region (or the explicit g/kWh);
- M (embodied): the device's embodied kg CO2e x the device time of the work / (service life
  x utilisation) (``greenllm.embodied``);
- a line normalised to a reference grid (the world average) so that results from different
  countries compare; location-based and market-based accounting are never mixed.

``apply(doc, carbon_cfg, out_dir)`` adds the keys to the results.json document; nothing here
touches the network. No torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..units import J_PER_KWH

RECORDED_SERIES = "intensity_series.csv"
RECORDED_META = "intensity.json"


def _series(cfg: dict[str, Any], out_dir: Path) -> tuple[Any, str | None, str | None]:
    """(IntensitySeries or None, what was used, a problem) for the report."""
    from ..errors import GreenLLMError
    from ..intensity import load_series_csv

    if cfg.get("intensity_series"):
        raw = Path(str(cfg["intensity_series"])).expanduser()
        # as given (absolute / the working directory), beside the store, or the copy that
        # `greenllm run` recorded in the output directory (the recipe's folder is not stored)
        cands = (raw,) if raw.is_absolute() else (raw, out_dir / raw)
        for cand in (*cands, out_dir / RECORDED_SERIES):
            if cand.is_file():
                src = f"file {raw.name}" + (
                    " (the copy recorded by greenllm run)" if cand.name == RECORDED_SERIES else ""
                )
                try:
                    return load_series_csv(cand, source=src), f"series file {raw}", None
                except GreenLLMError as exc:
                    return None, None, str(exc)
        return None, None, f"carbon.intensity_series {str(raw)!r} not found"
    if cfg.get("provider"):
        meta: dict[str, Any] = {}
        try:
            meta = json.loads((out_dir / RECORDED_META).read_text())
        except (OSError, ValueError):
            pass
        rec = out_dir / RECORDED_SERIES
        if rec.is_file():
            try:
                s = load_series_csv(rec, source=str(meta.get("source") or cfg["provider"]))
            except GreenLLMError as exc:
                return None, None, str(exc)
            return s, f"provider {cfg['provider']} ({meta.get('kind', 'recorded')})", None
        why = meta.get("error") or "no intensity was recorded for this run"
        return None, None, f"provider {cfg['provider']}: {why}"
    return None, None, None


def _window_starts(windows: list[dict[str, Any]], last_start: float | None) -> list[float | None]:
    """Start times of the bench's windows: recorded ones, else reconstructed backwards from the
    last window's recorded start (repeats run back to back)."""
    starts: list[float | None] = [w.get("started_at_unix_s") for w in windows]
    if all(s is not None for s in starts) or last_start is None or not windows:
        return starts
    t = float(last_start)
    out: list[float | None] = [None] * len(windows)
    out[-1] = t
    for i in range(len(windows) - 2, -1, -1):
        t -= float(windows[i].get("duration_s") or 0.0)
        out[i] = t
    return out


def apply(doc: dict[str, Any], carbon_cfg: dict[str, Any], out_dir: Path) -> None:
    from .. import carbon as C
    from ..devices import PROFILES
    from ..embodied import amortised_g, embodied_for
    from ..errors import DataError, GreenLLMError
    from ..intensity import reference_intensity, window_emissions
    from ..schedule import read_decision

    c = doc["carbon"]
    pue = float(c.get("pue") or 1.0)
    signal = str(carbon_cfg.get("signal") or "average")
    accounting = str(carbon_cfg.get("accounting") or "location")
    allow_table = carbon_cfg.get("fallback") == "table"
    series, series_used, problem = _series(carbon_cfg, out_dir)
    notes: list[str] = []
    if problem:
        notes.append(problem)
    time_resolved = bool(carbon_cfg.get("intensity_series") or carbon_cfg.get("provider"))

    hw = (doc.get("environment") or {}).get("hardware") or {}
    dev_name = carbon_cfg.get("device") or (hw.get("device_profile") or {}).get("name")
    profile = PROFILES.get(str(dev_name)) if dev_name else None
    try:
        emb = embodied_for(
            profile,
            kg_co2e=carbon_cfg.get("embodied_kg_co2e"),
            service_life_years=carbon_cfg.get("service_life_years"),
            utilisation=carbon_cfg.get("utilisation"),
            die_area_mm2=carbon_cfg.get("die_area_mm2"),
        )
    except GreenLLMError as exc:
        emb = embodied_for(None)
        notes.append(f"embodied: {exc}")

    ref: tuple[float, str] | None = None
    if carbon_cfg.get("reference_g_per_kwh") is not None:
        ref = (float(carbon_cfg["reference_g_per_kwh"]), "recipe (carbon.reference_g_per_kwh)")
    elif accounting == "location":
        try:
            ref = reference_intensity()
        except GreenLLMError as exc:
            notes.append(f"no world-average reference: {exc}")

    def op(energy_j: float, start: float | None, dur: float) -> tuple[float | None, str, float]:
        """(g, source, g/kWh) of one window."""
        annual = float(c["intensity_g_per_kwh"])
        table_src = f"annual {c.get('source') or 'user'} figure"
        if not time_resolved:
            return C.emissions_g(energy_j, annual, pue), table_src, annual
        if series is not None and start is not None:
            try:
                w = window_emissions(energy_j, start, dur, series, pue=pue, signal=signal)
                return w.emissions_g, f"{series.source} ({signal})", w.mean_g_per_kwh
            except DataError as exc:
                why = str(exc)
        else:
            why = problem or "the window has no recorded start time"
        if allow_table:
            return C.emissions_g(energy_j, annual, pue), f"{table_src} (fallback: {why})", annual
        return None, f"unknown ({why}; carbon.fallback: table would use the annual figure)", 0.0

    sources: set[str] = set()
    for v in doc["variants"]:
        for s in v.get("steps") or []:
            if s.get("energy_j") is not None:
                g, src, gi = op(s["energy_j"], s.get("started_at_unix_s"), s["duration_s"] or 0.0)
                s.update(emissions_g=g, intensity_source=src, intensity_g_per_kwh=gi)
                sources.add(src)
        step_g = [
            s.get("emissions_g") for s in v.get("steps") or [] if s.get("energy_j") is not None
        ]
        if time_resolved and v.get("compression_energy_j") is not None:
            v["compression_emissions_g"] = None if None in step_g else sum(step_g)
        b = v.get("bench") or {}
        windows = v.get("bench_windows") or []
        last = (v.get("bench_window") or {}).get("started_at_unix_s")
        total_g: float | None = 0.0
        for w, start in zip(windows, _window_starts(windows, last)):
            g, src, gi = op(w["energy_j"], start, w.get("duration_s") or 0.0)
            w.update(
                started_at_unix_s=start, emissions_g=g, intensity_source=src, intensity_g_per_kwh=gi
            )
            sources.add(src)
            total_g = None if g is None or total_g is None else total_g + g
        n_prompts = (b.get("workload") or {}).get("n_prompts") or (doc.get("workload") or {}).get(
            "n_prompts"
        )
        req_j = b.get("energy_per_request_j")
        if windows and total_g is not None and n_prompts:
            op_1000 = total_g / (len(windows) * n_prompts) * 1000.0
        elif windows:
            op_1000 = None
        else:
            op_1000 = v.get("emissions_g_per_1000_inferences")
        if time_resolved:
            v["emissions_g_per_1000_inferences_annual"] = v.get("emissions_g_per_1000_inferences")
            v["emissions_g_per_1000_inferences"] = op_1000
        dur = b.get("duration_s")
        t_req = dur / n_prompts if dur is not None and n_prompts else None
        emb_1000 = None if t_req is None else amortised_g(emb, 1000.0 * t_req)
        total = None if op_1000 is None or emb_1000 is None else op_1000 + emb_1000
        tok = b.get("output_tokens")
        tok_req = tok / n_prompts if tok and n_prompts else None
        v["device_time_s_per_1000_inferences"] = None if t_req is None else 1000.0 * t_req
        v["operational_g_per_1000_inferences"] = op_1000
        v["embodied_g_per_1000_inferences"] = emb_1000
        v["total_g_per_1000_inferences"] = total
        v["embodied_share_pct"] = (
            None if total is None or total <= 0 or emb_1000 is None else emb_1000 / total * 100.0
        )
        v["sci_g_per_inference"] = None if total is None else total / 1000.0
        v["sci_g_per_token"] = None if total is None or not tok_req else total / 1000.0 / tok_req
        v["compression_embodied_g"] = amortised_g(emb, float(v.get("compression_duration_s") or 0))
        if ref is not None and req_j is not None:
            ref_op = 1000.0 * req_j / J_PER_KWH * ref[0] * pue
            v["reference_grid_total_g_per_1000_inferences"] = (
                None if emb_1000 is None else ref_op + emb_1000
            )
            v["reference_grid_operational_g_per_1000_inferences"] = ref_op
        else:
            v["reference_grid_total_g_per_1000_inferences"] = None
            v["reference_grid_operational_g_per_1000_inferences"] = None

    doc["lifecycle"] = {
        "accounting": accounting,
        "signal": signal,
        "time_resolved": time_resolved,
        "series": None
        if series is None
        else {
            "source": series.source,
            "used": series_used,
            "start_unix_s": series.start_unix_s,
            "end_unix_s": series.end_unix_s,
            "points": len(series.points),
            "period_s": series.period_s,
            "forecast_points": sum(p.forecast for p in series.points),
        },
        "window_sources": sorted(sources),
        "embodied": emb.to_dict(),
        "reference": None if ref is None else {"g_per_kwh": ref[0], "source": ref[1]},
        "notes": notes,
    }
    doc["schedule"] = read_decision(out_dir)
    from .statements import lifecycle_methodology, lifecycle_statement

    doc["lifecycle_statement"] = lifecycle_statement(doc)
    doc["methodology"] = (doc.get("methodology") or "") + " " + lifecycle_methodology(doc)
    if time_resolved:  # the carbon statement's per-1,000 figures are now the resolved ones
        from .statements import carbon_statement

        doc["carbon_statement"] = carbon_statement(doc)
