"""``write_report(store_or_dir, out_dir=None)``: the results store -> every report file.

``collect(store)`` turns the latest run's plan and its stored results into the results.json
document; the writers in tables / plots / html / statements render it. The files are replaced
as a set (staged in a folder inside the output directory, then swapped in; see
``write_report``), so a killed report never leaves a mix of old and new files. No torch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..fsutil import atomic_write
from ..outdir import report_lock, storage_error
from ..results import SCHEMA_VERSION
from ..store import Store, store_path
from . import analysis as A


def _intensity(carbon_cfg: dict[str, Any]) -> dict[str, Any]:
    from .. import carbon

    it = carbon.grid_intensity(
        region=carbon_cfg.get("region"), intensity_g_per_kwh=carbon_cfg.get("intensity_g_per_kwh")
    )
    return {
        "region": it.region,
        "country_name": getattr(it, "country_name", None),
        "intensity_g_per_kwh": float(it.g_per_kwh),
        "source": it.source,
        "year": it.year,
        "pue": float(carbon_cfg.get("pue") or 1.0),
    }


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


def collect(store: Store) -> dict[str, Any]:
    """The results.json document for the store's latest run."""
    run = store.latest_run()
    if run is None:
        raise DataError(f"{str(store.path)!r} holds no run yet; run 'greenllm run RECIPE' first")
    recipe = run["recipe"]
    carbon = _intensity(recipe.get("carbon") or {})
    targets = recipe.get("targets") or {}
    variants: list[dict[str, Any]] = []
    warnings: list[str] = []
    for entry in run["plan"]:
        steps = store.steps(entry["variant_key"])
        evals = [store.get_eval(k) for k in entry["eval_keys"]]
        bench = store.get_bench(entry["bench_key"])
        comp_j = sum(s.energy.energy_j for s in steps if s.energy is not None) if steps else 0.0
        complete = (
            len(steps) == len(entry["steps"])
            and all(e is not None for e in evals)
            and bench is not None
        )
        warn, bad_step = _warnings(entry["name"], steps, bench)
        warnings += warn
        variants.append(
            {
                "name": entry["name"],
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
                "compression_estimated": any(
                    s.energy is not None and s.energy.estimated for s in steps
                ),
                "complete": complete,
                "_per_repeat": list(bench.per_repeat) if bench is not None else [],
            }
        )
    base = variants[0]
    for v in variants:
        _derive(v, base, carbon, targets)
    for v in variants:
        v.pop("_per_repeat", None)
    qual = [(v["name"], *A.quality([e for e in v["evals"] if e])[:1]) for v in variants]
    q_label, q_higher = None, True
    for v in variants:
        _, lab, hb = A.quality([e for e in v["evals"] if e])
        if lab:
            q_label, q_higher = lab, hb
            break
    points = [
        (n, (v["bench"] or {}).get("energy_per_token_j"), q) for (n, q), v in zip(qual, variants)
    ]
    front = A.pareto_front(points, q_higher)
    for v, (_, q) in zip(variants, qual):
        v["quality"] = q
        v["pareto"] = v["name"] in front
    doc = {
        "schema_version": SCHEMA_VERSION,
        "recipe": recipe.get("name"),
        "run": {k: run[k] for k in ("id", "status", "started_at_unix_s", "finished_at_unix_s")},
        "model": recipe.get("model"),
        "workload": recipe.get("workload"),
        "environment": run.get("environment") or {},
        "carbon": carbon,
        "targets": targets,
        "quality_metric": q_label,
        "quality_higher_is_better": q_higher,
        "pareto": front,
        "variants": variants,
        "warnings": warnings,
    }
    from .statements import carbon_statement, methodology

    doc["methodology"] = methodology(doc)
    doc["carbon_statement"] = carbon_statement(doc)
    _lifecycle(doc, recipe.get("carbon") or {}, Path(store.path).parent)
    return doc


