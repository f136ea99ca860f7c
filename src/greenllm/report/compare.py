"""``greenllm compare DIR [DIR ...] --out DIR``: one study report from stores produced
separately (each Jetson ran ``greenllm run study.yaml --only-device NAME``, or a plain
one-model recipe on each machine).

Each input's latest run is collected (report/study.py); entries that name no device take
the label given with ``--label DIR=NAME``, else the device profile that run detected, else
the folder name. The inputs must hold one study: the same recipe up to where it ran (the
study hash: ``greenllm.recipe.digest`` of the recipe without ``output``, ``devices`` and
``compress_on``), and no (model, variant, device) cell twice. Anything else is refused with
one ``DataError`` naming what differs. The output directory gets the full report set plus
``compare.json`` (the inputs: path, run id, study hash), written as one set. No torch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..store import STORE_FILENAME, Store
from . import study as S

COMPARE_FILE = "compare.json"
COMPARE_SCHEMA = 1


def parse_labels(specs: list[str]) -> dict[Path, str]:
    """``["DIR=NAME", ...]`` (the --label options) -> {resolved DIR: NAME}."""
    from ..limits import check_safe_name

    out: dict[Path, str] = {}
    for spec in specs:
        d, sep, name = spec.rpartition("=")
        if not sep or not d or not name:
            raise ConfigError(f"--label: {spec!r} is not DIR=NAME (for example runs/orin=orin)")
        check_safe_name(name, "--label")
        out[Path(d).expanduser().resolve()] = name
    return out


def _open(d: Path) -> Store:
    if not d.exists():
        raise DataError(f"{str(d)!r}: no such directory; give the output directory of a run")
    if d.is_dir() and not (d / STORE_FILENAME).exists():
        raise DataError(
            f"{str(d)!r} is not a greenllm output directory (no {STORE_FILENAME} in it); give "
            "the directory 'greenllm run' wrote"
        )
    return Store(d, create=False)


def _differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The top-level recipe fields that differ, a mapping's differing keys in brackets:
    ``model (id)``."""
    out = []
    for k in dict.fromkeys([*a, *b]):
        x, y = a.get(k), b.get(k)
        if k in S.HASH_IGNORED or x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            sub = [j for j in dict.fromkeys([*x, *y]) if x.get(j) != y.get(j)]
            out.append(f"{k} ({', '.join(map(str, sub))})")
        else:
            out.append(str(k))
    return out


def _check_same_study(inputs: list[tuple[Path, dict[str, Any]]]) -> str:
    (d0, run0), hashes = inputs[0], [S.study_hash(r["recipe"]) for _, r in inputs]
    for (d, run), h in zip(inputs[1:], hashes[1:]):
        if h != hashes[0]:
            fields = _differing_fields(run0["recipe"], run["recipe"])
            raise DataError(
                f"{str(d)!r} ran a different recipe than {str(d0)!r} (study hash {h} vs "
                f"{hashes[0]}): recipe field(s) {', '.join(fields)} differ; compare only "
                "stores of one recipe (only output, devices and compress_on may differ)"
            )
    return hashes[0]


def _check_cells(sources: list[S.Source]) -> None:
    seen: dict[tuple[str, str, str], Path] = {}
    for src in sources:
        default_model = S.recipe_models(src.run["recipe"])[0]["name"]
        for e in src.run["plan"]:
            device = e.get("device") or src.device_label or S.detected_label(src.run, src.out_dir)
            key = (str(e.get("model") or default_model), str(e["name"]), str(device))
            if key in seen:
                hint = "" if e.get("device") else "; name the devices apart with --label DIR=NAME"
                raise DataError(
                    f"the cell {S.cell_label(key[1], key[0], key[2])!r} (variant, model, "
                    f"device) is in both {str(seen[key])!r} and {str(src.out_dir)!r}; a cell "
                    f"may come from one store only{hint}"
                )
            seen[key] = src.out_dir


def compare(
    dirs: Sequence[str | Path], out: str | Path, labels: dict[Path, str] | None = None
) -> list[Path]:
    """Write the cross report of the stores in ``dirs`` to ``out``; returns the paths
    written. ``labels``: {store directory: device name} for entries that name no device."""
    from .build import carbon_doc, write_doc

    labels = dict(labels or {})
    paths = [Path(d).expanduser().resolve() for d in dirs]
    if not paths:
        raise ConfigError("compare: give at least one output directory")
    for p in paths:
        if paths.count(p) > 1:
            raise ConfigError(f"compare: {str(p)!r} is given twice")
    unknown = [str(p) for p in labels if p not in paths]
    if unknown:
        raise ConfigError(f"--label: {', '.join(unknown)} is not one of the compared directories")
    out_p = Path(out).expanduser().resolve()
    if out_p in paths:
        raise ConfigError(
            f"--out: {str(out_p)!r} is one of the inputs (its own report would be replaced); "
            "write the comparison to another directory"
        )
    stores: list[Store] = []
    try:
        inputs = []
        for p in paths:
            stores.append(_open(p))
            run = stores[-1].latest_run()
            if run is None:
                raise DataError(f"{str(p)!r} holds no run yet; run 'greenllm run RECIPE' first")
            if p in labels and all(e.get("device") for e in run["plan"]):
                raise ConfigError(
                    f"--label: {str(p)!r} holds a study whose cells name their devices; a label "
                    "names the device of a plain recipe's store"
                )
            inputs.append((p, run))
        h = _check_same_study(inputs)
        sources = [S.Source(s, run, p, labels.get(p)) for s, (p, run) in zip(stores, inputs)]
        _check_cells(sources)
        doc = S.collect_study(sources, carbon_doc(inputs[0][1]["recipe"].get("carbon") or {}))
    finally:
        for s in stores:
            s.close()
    listing = {
        "schema_version": COMPARE_SCHEMA,
        "study_hash": h,
        "inputs": [
            {
                "path": str(p),
                "run_id": run["id"],
                "status": run["status"],
                "recipe": run["recipe"].get("name"),
                "study_hash": S.study_hash(run["recipe"]),
                "cells": len(run["plan"]),
                "label": labels.get(p),
            }
            for p, run in inputs
        ],
    }
    doc["compare"] = listing
    return write_doc(doc, out_p, {COMPARE_FILE: json.dumps(listing, indent=2) + "\n"})
