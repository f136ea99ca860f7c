"""The cross tables of a study (``doc["study"]``, each cell's ``cross`` figures; study.py):
device x model x variant for energy per token, tokens/s, energy per inference, accuracy,
EDP, tokens/Wh, Wh/B and EDP/B (the small-language-model study's tables), energy per token
side by side per device, the per-billion-parameter figures per device, and per device the
time spent and the mean CPU / GPU utilisation (the Jetson study's table 3).

``sections(doc)`` gives format-free ``Section``s; ``markdown``, ``latex`` and ``html``
render them next to the per-variant table, and ``study_csv`` writes study.csv (internal
units, one row per cell). No torch."""

from __future__ import annotations

import csv
import html as _html
import io
from dataclasses import dataclass
from typing import Any

from ..units import MJ_PER_J
from .escape import tex_label
from .fmt import DASH, is_baseline, md_table, num, pct, tex_table

NOT_RECORDED = "not recorded"
STUDY_NOTE = (
    "In a study every Δ, verdict and payback is against the baseline of the same model on "
    "the same device; nothing is compared across devices or models."
)
CELLS_NOTE = (
    "One row per cell. mJ/token = energy per generated token over the benchmark windows "
    "(Δ ± CI95 against that model's baseline on that device); tokens/s = tokens generated per "
    "second of metered window; J/inference = energy per request; EDP = energy x latency of "
    "one request (J·s); Wh/B and EDP/B = per request, per billion parameters the model "
    "stands for (quantized ones included)."
)
ENERGY_NOTE = "Energy per generated token (mJ), each device in its own column."
NORMALISED_NOTE = (
    "Energy (Wh) and energy-delay product (J·s) of one request per billion parameters, per "
    "device (the shape of the small-language-model study's normalised table)."
)
DEVICES_NOTE = (
    "Time = compression (the steps that ran on that device) + evaluation + benchmark (metered "
    "windows and warm-up) seconds. CPU % = mean share of all the device's CPUs busy during the "
    "benchmark windows (machine), and of it greenllm's own process; GPU % = mean GPU "
    "utilisation over those windows as the meter read it (tegrastats); 'not recorded' = no "
    "meter on that device reports it."
)


@dataclass
class Section:
    key: str  # a label key: tex labels, html ids
    title: str
    head: list[str]
    rows: list[list[str]]
    note: str
    left: int = 1  # text columns (left-aligned)


def _quality_head(doc: dict[str, Any]) -> tuple[str, bool]:
    """(the column head of the quality figure, whether it is shown as a percentage)."""
    q = doc.get("quality_metric")
    if q == "mean accuracy":
        return "accuracy %", True
    return (str(q) if q else "quality"), False


def _quality(v: dict[str, Any], as_pct: bool) -> str:
    q = (v.get("cross") or {}).get("quality")
    if q is None:
        return DASH
    return f"{100.0 * q:.1f}" if as_pct else num(q)


def _mj(x: Any) -> float | None:
    return None if x is None else float(x) * MJ_PER_J