def _lifecycle(doc: dict[str, Any], carbon_cfg: dict[str, Any], out_dir: Path) -> None:
    """Embodied + operational + total emissions per variant (SCI), per-window intensity, the
    reference-grid line and the scheduling counterfactual (report/lifecycle.py)."""
    from . import lifecycle

    lifecycle.apply(doc, carbon_cfg, out_dir)


def _derive(
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


REPORT_FILES = (
    "results.json",
    "results.csv",
    "emissions.csv",
    "report.md",
    "report.tex",
    "report.html",
    "energy_per_token.png",
    "energy_per_token.pdf",
    "pareto.png",
    "pareto.pdf",
)
SWAP_MARKER = ".report-swap.json"
STAGE_PREFIX = ".report-new-"


def report_files_in(out: str | Path) -> list[Path]:
    """The report files present in ``out``."""
    return [Path(out) / n for n in REPORT_FILES if (Path(out) / n).exists()]


def _apply_swap(out: Path, marker: dict[str, Any]) -> None:
    stage = out / marker["stage"]
    for name in marker["files"]:
        src = stage / name
        if src.exists():  # absent: moved in by an earlier, killed swap
            os.replace(src, out / name)
    for name in marker["remove"]:
        (out / name).unlink(missing_ok=True)
    (out / SWAP_MARKER).unlink(missing_ok=True)
    shutil.rmtree(stage, ignore_errors=True)


def finish_swap(out: str | Path) -> bool:
    """Complete a report swap that a kill interrupted (the staged set is whole: the marker is
    written only after every file is staged); remove staging folders of killed writers that
    never got that far. True when a swap was completed."""
    out = Path(out)
    done = False
    mpath = out / SWAP_MARKER
    if mpath.exists():
        try:
            marker = json.loads(mpath.read_text())
            names = [str(n) for n in marker["files"]] + [str(n) for n in marker["remove"]]
            ok = (
                isinstance(marker["stage"], str)
                and marker["stage"].startswith(STAGE_PREFIX)
                and "/" not in marker["stage"]
                and all(n in REPORT_FILES for n in names)
            )
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if ok:
            _apply_swap(out, marker)
            done = True
        else:
            mpath.unlink(missing_ok=True)
    for stale in out.glob(STAGE_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    return done


def write_report(store_or_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Rebuild every report file from the store; returns the paths written.

    The files are replaced as a set: all are written into a staging folder inside the output
    directory, a marker naming them is written atomically, then each is renamed into place and
    the marker removed. A writer killed before the marker leaves the old set untouched; one
    killed after it leaves a whole new set staged, which the next ``write_report`` (or
    ``greenllm run``) moves in first (``finish_swap``)."""
    path = store_path(store_or_dir)
    out = Path(out_dir) if out_dir is not None else path.parent
    with Store(path, create=False) as store:
        doc = collect(store)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, out, "create the report directory") from None
    with report_lock(out):
        finish_swap(out)
        try:
            names = _stage_and_swap(doc, out)
        except OSError as exc:
            raise storage_error(exc, out, "write the report") from None
    return [out / n for n in names]


def _stage_and_swap(doc: dict[str, Any], out: Path) -> list[str]:
    from . import html, plots, tables

    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    try:
        files = [
            atomic_write(stage / "results.json", json.dumps(doc, indent=2, default=str) + "\n"),
            atomic_write(stage / "results.csv", tables.to_csv(doc)),
            atomic_write(stage / "emissions.csv", tables.emissions_csv(doc)),
            atomic_write(stage / "report.md", tables.to_markdown(doc)),
            atomic_write(stage / "report.tex", tables.to_latex(doc)),
        ]
        images = plots.write_plots(doc, stage, atomic_write)
        files += [p for pair in images.values() for p in pair]
        files.append(atomic_write(stage / "report.html", html.to_html(doc, images)))
        names = [p.name for p in files]
        stale = [p.name for p in report_files_in(out) if p.name not in names]
        marker = {"stage": stage.name, "files": names, "remove": stale}
        atomic_write(out / SWAP_MARKER, json.dumps(marker) + "\n")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _apply_swap(out, marker)
    return names
