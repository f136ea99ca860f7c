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
from .derive import derive as _derive
from .derive import mark_quality, variant_record


def carbon_doc(carbon_cfg: dict[str, Any]) -> dict[str, Any]:
    """The grid intensity and PUE of the recipe's ``carbon`` settings, as the document
    records them."""
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


def collect(store: Store) -> dict[str, Any]:
    """The results.json document for the store's latest run. A study's run (plan entries
    naming their model and device) is collected by report/study.py: every variant against
    the baseline of its own model on its own device."""
    run = store.latest_run()
    if run is None:
        raise DataError(f"{str(store.path)!r} holds no run yet; run 'greenllm run RECIPE' first")
    from . import study

    if study.is_study_plan(run["plan"]):
        source = study.Source(store, run, Path(store.path).parent)
        return study.collect_study([source], carbon_doc(run["recipe"].get("carbon") or {}))
    recipe = run["recipe"]
    carbon = carbon_doc(recipe.get("carbon") or {})
    targets = recipe.get("targets") or {}
    variants: list[dict[str, Any]] = []
    warnings: list[str] = []
    for entry in run["plan"]:
        record, warn = variant_record(store, entry, entry["name"])
        warnings += warn
        variants.append(record)
    base = variants[0]
    for v in variants:
        _derive(v, base, carbon, targets)
    for v in variants:
        v.pop("_per_repeat", None)
    q_label, q_higher, front = mark_quality(variants)
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
    # a study's (report/study.py) and a comparison's (report/compare.py) files
    "study.csv",
    "study_energy_heatmap.png",
    "study_energy_heatmap.pdf",
    "study_accuracy_energy.png",
    "study_accuracy_energy.pdf",
    "compare.json",
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
    return write_doc(doc, out)


def write_doc(doc: dict[str, Any], out: Path, extra: dict[str, str] | None = None) -> list[Path]:
    """Write the report files of ``doc`` (and ``extra``: file name -> text, names from
    ``REPORT_FILES``) into ``out`` as one set, as ``write_report`` does."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, out, "create the report directory") from None
    with report_lock(out):
        finish_swap(out)
        try:
            names = _stage_and_swap(doc, out, extra or {})
        except OSError as exc:
            raise storage_error(exc, out, "write the report") from None
    return [out / n for n in names]


def _stage_and_swap(doc: dict[str, Any], out: Path, extra: dict[str, str]) -> list[str]:
    from . import crosstab, html, plots, tables

    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    try:
        files = [
            atomic_write(stage / "results.json", json.dumps(doc, indent=2, default=str) + "\n"),
            atomic_write(stage / "results.csv", tables.to_csv(doc)),
            atomic_write(stage / "emissions.csv", tables.emissions_csv(doc)),
            atomic_write(stage / "report.md", tables.to_markdown(doc)),
            atomic_write(stage / "report.tex", tables.to_latex(doc)),
        ]
        if doc.get("study"):
            files.append(atomic_write(stage / "study.csv", crosstab.study_csv(doc)))
        for name, text in extra.items():
            if name not in REPORT_FILES:  # the swap moves only report files
                raise ValueError(f"{name!r} is not a report file")
            files.append(atomic_write(stage / name, text))
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
