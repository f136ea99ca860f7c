"""The report of a study: models x variants x devices, from one store or from several.

A study's plan entries name their ``model`` and ``device`` and come in groups, one model on
one device, each starting with its own baseline. Every variant is derived against the
baseline of its own group (energy deltas, verdicts, payback, eval deltas): never across
devices, never across models. A cell's ``name`` is its label ``"int8 · smollm2 @ orin"``
(the plain names stay in ``variant``, ``model``, ``device``); the Pareto front is drawn per
device. ``collect_study(sources, carbon)`` builds the results document from one or more
stores (``Source``); a store of a plain recipe (entries without a device) contributes one
group, whose device is named by ``Source.device_label``, else by the device profile that run
detected, else by its folder. The cross tables and plots render ``doc["study"]`` and each
cell's ``cross`` figures (crosstab.py, plots.py). No torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..results import SCHEMA_VERSION
from ..store import Store
from .derive import derive, mark_quality, variant_record
from .fmt import BASELINE

# recipe fields that may differ between the stores of one study: where it ran and to what
# folder (a store made with --only-device, or a plain recipe on each machine)
HASH_IGNORED = ("output", "devices", "compress_on")
LOCAL = "local"


@dataclass
class Source:
    """One store's latest run, as an input of a study report."""

    store: Store
    run: dict[str, Any]
    out_dir: Path  # the store's folder (its recorded intensity series, schedule decision)
    device_label: str | None = None  # names the device of entries that name none


def is_study_plan(plan: list[dict[str, Any]]) -> bool:
    return any("model" in e or "device" in e for e in plan)


def study_hash(recipe: dict[str, Any]) -> str:
    """What must be equal for two stores to be one study: the recipe without the fields
    naming where it ran (``HASH_IGNORED``)."""
    from ..recipe import digest

    return digest({k: v for k, v in recipe.items() if k not in HASH_IGNORED})


def cell_label(variant: str, model: str, device: str) -> str:
    """A cell's name in every table, plot and CSV: ``int8 · smollm2 @ orin``."""
    return f"{variant} · {model} @ {device}"


def model_name(model: dict[str, Any] | None) -> str:
    """The name of a recipe's one ``model`` (the last part of its id, as ``models:`` names
    a model without a name)."""
    tail = str((model or {}).get("id") or "model").rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.") or "model"


