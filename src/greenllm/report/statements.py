"""The carbon statement and the methodology statement: plain sentences a reviewer can check,
built only from what the store recorded (nothing here is assumed or hard-coded)."""

from __future__ import annotations

from typing import Any

from ..units import J_PER_WH
from .tables import num, payback_text, step_summary


def _meters_used(doc: dict[str, Any]) -> tuple[list[str], bool, list[float], str | None]:
    meters: list[str] = []
    estimated = False
    hz: list[float] = []
    method = None
    for v in doc["variants"]:
        b = v.get("bench") or {}
        w = v.get("bench_window") or {}
        for m in ([b.get("meter")] if b.get("meter") else []) + list(w.get("meters") or []):
            if m and m not in meters:
                meters.append(m)
        estimated = (
            estimated
            or bool(b.get("estimated"))
            or bool(w.get("estimated"))
            or bool(v.get("compression_estimated"))
        )
        if w.get("sampling_hz"):
            hz.append(float(w["sampling_hz"]))
        method = method or w.get("method")
    return meters, estimated, hz, method


def methodology(doc: dict[str, Any]) -> str:
    env = doc.get("environment") or {}
    hw, sw = env.get("hardware") or {}, env.get("software") or {}
    dev = hw.get("device") or {}
    wl = doc.get("workload") or {}
    model = doc.get("model") or {}
    meters, estimated, hz, method = _meters_used(doc)
    parts = []
    hw_desc = dev.get("title") or hw.get("machine") or "unknown hardware"
    if dev.get("cpu_model"):
        hw_desc += f" ({dev['cpu_model']}"
        hw_desc += f", {hw['cpu_count']} logical CPUs)" if hw.get("cpu_count") else ")"
    if hw.get("memory_bytes"):
        hw_desc += f", {hw['memory_bytes'] / 1024**3:.1f} GiB RAM"
    if hw.get("nvidia_driver"):
        hw_desc += f", NVIDIA driver {hw['nvidia_driver']}"
    if hw.get("jetson_release"):
        hw_desc += f", {hw['jetson_release']}"
    parts.append(f"Hardware: {hw_desc}; model on {hw.get('model_device') or model.get('device')}.")
    sw_desc = ", ".join(f"{k} {v}" for k, v in sw.items() if v)
    parts.append(f"Software: {sw_desc}.")
    parts.append(
        f"Model: {model.get('id')} ({model.get('dtype')}); the baseline is the "
        "unmodified model and every variant starts from it."
    )
    from ..provenance import source_note

    note = source_note(model.get("id"))
    if note:
        parts.append(f"Model weights: {note}.")
    steps = [
        f"{v['name']} = {step_summary(v.get('definition') or [])}" for v in doc["variants"][1:]
    ]
    if steps:
        parts.append("Variants: " + "; ".join(steps) + ".")
    if meters:
        rate = (
            (f"sampled at {min(hz):g}" + (f"-{max(hz):g}" if max(hz) != min(hz) else "") + " Hz")
            if hz
            else f"sampling rate {env.get('sampling_hz')} Hz requested"
        )
        kind = {
            "counter": "energy counters",
            "power_integration": "integrated power readings",
            "estimate": "a model-based estimate",
            "mixed": "counters and power readings",
        }
        parts.append(
            f"Energy: meter(s) {', '.join(meters)} ({kind.get(method or '', method or 'n/a')}"
            f"), {rate}. "
            + (
                "These figures are ESTIMATES (no hardware energy meter could be read on "
                "this machine), not measurements; compare them only with each other."
                if estimated
                else "All figures are hardware measurements."
            )
        )
    else:
        parts.append("Energy: no benchmark window was recorded.")
    idle = env.get("idle_s")
    parts.append(
        f"Idle power was measured for {idle:g} s before each window and subtracted."
        if idle
        else "Idle power was not subtracted (gross energy, includes the machine's idle draw)."
    )
    prompts = wl.get("prompts")
    n_prompts = len(prompts) if isinstance(prompts, list) else prompts
    parts.append(
        f"Workload: prompts {n_prompts}, {wl.get('max_new_tokens')} new tokens, batch "
        f"size {wl.get('batch_size')}, greedy decoding (end-of-sequence ignored) "
        + (
            "with a static KV cache and a torch.compile'd decode step"
            if wl.get("compile")
            else "with the KV cache, eager"
        )
        + f", {wl.get('warmup')} warm-up and "
        f"{wl.get('repeats')} measured repeats per variant; ± are 95 % confidence "
        "half-widths over the repeats, propagated to relative changes by the delta "
        "method. Compression energy is the measured energy of each step."
    )
    base = doc["variants"][0] if doc["variants"] else {}
    ds = []
    for e in base.get("evals") or []:
        if not e:
            continue
        settings = e.get("settings") or {}
        src = settings.get("data") or settings.get("dataset") or settings.get("task")
        ds.append(f"{e.get('task')} ({e.get('n')} items" + (f", {src}" if src else "") + ")")
    if ds:
        parts.append("Datasets: " + "; ".join(ds) + ".")
    warnings = doc.get("warnings") or []
    if warnings:
        parts.append(f"Warnings ({len(warnings)}): " + " | ".join(warnings) + ".")
    return " ".join(parts)


def carbon_statement(doc: dict[str, Any]) -> str:
    c = doc["carbon"]
    where = f"region {c['region']}" if c.get("region") else "an explicit intensity"
    src = (
        f" ({c['source']}" + (f", {c['year']}" if c.get("year") else "") + ")"
        if c.get("source")
        else ""
    )
    parts = [
        f"Emissions use a grid intensity of {c['intensity_g_per_kwh']:.0f} gCO2e/kWh for "
        f"{where}{src} and a PUE of {c['pue']:.2f}."
    ]
    base = doc["variants"][0] if doc["variants"] else None
    if base and base.get("emissions_g_per_1000_inferences") is not None:
        parts.append(
            f"The baseline emits {num(base['emissions_g_per_1000_inferences'])} g "
            "CO2e per 1,000 inferences of the workload's requests."
        )
    for v in doc["variants"][1:]:
        if not v.get("complete"):
            parts.append(f"{v['name']}: incomplete (run again to resume).")
            continue
        comp_j = v.get("compression_energy_j")
        s = (
            f"{v['name']}: {num(v.get('emissions_g_per_1000_inferences'))} g per 1,000 "
            f"inferences; compressing it cost {num(comp_j)} J "
            f"({num(None if comp_j is None else comp_j / J_PER_WH)} Wh, "
            f"{num(v.get('compression_emissions_g'))} g CO2e)"
        )
        p = v.get("payback_inferences")
        s += (
            ", so when it pays that back is unknown"
            if comp_j is None
            else ", and it never pays that back (no energy saving per request)"
            if p is None
            else f", repaid after {payback_text(p)} "
            f"{'inference' if payback_text(p) == '1' else 'inferences'}"
        )
        if v.get("not_greener"):
            s += "; compressed but not greener (energy per token not lower within its CI)"
        parts.append(s + ".")
    return " ".join(parts)