def ordered_cells(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells by device, then model, then variant, in the study's orders."""
    st = doc["study"]
    dev = {d["name"]: i for i, d in enumerate(st["devices"])}
    mod = {m.get("name"): i for i, m in enumerate(st["models"])}
    var = {n: i for i, n in enumerate(st["variants"])}
    return sorted(
        doc["variants"],
        key=lambda v: (
            dev.get(v["device"], 99),
            mod.get(v["model"], 99),
            var.get(v["variant"], 99),
        ),
    )


def cell(doc: dict[str, Any], model: str, variant: str, device: str) -> dict[str, Any] | None:
    for v in doc["variants"]:
        if (v["model"], v["variant"], v["device"]) == (model, variant, device):
            return v
    return None


def _model_variants(doc: dict[str, Any]) -> list[tuple[str, str]]:
    st = doc["study"]
    present = {(v["model"], v["variant"]) for v in doc["variants"]}
    return [
        (m.get("name"), n)
        for m in st["models"]
        for n in st["variants"]
        if (m.get("name"), n) in present
    ]


def cells_section(doc: dict[str, Any]) -> Section:
    q_head, as_pct = _quality_head(doc)
    head = [
        "device",
        "model",
        "variant",
        "mJ/token (Δ ± CI95)",
        "tokens/s",
        "J/inference",
        q_head,
        "EDP J·s",
        "tokens/Wh",
        "Wh/B",
        "EDP/B J·s/B",
    ]
    rows = []
    for v in ordered_cells(doc):
        c = v.get("cross") or {}
        ept = num(_mj(c.get("energy_per_token_j")))
        if not is_baseline(v):
            ept += f" ({pct(c.get('energy_per_token_pct'), c.get('energy_per_token_pct_ci95'))})"
        rows.append(
            [
                v["device"],
                v["model"],
                v["variant"]
                + (
                    ""
                    if v.get("complete")
                    else f" (not run: {v['skipped']})"
                    if v.get("skipped")
                    else " (incomplete)"
                ),
                ept,
                num(c.get("tokens_per_s")),
                num(c.get("energy_per_inference_j")),
                _quality(v, as_pct),
                num(c.get("edp_js")),
                num(c.get("tokens_per_wh")),
                num(c.get("wh_per_b_params")),
                num(c.get("edp_js_per_b_params")),
            ]
        )
    return Section("cells", "Device x model x variant", head, rows, CELLS_NOTE, left=3)


def energy_section(doc: dict[str, Any]) -> Section:
    devices = [d["name"] for d in doc["study"]["devices"]]
    rows = []
    for m, n in _model_variants(doc):
        row = [m, n]
        for d in devices:
            v = cell(doc, m, n, d)
            row.append(num(_mj((v or {}).get("cross", {}).get("energy_per_token_j"))))
        rows.append(row)
    return Section(
        "energy",
        "Energy per token by device (mJ)",
        ["model", "variant"] + devices,
        rows,
        ENERGY_NOTE,
        left=2,
    )


def normalised_section(doc: dict[str, Any]) -> Section:
    devices = [d["name"] for d in doc["study"]["devices"]]
    head = ["model", "variant"]
    for d in devices:
        head += [f"{d} Wh/B", f"{d} EDP/B J·s/B"]
    rows = []
    for m, n in _model_variants(doc):
        row = [m, n]
        for d in devices:
            c = (cell(doc, m, n, d) or {}).get("cross") or {}
            row += [num(c.get("wh_per_b_params")), num(c.get("edp_js_per_b_params"))]
        rows.append(row)
    return Section(
        "normalised", "Per billion parameters, by device", head, rows, NORMALISED_NOTE, left=2
    )


def _util(x: Any) -> str:
    return NOT_RECORDED if x is None else f"{float(x):.1f}"


def devices_section(doc: dict[str, Any]) -> Section:
    head = [
        "device",
        "hardware",
        "memory GiB",
        "cells",
        "compression s",
        "eval s",
        "bench s",
        "total s",
        "CPU % (machine)",
        "CPU % (greenllm)",
        "GPU %",
    ]
    usage = {u["device"]: u for u in doc["study"].get("usage") or []}
    rows = []
    for d in doc["study"]["devices"]:
        u = usage.get(d["name"]) or {}
        mem = d.get("memory_bytes") or (d.get("hardware") or {}).get("memory_bytes")
        comp = (
            num(u.get("compression_s"))
            if u.get("compressed_here", True)
            else f"{DASH} (on {u.get('compressed_on')})"
        )
        rows.append(
            [
                d["name"],
                str(d.get("title") or d.get("profile") or DASH),
                num(None if not mem else mem / 1024**3),
                str(u.get("cells", 0)),
                comp,
                num(u.get("eval_s")),
                num(u.get("bench_s")),
                num(u.get("total_s")),
                _util(u.get("cpu_util_pct")),
                _util(u.get("own_cpu_util_pct")),
                _util(u.get("gpu_util_pct")),
            ]
        )
    return Section(
        "devices", "Time and mean utilisation per device", head, rows, DEVICES_NOTE, left=2
    )


def sections(doc: dict[str, Any]) -> list[Section]:
    if not doc.get("study"):
        return []
    return [cells_section(doc), energy_section(doc), normalised_section(doc), devices_section(doc)]


def markdown(doc: dict[str, Any]) -> list[str]:
    """The study's Markdown sections (lines), for report.md."""
    secs = sections(doc)
    if not secs:
        return []
    lines = ["## Across devices and models", "", STUDY_NOTE, ""]
    for s in secs:
        lines += [f"### {s.title}", "", md_table(s.head, s.rows), "", s.note, ""]
    return lines


def latex(doc: dict[str, Any]) -> list[str]:
    """The study's booktabs tables (lines), for report.tex."""
    lines: list[str] = []
    for s in sections(doc):
        label = f"tab:greenllm-study-{s.key}-" + tex_label(doc.get("recipe"))
        lines += tex_table(s.head, s.rows, f"{s.title}. {s.note}", label, left=s.left)
    return lines


def html(doc: dict[str, Any], table: Any) -> list[str]:
    """The study's HTML sections; ``table(head, rows)`` is the page's own table writer."""
    secs = sections(doc)
    if not secs:
        return []
    e = _html.escape
    parts = ["<h2>Across devices and models</h2>", f'<p class="note">{e(STUDY_NOTE)}</p>']
    for s in secs:
        parts += [
            f'<h3 id="study-{e(s.key)}">{e(s.title)}</h3>',
            table(s.head, s.rows),
            f'<p class="note">{e(s.note)}</p>',
        ]
    return parts


CSV_KEYS = (
    "energy_per_token_j",
    "energy_per_token_j_ci95",
    "energy_per_token_pct",
    "energy_per_token_pct_ci95",
    "tokens_per_s",
    "energy_per_inference_j",
    "quality",
    "edp_js",
    "tokens_per_wh",
    "wh_per_b_params",
    "edp_js_per_b_params",
)


def study_csv(doc: dict[str, Any]) -> str:
    """study.csv: one row per cell (device, model, variant), internal units."""
    profiles = {d["name"]: d.get("profile") for d in doc["study"]["devices"]}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["device", "device_profile", "model", "variant", "name", "quality_metric"]
        + list(CSV_KEYS)
        + ["verdict", "payback_inferences", "pareto", "complete"]
    )
    for v in ordered_cells(doc):
        c = v.get("cross") or {}
        row = [
            v["device"],
            profiles.get(v["device"]),
            v["model"],
            v["variant"],
            v["name"],
            doc.get("quality_metric"),
        ]
        row += [c.get(k) for k in CSV_KEYS]
        row += [v.get("verdict"), v.get("payback_inferences"), v.get("pareto"), v.get("complete")]
        w.writerow(["" if x is None else x for x in row])
    return buf.getvalue()