def recipe_models(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """[{name, id, dtype, device, ...}]: the recipe's ``models:``, or its one ``model``."""
    if recipe.get("models"):
        return [dict(m) for m in recipe["models"]]
    m = dict(recipe.get("model") or {})
    return [{"name": model_name(m), **m}]


def detected_label(run: dict[str, Any], out_dir: Path) -> str:
    """The device name of a plain recipe's store: the device profile its run detected, else
    the store's folder name."""
    hw = (run.get("environment") or {}).get("hardware") or {}
    prof = (hw.get("device") or {}).get("profile")
    return str(prof) if prof else (out_dir.resolve().name or "device")


def _profile_facts(profile: str | None) -> dict[str, Any]:
    from ..devices import PROFILES

    p = PROFILES.get(str(profile)) if profile else None
    if p is None:
        return {"title": None, "memory_bytes": None, "memory_type": None, "cpu": None, "gpu": None}
    return {
        "title": p.title,
        "kind": p.kind,
        "memory_bytes": p.memory_bytes,
        "memory_type": p.memory_type,
        "cpu": p.cpu,
        "cpu_cores": p.cpu_cores,
        "gpu": p.gpu,
        "gpu_cores": p.gpu_cores,
    }


def _device_entry(
    name: str, spec: dict[str, Any] | None, env: dict[str, Any], src: Source
) -> dict[str, Any]:
    hw = env.get("hardware") or {}
    detected = hw.get("device") or {}
    profile = (spec or {}).get("profile") or detected.get("profile")
    out = {
        "name": name,
        "profile": profile,
        "via": (spec or {}).get("via") or LOCAL,
        "torch_device": (spec or {}).get("torch_device") or hw.get("model_device"),
        **_profile_facts(profile),
        "hardware": {
            k: hw.get(k)
            for k in (
                "machine",
                "system",
                "cpu_count",
                "memory_bytes",
                "model_device",
                "nvidia_driver",
                "jetson_release",
            )
            if hw.get(k) is not None
        },
        "detected": detected,
        "node": env.get("node"),
        "store": str(src.out_dir),
    }
    if out["title"] is None:
        out["title"] = detected.get("title")
    return out


def _cross(v: dict[str, Any]) -> dict[str, Any]:
    """The figures of one cell in the cross tables (internal units)."""
    b = v.get("bench") or {}
    tok, dur = b.get("output_tokens"), b.get("duration_s")
    tps = tok / dur if tok and dur else b.get("decode_tokens_per_s")
    d = v.get("deltas") or {}
    return {
        "energy_per_token_j": b.get("energy_per_token_j"),
        "energy_per_token_j_ci95": b.get("energy_per_token_j_ci95"),
        "energy_per_token_pct": d.get("energy_per_token_pct"),
        "energy_per_token_pct_ci95": d.get("energy_per_token_pct_ci95"),
        "tokens_per_s": tps,
        "energy_per_inference_j": b.get("energy_per_request_j"),
        "quality": v.get("quality"),
        "edp_js": b.get("edp_js"),
        "tokens_per_wh": b.get("tokens_per_wh"),
        "wh_per_b_params": b.get("wh_per_b_params"),
        "edp_js_per_b_params": b.get("edp_js_per_b_params"),
    }


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _device_usage(
    device: str, cells: list[dict[str, Any]], compressed_here: bool, compress_on: str
) -> dict[str, Any]:
    """Seed 001's table 3 for one device: time spent (compression, evaluation, benchmark)
    and the mean CPU / GPU utilisation over its benchmark windows."""
    comp_s = 0.0
    seen: set[str] = set()
    for v in cells:
        if v["variant_key"] in seen:
            continue
        seen.add(v["variant_key"])
        comp_s += sum(
            float(s.get("duration_s") or 0.0)
            for s in v.get("steps") or []
            if not (s.get("stats") or {}).get("shared_with")  # a shared prefix ran once
        )
    eval_s = sum(float((e or {}).get("duration_s") or 0.0) for v in cells for e in v["evals"])
    bench_s, cpu, own, gpu = 0.0, [], [], []
    for v in cells:
        bench_s += float(((v.get("bench") or {}).get("workload") or {}).get("warmup_s") or 0.0)
        for r in v.get("_per_repeat") or []:
            bench_s += float(r.get("duration_s") or 0.0)
            c = r.get("conditions") or {}
            if c.get("own_cpu_share") is not None:
                own.append(100.0 * float(c["own_cpu_share"]))
                cpu.append(
                    100.0 * (float(c["own_cpu_share"]) + float(c.get("other_cpu_share") or 0))
                )
            if r.get("gpu_util_mean_pct") is not None:
                gpu.append(float(r["gpu_util_mean_pct"]))
        if not v.get("_per_repeat") and (v.get("bench") or {}).get("gpu_util_mean_pct") is not None:
            gpu.append(float(v["bench"]["gpu_util_mean_pct"]))
    total = (comp_s if compressed_here else 0.0) + eval_s + bench_s
    return {
        "device": device,
        "cells": len(cells),
        "compressed_here": compressed_here,
        "compressed_on": None if compressed_here else compress_on,
        "compression_s": comp_s if compressed_here else None,
        "eval_s": eval_s,
        "bench_s": bench_s,
        "total_s": total,
        "cpu_util_pct": _mean(cpu),
        "own_cpu_util_pct": _mean(own),
        "gpu_util_pct": _mean(gpu),
    }


def collect_study(sources: list[Source], carbon: dict[str, Any]) -> dict[str, Any]:
    """The results document of a study (one store, or the stores ``greenllm compare`` was
    given; they hold the same recipe, checked by the caller)."""
    first = sources[0]
    recipe = first.run["recipe"]
    targets = recipe.get("targets") or {}
    variants: list[dict[str, Any]] = []
    warnings: list[str] = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    envs: dict[str, dict[str, Any]] = {}
    where: dict[str, Source] = {}
    specs: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any]] = {}
    for src in sources:
        rec = src.run["recipe"]
        for m in recipe_models(rec):
            models.setdefault(str(m["name"]), m)
        for d in rec.get("devices") or []:
            specs.setdefault(str(d["name"]), dict(d))
        dev_envs = src.store.device_environments(src.run["id"])
        default_model = recipe_models(rec)[0]["name"]
        for entry in src.run["plan"]:
            model = str(entry.get("model") or default_model)
            device = str(
                entry.get("device") or src.device_label or detected_label(src.run, src.out_dir)
            )
            label = cell_label(entry["name"], model, device)
            record, warn = variant_record(src.store, entry, label)
            warnings += warn
            cell = {"name": label, "variant": entry["name"], "model": model, "device": device}
            cell.update((k, x) for k, x in record.items() if k != "name")
            if entry.get("skip"):  # not run: the will-it-fit check (or its baseline's)
                cell["skipped"] = entry["skip"]
                warnings.append(f"{label}: not run: {entry['skip']}")
            variants.append(cell)
            groups.setdefault((model, device), []).append(cell)
            if device not in envs:
                envs[device] = dev_envs.get(device) or src.run.get("environment") or {}
                where[device] = src
    for (model, device), cells in groups.items():
        base = next((c for c in cells if c["variant"] == BASELINE), cells[0])
        if base["variant"] != BASELINE:
            warnings.append(f"{model} @ {device}: no baseline in the store; no deltas computed")
        for c in cells:
            derive(c, base, carbon, targets)
    devices = list(dict.fromkeys(v["device"] for v in variants))
    compress_on = str(recipe.get("compress_on") or LOCAL)
    usage = []
    for d in devices:
        spec = specs.get(d)
        here = (
            spec is None
            or compress_on == d
            or (compress_on == LOCAL and spec.get("via", LOCAL) == LOCAL)
        )
        usage.append(_device_usage(d, [v for v in variants if v["device"] == d], here, compress_on))
    for v in variants:
        v.pop("_per_repeat", None)
    q_label, q_higher, front = mark_quality(variants, group="device")
    for v in variants:
        v["cross"] = _cross(v)
    model_names = list(dict.fromkeys(v["model"] for v in variants))
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "recipe": recipe.get("name"),
        "run": {
            k: first.run[k] for k in ("id", "status", "started_at_unix_s", "finished_at_unix_s")
        },
        "model": recipe.get("model")
        or {k: x for k, x in recipe_models(recipe)[0].items() if k != "name"},
        "workload": recipe.get("workload"),
        "environment": first.run.get("environment") or {},
        "carbon": carbon,
        "targets": targets,
        "quality_metric": q_label,
        "quality_higher_is_better": q_higher,
        "pareto": front,
        "variants": variants,
        "warnings": warnings,
        "study": {
            "hash": study_hash(recipe),
            "models": [models.get(m) or {"name": m} for m in model_names],
            "devices": [_device_entry(d, specs.get(d), envs[d], where[d]) for d in devices],
            "variants": list(dict.fromkeys(v["variant"] for v in variants)),
            "cells": len(variants),
            "groups": [
                {"model": m, "device": d, "cells": [c["name"] for c in cells]}
                for (m, d), cells in groups.items()
            ],
            "compress_on": compress_on,
            "usage": usage,
        },
        "device_environments": envs,
    }
    from .statements import carbon_statement, methodology

    doc["methodology"] = methodology(doc)
    _lifecycle_per_device(doc, recipe.get("carbon") or {}, where)
    doc["carbon_statement"] = carbon_statement(doc)
    return doc


