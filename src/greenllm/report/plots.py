"""Plots (matplotlib, Agg backend, imported only when a report is written): the Pareto
frontier of quality vs energy per token, and energy-per-token bars with 95 % CIs. Each is
written as PNG and PDF."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import require
from ..units import MJ_PER_J
from .escape import mpl_text


def _plt():
    mpl = require("matplotlib", "plots", "report plots")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, stem: str, write: Callable[[Path, bytes], Path]) -> tuple[Path, Path]:
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(
            buf,
            format=ext,
            dpi=150,
            bbox_inches="tight",
            metadata={"CreationDate": None} if ext == "pdf" else None,
        )
        paths.append(write(out / f"{stem}.{ext}", buf.getvalue()))
    return paths[0], paths[1]


def energy_bars(doc: dict[str, Any]):
    plt = _plt()
    names, vals, errs, colors = [], [], [], []
    for v in doc["variants"]:
        b = v.get("bench") or {}
        if b.get("energy_per_token_j") is None:
            continue
        names.append(mpl_text(v["name"]))  # a name is text, never mathtext
        vals.append(b["energy_per_token_j"] * MJ_PER_J)
        ci = b.get("energy_per_token_j_ci95")
        errs.append(0.0 if ci is None else ci * MJ_PER_J)
        colors.append(
            "#888888"
            if v["name"] == "baseline"
            else "#c0392b"
            if v.get("not_greener")
            else "#27ae60"
        )
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 3.2))
    ax.bar(range(len(names)), vals, yerr=errs, capsize=4, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("energy per token (mJ)")
    est = any((v.get("bench") or {}).get("estimated") for v in doc["variants"])
    ax.set_title("Energy per token, 95 % CI" + (" (ESTIMATED)" if est else ""))
    ax.grid(axis="y", alpha=0.3)
    return fig


def pareto(doc: dict[str, Any]):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    higher = doc.get("quality_higher_is_better", True)
    scale = 100.0 if higher and (doc.get("quality_metric") or "").endswith("accuracy") else 1.0
    pts = []
    for v in doc["variants"]:
        e = (v.get("bench") or {}).get("energy_per_token_j")
        q = v.get("quality")
        if e is None or q is None:
            continue
        pts.append((e * MJ_PER_J, q * scale, mpl_text(v["name"]), v.get("pareto")))
    for x, y, name, on in pts:
        ax.scatter([x], [y], color="#27ae60" if on else "#7f8c8d", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = sorted((x, y) for x, y, _, on in pts if on)
    if len(front) > 1:
        ax.plot([x for x, _ in front], [y for _, y in front], "--", color="#27ae60", zorder=2)
    ax.set_xlabel("energy per token (mJ)")
    label = mpl_text(doc.get("quality_metric") or "quality")
    ax.set_ylabel(
        f"{label}" + (" (%)" if scale == 100.0 else "") + ("" if higher else " (lower is better)")
    )
    ax.set_title("Pareto frontier: quality vs energy")
    ax.grid(alpha=0.3)
    return fig


def write_plots(
    doc: dict[str, Any], out: Path, write: Callable[[Path, bytes], Path]
) -> dict[str, tuple[Path, Path]]:
    """{"pareto": (png, pdf), "energy_per_token": (png, pdf)} for the plots that have data."""
    plt = _plt()
    out_files: dict[str, tuple[Path, Path]] = {}
    has_energy = any(
        (v.get("bench") or {}).get("energy_per_token_j") is not None for v in doc["variants"]
    )
    if not has_energy:
        return out_files
    for stem, make in (("energy_per_token", energy_bars), ("pareto", pareto)):
        if stem == "pareto" and not any(v.get("quality") is not None for v in doc["variants"]):
            continue
        fig = make(doc)
        try:
            out_files[stem] = _save(fig, out, stem, write)
        finally:
            plt.close(fig)
    return out_files
