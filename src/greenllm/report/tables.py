"""Tables from the results document: Markdown, LaTeX (booktabs), CSV, emissions CSV.

Display units are chosen here (mJ per token, J per request, ms, MiB, g CO2e); the CSV and
results.json keep the internal units (J, s, bytes, g) with the unit in each column name.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from ..units import BYTES_PER_MIB, MJ_PER_J
from .escape import md_text, tex_label
from .fmt import DASH, is_baseline, md_cell, md_table, num, pct, pp, tex

# ---------------------------------------------------------------- formatting


def payback(v: dict[str, Any]) -> str:
    if is_baseline(v) or not v.get("bench") or v.get("compression_energy_j") is None:
        return DASH
    if v.get("verdict") == "inconclusive":
        return f"{DASH} (inconclusive)"
    return payback_text(v.get("payback_inferences"))


def payback_text(p: float | None) -> str:
    """Whole inferences until the compression energy is repaid (the ceiling: after 0.2
    inferences' worth of saving, the first inference has repaid it)."""
    return "never" if p is None else f"{math.ceil(p):,}"


# the quantize methods whose ``bits`` is a setting (the others have a fixed width, and their
# config's ``bits`` is an unused default); tests/report checks it against QuantizeConfig
BITS_SETTING_METHODS = frozenset({"gptq", "awq", "rtn"})


def step_summary(definition: list[dict[str, Any]]) -> str:
    """``step(method, setting=value, ...)`` per step; only the settings that apply: a zero
    sparsity and the default ``bits`` of a fixed-width quantize method are left out (a
    stored definition holds every field of the step's config, defaults included)."""
    if not definition:
        return "(none)"
    parts = []
    for entry in definition:
        ((key, cfg),) = entry.items()
        cfg = dict(cfg or {})
        if not cfg.get("sparsity"):
            cfg.pop("sparsity", None)
        if key == "quantize" and cfg.get("method") not in BITS_SETTING_METHODS:
            cfg.pop("bits", None)
        bits = [str(cfg["method"])] if cfg.get("method") else []
        for k in (
            "sparsity",
            "bits",
            "pattern",
            "rank",
            "epochs",
            "steps",
            "power_cap_w",
            "power_mode",
        ):
            if cfg.get(k) is not None:
                bits.append(f"{k}={cfg[k]}")
        parts.append(f"{key}({', '.join(bits)})")
    return " → ".join(parts)


def subject(doc: dict[str, Any]) -> str:
    """What the report is about: ``Model: ID``, or a study's models and devices."""
    st = doc.get("study")
    if not st:
        return f"Model: {(doc.get('model') or {}).get('id')}"
    models = ", ".join(str(m.get("name")) for m in st["models"])
    devices = ", ".join(str(d["name"]) for d in st["devices"])
    return f"Study: models {models} x devices {devices} ({st['cells']} cells)"


def headline_label(doc: dict[str, Any]) -> str:
    """The headline energy column: gross or idle-subtracted (net) mJ per token."""
    hm = {v.get("headline_metric") for v in doc.get("variants") or []}
    return "net mJ/token" if hm == {"net_energy_per_token_j"} else "mJ/token"


def verdict_text(v: dict[str, Any]) -> str:
    verdict = v.get("verdict")
    if verdict == "greener":
        return "yes: greener"
    if verdict == "not greener":
        return "NO: compressed but not greener"
    if verdict == "inconclusive":
        return str(v.get("verdict_note") or "inconclusive")
    # results.json from before the three verdicts
    return "NO: compressed but not greener" if v.get("not_greener") else "yes"


def _b(v: dict[str, Any], key: str) -> Any:
    return (v.get("bench") or {}).get(key)


def _d(v: dict[str, Any], key: str) -> Any:
    return (v.get("deltas") or {}).get(key)


def eval_labels(doc: dict[str, Any]) -> list[str]:
    """One label per eval position (task names, de-duplicated with #2, #3...)."""
    base = doc["variants"][0]["evals"] if doc["variants"] else []
    labels: list[str] = []
    seen: dict[str, int] = {}
    for e in base:
        task = (e or {}).get("task") or "eval"
        seen[task] = seen.get(task, 0) + 1
        labels.append(task if seen[task] == 1 else f"{task}#{seen[task]}")
    return labels


def _quality_cell(v: dict[str, Any], i: int) -> str:
    from .analysis import primary_metric

    e = v["evals"][i] if i < len(v["evals"]) else None
    if not e:
        return DASH
    pm = primary_metric(e)
    if pm is None:
        return DASH
    name, higher = pm
    val = e.get(name)
    text = f"{val * 100:.1f} %" if higher else num(val)
    delta = (v["deltas"].get("evals") or [None] * (i + 1))[i] if not is_baseline(v) else None
    if delta:
        text += (
            f" ({pp(delta.get('delta_pp'), delta.get('stderr_pp'))})"
            if higher
            else f" ({pct(delta.get('delta_pct'))})"
        )
    return text


def target_cell(v: dict[str, Any]) -> str:
    t = v.get("targets") or {}
    if not t:
        return DASH
    res = [x.get("pass") for x in t.values()]
    if any(r is False for r in res):
        return "FAIL"
    return "pass" if all(r is True for r in res) else "n/a"


def main_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    labels = eval_labels(doc)
    head = (
        [
            "variant",
            "steps",
            "size MiB (Δ)",
            headline_label(doc) + " (Δ ± CI95)",
            "J/request (Δ ± CI95)",
            "latency ms (Δ)",
            "tokens/Wh",
            "EDP J·s",
        ]
        + labels
        + [
            "compression J",
            "payback (inferences)",
            "gCO2e/1k inferences",
            "greener?",
            "targets",
            "Pareto",
        ]
    )
    rows = []
    for v in doc["variants"]:
        is_base = is_baseline(v)
        size = _b(v, "size_bytes")
        hm = v.get("headline_metric") or "energy_per_token_j"
        hl = "net_energy_per_token" if hm.startswith("net_") else "energy_per_token"
        ept, req, lat = (
            _b(v, hm),
            _b(v, "energy_per_request_j"),
            _b(v, "e2e_latency_s"),
        )
        row = [
            v["name"],
            step_summary(v.get("definition") or []),
            num(None if size is None else size / BYTES_PER_MIB)
            + ("" if is_base else f" ({pct(_d(v, 'size_pct'))})"),
            num(None if ept is None else ept * MJ_PER_J)
            + ("" if is_base else f" ({pct(_d(v, f'{hl}_pct'), _d(v, f'{hl}_pct_ci95'))})"),
            num(req)
            + (
                ""
                if is_base
                else " ("
                + pct(_d(v, "energy_per_request_pct"), _d(v, "energy_per_request_pct_ci95"))
                + ")"
            ),
            num(None if lat is None else lat * 1e3)
            + ("" if is_base else f" ({pct(_d(v, 'latency_pct'))})"),
            num(v.get("tokens_per_wh")),
            num(v.get("edp_js")),
        ]
        row += [_quality_cell(v, i) for i in range(len(labels))]
        greener = DASH if is_base or not v.get("bench") else verdict_text(v)
        row += [
            num(v.get("compression_energy_j")) if not is_base else DASH,
            payback(v),
            num(v.get("emissions_g_per_1000_inferences")),
            greener,
            target_cell(v),
            "yes" if v.get("pareto") else "",
        ]
        if not v.get("complete"):
            row[0] += " (incomplete)"
        rows.append(row)
    return head, rows


DELTA_NOTE = (
    "Δ are relative to `baseline`, paired by round (each variant's windows against the "
    "baseline's windows of the same round); ± are 95 % confidence half-widths over the rounds "
    "(energy, latency) or combined standard errors (accuracy, pp). Verdicts: greener (the "
    "whole CI of the saving lies above the target), not greener (below it), inconclusive "
    "(the CI straddles it: no payback is computed)."
)
SEED004_NOTE = (
    "Per benchmark, each evaluation ran inside one metered window. Wh/inf = energy per "
    "inference (item); s/inf = latency per item; EDP = whole-run energy (J) x whole-run time "
    "(s), the convention of the small-language-model study (greenllm's per-inference EDP is "
    "EDP / items^2); tokens = input positions through the model; W = mean power; Wh/B and "
    "EDP/B per billion parameters the model really has (quantized ones included); acc/Wh = "
    "accuracy (%) per Wh per inference."
)


def measurement_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """How each variant was measured: boundary, scheme, rounds, stop, disturbances."""
    head = [
        "variant",
        "runtime",
        "boundary",
        "meter",
        "scheme",
        "rounds",
        "stopped",
        "windows flagged",
        "reruns",
        "excluded",
        "basis of Δ",
    ]
    rows = []
    for v in doc["variants"]:
        b = v.get("bench") or {}
        wl = b.get("workload") or {}
        rows.append(
            [
                v["name"],
                str((b.get("device") or {}).get("runtime") or wl.get("runtime") or DASH),
                str(v.get("boundary") or DASH),
                str(b.get("meter") or DASH),
                str(wl.get("scheme") or DASH),
                str(wl.get("rounds") if wl.get("rounds") is not None else b.get("repeats", DASH)),
                str(wl.get("stopped") or DASH),
                str(v.get("flagged_windows", 0)),
                str(v.get("rerun_windows", 0)),
                str(v.get("excluded_windows", 0)),
                DASH if is_baseline(v) else str((v.get("deltas") or {}).get("basis") or DASH),
            ]
        )
    return head, rows


def _acc_of(e: dict[str, Any]) -> float | None:
    from .analysis import ACCURACY_METRICS

    for k in ACCURACY_METRICS:
        x = e.get(k)
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return float(x) * 100.0
    return None


def seed004_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per benchmark and variant, the shape of the small-language-model study's table."""
    head = [
        "benchmark",
        "variant",
        "acc %",
        "Wh/inf",
        "s/inf",
        "EDP J·s",
        "tokens/s",
        "tokens/Wh",
        "W",
        "Wh/B",
        "EDP/B J·s/B",
        "acc/Wh",
    ]
    labels = eval_labels(doc)
    rows = []
    for i, lab in enumerate(labels):
        for v in doc["variants"]:
            e = v["evals"][i] if i < len(v["evals"]) else None
            cost = (e or {}).get("cost") or {}
            if not cost:
                continue
            acc = _acc_of(e or {})
            rows.append(
                [
                    lab,
                    v["name"],
                    DASH if acc is None else f"{acc:.1f}",
                    num(cost.get("energy_per_item_wh")),
                    num(cost.get("latency_per_item_s")),
                    num(cost.get("run_edp_js")),
                    num(cost.get("tokens_per_s")),
                    num(cost.get("tokens_per_wh")),
                    num(cost.get("mean_power_w")),
                    num(cost.get("run_wh_per_b_params")),
                    num(cost.get("run_edp_js_per_b_params")),
                    num(cost.get("accuracy_per_wh")),
                ]
            )
    return head, rows


# ---------------------------------------------------------------- Markdown


def to_markdown(doc: dict[str, Any]) -> str:
    head, rows = main_rows(doc)
    c = doc["carbon"]
    from . import crosstab

    lines = [
        f"# greenllm report: {md_cell(str(doc.get('recipe')))}",
        "",
        f"{md_cell(subject(doc))} · run "
        f"{doc['run']['id']} ({doc['run']['status']}) · grid "
        f"{c['intensity_g_per_kwh']:.0f} gCO2e/kWh, PUE {c['pue']:.2f}",
        "",
        "## Results",
        "",
        md_table(head, rows),
        "",
        DELTA_NOTE,
        "",
        *crosstab.markdown(doc),
        "## Measurement",
        "",
        md_table(*measurement_rows(doc)),
        "",
    ]
    head4, rows4 = seed004_rows(doc)
    if rows4:
        lines += [
            "## Evaluations: accuracy, energy and time per inference",
            "",
            md_table(head4, rows4),
            "",
            SEED004_NOTE,
            "",
        ]
    if doc.get("pareto"):
        lines += [
            f"Pareto frontier ({doc.get('quality_metric')} vs energy per token): "
            + ", ".join(md_cell(n) for n in doc["pareto"]),
            "",
        ]
    lines += [
        "## Carbon",
        "",
        md_text(doc["carbon_statement"]),
        "",
    ]
    if doc.get("lifecycle"):
        head_l, rows_l = lifecycle_rows(doc)
        lines += [
            "## Lifecycle carbon (SCI)",
            "",
            md_table(head_l, rows_l),
            "",
            md_text(doc.get("lifecycle_statement") or ""),
            "",
        ]
    lines += [
        "## Methodology",
        "",
        md_text(doc["methodology"]),
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- LaTeX


def to_latex(doc: dict[str, Any]) -> str:
    labels = eval_labels(doc)
    head = (
        ["Variant", "Size (MiB)", "mJ/token", r"$\Delta$ E/token", r"$\Delta$ latency", "Tokens/Wh"]
        + [tex(x) for x in labels]
        + ["Payback", r"gCO$_2$e/1k"]
    )
    lines = [
        r"% greenllm report; needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    for v in doc["variants"]:
        is_base = is_baseline(v)
        size, ept = _b(v, "size_bytes"), _b(v, v.get("headline_metric") or "energy_per_token_j")
        cells = [
            tex(v["name"])
            + (
                ""
                if is_base
                else r"$^\dagger$"
                if v.get("verdict") == "not greener" or v.get("not_greener")
                else r"$^\ddagger$"
                if v.get("verdict") == "inconclusive"
                else ""
            ),
            tex(num(None if size is None else size / BYTES_PER_MIB)),
            tex(num(None if ept is None else ept * MJ_PER_J)),
            tex(
                DASH
                if is_base
                else pct(v.get("headline_delta_pct"), v.get("headline_delta_pct_ci95"))
            ),
            tex(DASH if is_base else pct(_d(v, "latency_pct"))),
            tex(num(v.get("tokens_per_wh"))),
        ]
        cells += [tex(_quality_cell(v, i)) for i in range(len(labels))]
        cells += [tex(payback(v)), tex(num(v.get("emissions_g_per_1000_inferences")))]
        lines.append(" & ".join(cells) + r" \\")
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{"
        + tex(
            f"{doc.get('recipe')}: energy, latency and quality versus the "
            "uncompressed baseline. ± are 95 % confidence half-widths; "
            "accuracy deltas in percentage points. "
        )
        + r"$^\dagger$ compressed but not greener (the CI of the saving lies below the target); "
        r"$^\ddagger$ inconclusive (the CI straddles it).}",
        r"\label{tab:greenllm-" + tex_label(doc.get("recipe")) + "}",
        r"\end{table}",
        "",
    ]
    head4, rows4 = seed004_rows(doc)
    if rows4:
        lines += [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            r"\begin{tabular}{ll" + "r" * (len(head4) - 2) + "}",
            r"\toprule",
            " & ".join(tex(h) for h in head4) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(tex(c) for c in r) + r" \\" for r in rows4]
        lines += [
            r"\bottomrule",
            r"\end{tabular}",
            r"\caption{" + tex(SEED004_NOTE) + "}",
            r"\label{tab:greenllm-evals-" + tex_label(doc.get("recipe")) + "}",
            r"\end{table}",
            "",
        ]
    from . import crosstab

    lines += crosstab.latex(doc)
    lines += [
        r"\paragraph{Methodology.} " + tex(doc["methodology"]),
        "",
        r"\paragraph{Carbon.} " + tex(doc["carbon_statement"]),
        "",
    ]
    if doc.get("lifecycle_statement"):
        lines += [r"\paragraph{Lifecycle carbon (SCI).} " + tex(doc["lifecycle_statement"]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- CSV


def to_csv(doc: dict[str, Any]) -> str:
    labels = eval_labels(doc)
    bench_keys = [
        "size_bytes",
        "energy_per_token_j",
        "energy_per_token_j_ci95",
        "net_energy_per_token_j",
        "energy_per_request_j",
        "energy_per_request_j_ci95",
        "e2e_latency_s",
        "e2e_latency_s_ci95",
        "ttft_s",
        "decode_tokens_per_s",
        "tokens_per_wh",
        "edp_js",
        "peak_memory_bytes",
    ]
    delta_keys = [
        "energy_per_token_pct",
        "energy_per_token_pct_ci95",
        "net_energy_per_token_pct",
        "net_energy_per_token_pct_ci95",
        "energy_per_request_pct",
        "energy_per_request_pct_ci95",
        "latency_pct",
        "size_pct",
    ]
    head = (
        ["variant", "steps"]
        + bench_keys
        + [f"delta_{k}" for k in delta_keys]
        + [
            "compression_energy_j",
            "compression_duration_s",
            "compression_emissions_g",
            "emissions_g_per_1000_inferences",
            "payback_inferences",
            "not_greener",
            "verdict",
            "boundary",
            "pareto",
            "meter",
            "estimated",
            "complete",
        ]
    )
    for lab in labels:
        head += [
            f"{lab}_metric",
            f"{lab}_value",
            f"{lab}_stderr",
            f"{lab}_delta_pp",
            f"{lab}_delta_pct",
        ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    from .analysis import primary_metric

    for v in doc["variants"]:
        b = v.get("bench") or {}
        row = [v["name"], step_summary(v.get("definition") or [])]
        row += [b.get(k) for k in bench_keys] + [_d(v, k) for k in delta_keys]
        row += [
            v.get("compression_energy_j"),
            v.get("compression_duration_s"),
            v.get("compression_emissions_g"),
            v.get("emissions_g_per_1000_inferences"),
            v.get("payback_inferences"),
            v.get("not_greener"),
            v.get("verdict"),
            v.get("boundary"),
            v.get("pareto"),
            b.get("meter"),
            b.get("estimated"),
            v.get("complete"),
        ]
        deltas = (v.get("deltas") or {}).get("evals") or []
        for i in range(len(labels)):
            e = v["evals"][i] if i < len(v["evals"]) else None
            pm = primary_metric(e) if e else None
            d = deltas[i] if i < len(deltas) else None
            row += [
                pm[0] if pm else None,
                e.get(pm[0]) if pm and e else None,
                e.get(f"{pm[0]}_stderr") if pm and e else None,
                (d or {}).get("delta_pp"),
                (d or {}).get("delta_pct"),
            ]
        w.writerow(["" if x is None else x for x in row])
    return buf.getvalue()


def _windows(doc: dict[str, Any]) -> list[tuple[str, float, float, dict[str, Any]]]:
    """(label, duration_s, energy_j, the window's record) of every measured window; the record
    carries the time-resolved ``intensity_g_per_kwh`` / ``intensity_source`` where the report
    computed them (report/lifecycle.py)."""
    out: list[tuple[str, float, float, dict[str, Any]]] = []
    for v in doc["variants"]:
        for i, s in enumerate(v.get("steps") or []):
            if s.get("energy_j") is not None:
                out.append((f"{v['name']}/step{i}:{s['step']}", s["duration_s"], s["energy_j"], s))
        windows = v.get("bench_windows")
        if windows is None:  # a results.json from before bench_windows
            w = v.get("bench_window")
            windows = [dict(w, repeat=None)] if w and w.get("energy_j") is not None else []
        for w in windows:  # every measured repeat, not only the last
            label = f"{v['name']}/bench" + (f"/repeat{w['repeat']}" if w.get("repeat") else "")
            out.append((label, w.get("duration_s") or 0.0, w["energy_j"], w))
    return out


def emissions_csv(doc: dict[str, Any]) -> str:
    """One codecarbon-compatible row (greenllm.carbon.EMISSIONS_CSV_COLUMNS) per measured
    window: every compression step and every benchmark."""
    from .. import carbon

    c = doc["carbon"]
    intensity = carbon.Intensity(
        c["intensity_g_per_kwh"],
        c.get("source") or "user",
        c.get("year"),
        c.get("region"),
        c.get("country_name"),
    )
    hw = (doc.get("environment") or {}).get("hardware") or {}
    buf = io.StringIO()
    w = csv.DictWriter(
        buf,
        fieldnames=list(carbon.EMISSIONS_CSV_COLUMNS),
        lineterminator="\n",
        extrasaction="ignore",
    )
    w.writeheader()
    resolved = bool((doc.get("lifecycle") or {}).get("time_resolved"))
    for label, dur, energy_j, rec in _windows(doc):
        extra = {
            "cpu_count": hw.get("cpu_count") or "",
            "ram_total_size": (hw.get("memory_bytes") or 0) / 1024**3 or "",
        }
        it = intensity
        if resolved and rec.get("emissions_g") is not None:  # this window's own intensity
            it = carbon.Intensity(
                rec["intensity_g_per_kwh"],
                rec.get("intensity_source") or "",
                None,
                c.get("region"),
                c.get("country_name"),
            )
        elif resolved:
            continue  # its intensity is unknown: no row rather than a wrong one
        w.writerow(
            carbon.emissions_row(
                energy_j,
                dur,
                it,
                c["pue"],
                project_name=str(doc.get("recipe")),
                run_id=str(doc["run"]["id"]),
                experiment_id=label,
                extra=extra,
            )
        )
    return buf.getvalue()


def lifecycle_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Operational, embodied and total g CO2e per 1,000 inferences (SCI), per variant."""
    lc = doc.get("lifecycle") or {}
    emb = lc.get("embodied") or {}
    basis = f"{lc.get('accounting', 'location')}, {lc.get('signal', 'average')}"
    e_label = " (estimate)" if emb.get("estimated") else ""
    head = [
        "variant",
        f"operational g/1k ({basis})",
        f"embodied g/1k{e_label}",
        "total g/1k",
        "embodied share",
        "SCI mg/token",
        "reference-grid total g/1k",
    ]
    rows = []
    for v in doc["variants"]:
        share = v.get("embodied_share_pct")
        sci = v.get("sci_g_per_token")
        rows.append(
            [
                v["name"],
                num(v.get("operational_g_per_1000_inferences")),
                num(v.get("embodied_g_per_1000_inferences")),
                num(v.get("total_g_per_1000_inferences")),
                "n/a" if share is None else f"{share:.1f} %",
                num(None if sci is None else sci * 1000.0),
                num(v.get("reference_grid_total_g_per_1000_inferences")),
            ]
        )
    return head, rows