def _lifecycle_per_device(
    doc: dict[str, Any], carbon_cfg: dict[str, Any], where: dict[str, Source]
) -> None:
    """Embodied carbon belongs to a device: the lifecycle figures of each device's cells use
    that device's profile and environment (report/lifecycle.py, once per device)."""
    from . import lifecycle

    per: dict[str, dict[str, Any]] = {}
    statements, methods = [], []
    for dev in doc["study"]["devices"]:
        cfg = dict(carbon_cfg)
        if dev.get("profile"):
            cfg["device"] = dev["profile"]
        sub = {
            "carbon": doc["carbon"],
            "environment": doc["device_environments"].get(dev["name"]) or {},
            "workload": doc.get("workload"),
            "variants": [v for v in doc["variants"] if v["device"] == dev["name"]],
            "methodology": "",
            "carbon_statement": "",
        }
        lifecycle.apply(sub, cfg, where[dev["name"]].out_dir)
        per[dev["name"]] = sub["lifecycle"]
        doc.setdefault("schedule", sub.get("schedule"))
        statements.append(f"On {dev['name']}: {sub['lifecycle_statement']}")
        methods.append(sub["methodology"].strip())
    first = next(iter(per.values()))
    doc["lifecycle"] = {**first, "devices": per}
    doc["lifecycle_statement"] = " ".join(statements)
    uniq = list(dict.fromkeys(methods))
    doc["methodology"] = (
        doc["methodology"]
        + " "
        + (
            uniq[0]
            if len(uniq) == 1
            else " ".join(f"({d['name']}) {m}" for d, m in zip(doc["study"]["devices"], methods))
        )
    )
