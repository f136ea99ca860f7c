"""Plots (matplotlib, Agg backend, imported only when a report is written): the Pareto
frontier of quality vs energy per token, and energy-per-token bars with 95 % CIs; for a
study also a heatmap of energy per token (device x variant, one panel per model) and quality
against energy per inference with one marker per device. Each is written as PNG and PDF."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import require
from ..units import MJ_PER_J
from .escape import mpl_text
from .fmt import is_baseline


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
            "#888888" if is_baseline(v) else "#c0392b" if v.get("not_greener") else "#27ae60"
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
        pts.append((e * MJ_PER_J, q * scale, mpl_text(v["name"]), v.get("pareto"), v.get("device")))
    for x, y, name, on, _ in pts:
        ax.scatter([x], [y], color="#27ae60" if on else "#7f8c8d", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for group in dict.fromkeys(p[4] for p in pts):  # a study: one front per device
        front = sorted((x, y) for x, y, _, on, g in pts if on and g == group)
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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _quality_axis(doc: dict[str, Any]) -> tuple[float, str]:
    higher = doc.get("quality_higher_is_better", True)
    acc = higher and (doc.get("quality_metric") or "").endswith("accuracy")
    label = mpl_text(doc.get("quality_metric") or "quality")
    return (100.0 if acc else 1.0), (
        label + (" (%)" if acc else "") + ("" if higher else " (lower is better)")
    )


def study_heatmap(doc: dict[str, Any]):
    """Energy per token of every cell: devices x variants, one panel per model (each panel
    its own colour scale: models differ by orders of magnitude)."""
    plt = _plt()
    import numpy as np

    st = doc["study"]
    devices = [d["name"] for d in st["devices"]]
    models = [str(m.get("name")) for m in st["models"]]
    variants = list(st["variants"])
    fig, axes = plt.subplots(
        1,
        len(models),
        figsize=(max(4.0, (1.0 * len(variants) + 2.2) * len(models)), 0.6 * len(devices) + 2.0),
        squeeze=False,
        layout="constrained",
    )
    for ax, model in zip(axes[0], models):
        grid = np.full((len(devices), len(variants)), np.nan)
        for v in doc["variants"]:
            e = (v.get("cross") or {}).get("energy_per_token_j")
            if v["model"] == model and e is not None:
                grid[devices.index(v["device"]), variants.index(v["variant"])] = e * MJ_PER_J
        masked = np.ma.masked_invalid(grid)
        cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")  # no figure: grey
        im = ax.imshow(masked, cmap=cmap, aspect="auto")
        for i in range(len(devices)):
            for j in range(len(variants)):
                if np.isfinite(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.3g}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if grid[i, j] < np.nanmean(grid) else "black",
                    )
        ax.set_xticks(
            range(len(variants)), [mpl_text(n) for n in variants], rotation=20, ha="right"
        )
        ax.set_yticks(range(len(devices)), [mpl_text(d) for d in devices])
        ax.set_title(mpl_text(model))
        fig.colorbar(im, ax=ax, label="mJ/token")
    est = any((v.get("bench") or {}).get("estimated") for v in doc["variants"])
    fig.suptitle("Energy per token" + (" (ESTIMATED)" if est else ""))
    return fig


def study_scatter(doc: dict[str, Any]):
    """Quality against energy per inference: one marker per device, one colour per model."""
    plt = _plt()
    st = doc["study"]
    devices = [d["name"] for d in st["devices"]]
    models = [str(m.get("name")) for m in st["models"]]
    colours = plt.get_cmap("tab10")
    scale, ylabel = _quality_axis(doc)
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    xs = []
    for v in doc["variants"]:
        c = v.get("cross") or {}
        x, q = c.get("energy_per_inference_j"), c.get("quality")
        if x is None or q is None:
            continue
        xs.append(x)
        ax.scatter(
            [x],
            [q * scale],
            marker=MARKERS[devices.index(v["device"]) % len(MARKERS)],
            color=colours(models.index(v["model"]) % 10),
            zorder=3,
        )
        ax.annotate(
            mpl_text(v["variant"]),
            (x, q * scale),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    for i, d in enumerate(devices):
        ax.scatter([], [], marker=MARKERS[i % len(MARKERS)], color="#555555", label=mpl_text(d))
    for i, m in enumerate(models):
        ax.plot([], [], ls="-", lw=5, color=colours(i % 10), label=mpl_text(m))
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("energy per inference (J)")
    ax.set_ylabel(ylabel)
    ax.set_title("Quality against energy per inference")
    ax.grid(alpha=0.3)
    return fig


def write_plots(
    doc: dict[str, Any], out: Path, write: Callable[[Path, bytes], Path]
) -> dict[str, tuple[Path, Path]]:
    """{"pareto": (png, pdf), "energy_per_token": (png, pdf)} for the plots that have data;
    a study adds "study_energy_heatmap" and "study_accuracy_energy"."""
    plt = _plt()
    out_files: dict[str, tuple[Path, Path]] = {}
    has_energy = any(
        (v.get("bench") or {}).get("energy_per_token_j") is not None for v in doc["variants"]
    )
    if not has_energy:
        return out_files
    makers: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("energy_per_token", energy_bars),
        ("pareto", pareto),
    ]
    if doc.get("study"):
        makers += [
            ("study_energy_heatmap", study_heatmap),
            ("study_accuracy_energy", study_scatter),
        ]
    has_quality = any(v.get("quality") is not None for v in doc["variants"])
    for stem, make in makers:
        if stem in ("pareto", "study_accuracy_energy") and not has_quality:
            continue
        fig = make(doc)
        try:
            out_files[stem] = _save(fig, out, stem, write)
        finally:
            plt.close(fig)
    return out_files
