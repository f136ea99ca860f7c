"""The carbon statement and the methodology statement: plain sentences a reviewer can check,
built only from what the store recorded (nothing here is assumed or hard-coded)."""

from __future__ import annotations

from typing import Any

from ..units import J_PER_WH
from .tables import is_baseline, num, payback_text, step_summary


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


def hardware_text(hw: dict[str, Any]) -> str:
    """The machine an environment recorded: detected title, CPU, memory, driver, JetPack."""
    dev = hw.get("device") or {}
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
    return hw_desc


def _study_devices(doc: dict[str, Any]) -> list[str]:
    """One sentence per device of a study: its profile (the data sheet) and what its own
    environment recorded."""
    out = []
    envs = doc.get("device_environments") or {}
    for d in doc["study"]["devices"]:
        env = envs.get(d["name"]) or {}
        hw = env.get("hardware") or {}
        spec = [
            x
            for x in (
                f"{d['memory_bytes'] / 1024**3:.0f} GiB {d.get('memory_type') or ''}".strip()
                if d.get("memory_bytes")
                else None,
                f"CPU {d['cpu']}" if d.get("cpu") else None,
                f"GPU {d['gpu']}" if d.get("gpu") else None,
            )
            if x
        ]
        s = f"Device {d['name']}: profile {d.get('profile') or 'unknown'}"
        s += (
            f" ({d['title']}" + (f"; {', '.join(spec)})" if spec else ")") if d.get("title") else ""
        )
        s += f", reached {d.get('via') or 'local'}"
        node = d.get("node") or {}
        if node.get("hostname"):
            s += f" on node {node['hostname']}"
        s += f"; measured on {hardware_text(hw)}, model on {d.get('torch_device') or 'cpu'}"
        idle = (env.get("meters") or {}).get("idle_power_w")
        if idle is not None:
            s += f", idle power {idle:.2f} W"
        out.append(s + ".")
    return out


def methodology(doc: dict[str, Any]) -> str:
    study = doc.get("study")
    env = doc.get("environment") or {}
    if study:  # the measuring machines' own environments (the driver's is the fallback)
        first = study["devices"][0]["name"] if study["devices"] else None
        env = (doc.get("device_environments") or {}).get(first) or env
    hw, sw = env.get("hardware") or {}, env.get("software") or {}
    wl = doc.get("workload") or {}
    model = doc.get("model") or {}
    meters, estimated, hz, method = _meters_used(doc)
    parts = []
    from ..provenance import source_note

    if study:
        parts += _study_devices(doc)
        parts.append(f"Software: {', '.join(f'{k} {v}' for k, v in sw.items() if v)}.")
        parts.append(
            "Models: "
            + "; ".join(
                f"{m.get('name')} = {m.get('id')} ({m.get('dtype')})" for m in study["models"]
            )
            + "; in each, the baseline is the unmodified model and every variant starts from "
            "it; each (model, device) has its own baseline and every Δ, verdict and payback is "
            "against the baseline of the same model on the same device."
        )
        notes = [n for m in study["models"] if (n := source_note(m.get("id")))]
        if notes:
            parts.append(f"Model weights: {'; '.join(dict.fromkeys(notes))}.")
    else:
        parts.append(
            f"Hardware: {hardware_text(hw)}; model on "
            f"{hw.get('model_device') or model.get('device')}."
        )
        sw_desc = ", ".join(f"{k} {v}" for k, v in sw.items() if v)
        parts.append(f"Software: {sw_desc}.")
        parts.append(
            f"Model: {model.get('id')} ({model.get('dtype')}); the baseline is the "
            "unmodified model and every variant starts from it."
        )
        note = source_note(model.get("id"))
        if note:
            parts.append(f"Model weights: {note}.")
    defined: dict[str, str] = {}
    for v in doc["variants"]:
        if not is_baseline(v):
            defined.setdefault(v.get("variant", v["name"]), step_summary(v.get("definition") or []))
    steps = [f"{n} = {d}" for n, d in defined.items()]
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
    meters_env = env.get("meters") or {}
    idle_w = meters_env.get("idle_power_w")
    if idle_w is not None:
        parts.append(
            f"Idle power was measured once before the rounds ({meters_env.get('idle_measured_s')}"
            f" s, {idle_w:.2f} W) and every energy figure is given gross and net of it; the "
            f"headline uses the {'net' if _headline_net(doc) else 'gross'} figure."
        )
    elif estimated:
        parts.append(
            "Idle power was not subtracted: for a model-based estimate an idle baseline means "
            "nothing (the model's idle term is an assumption, not a reading); figures are gross."
        )
    else:
        parts.append("Idle power was not subtracted (gross energy, includes the idle draw).")
    prompts = wl.get("prompts")
    n_prompts = len(prompts) if isinstance(prompts, list) else prompts
    b0 = (doc["variants"][0].get("bench") or {}) if doc["variants"] else {}
    bwl = b0.get("workload") or {}
    scheme = bwl.get("scheme")
    scheme_text = {
        "resident": "all models stayed loaded",
        "reload": "each compressed model was saved once and reloaded before its window, "
        "outside the metered window",
        "bracket": "one variant at a time, each of its windows between two baseline windows "
        "(paired with their mean)",
    }.get(str(scheme), "")
    parts.append(
        f"Workload: prompts {n_prompts}, {wl.get('max_new_tokens')} new tokens, batch "
        f"size {wl.get('batch_size')}, greedy decoding (end-of-sequence ignored) "
        + (
            "with a static KV cache and a torch.compile'd decode step"
            if wl.get("compile")
            else "with the KV cache, eager"
        )
        + f", {wl.get('warmup')} warm-up batches per model."
    )
    if scheme:
        floor = bwl.get("window_floor_s")
        parts.append(
            f"Rounds: the baseline and every variant were measured in rounds, each round "
            f"running every model's workload once in a seeded random order (seed "
            f"{bwl.get('round_order_seed')}), scheme {scheme} ({scheme_text}); "
            f"{bwl.get('rounds')} rounds ({bwl.get('stopped')}; repeats "
            f"{wl.get('repeats', 'auto')}, precision "
            f"±{100 * float(wl.get('precision') or 0.05):.0f} %). Each metered window lasted "
            f"at least {num(floor)} s (min_window_s and 20 "
            "sampling periods of the slowest meter; the prompts repeat inside a window until "
            "it does). Energy deltas are paired by round: the mean of the per-round ratios "
            "variant/baseline, with a 95 % Student-t half-width over the rounds. Disturbed "
            f"windows (contended CPU, throttled clocks) were handled by "
            f"'{bwl.get('on_disturbance')}'; a window more than 5 % from its variant's median "
            "is flagged. Compression energy is the measured energy of each step."
        )
    else:
        parts.append(
            f"{wl.get('repeats')} measured repeats per variant; ± are 95 % confidence "
            "half-widths over the repeats, propagated to relative changes by the delta method "
            "(unpaired)."
        )
    runtimes = sorted(
        {
            str((v.get("bench") or {}).get("device", {}).get("runtime"))
            for v in doc["variants"]
            if (v.get("bench") or {}).get("device", {}).get("runtime")
        }
    )
    if runtimes:
        thr = (b0.get("device") or {}).get("runtime_threads")
        parts.append(
            "Runtime: "
            + ", ".join(runtimes)
            + (f" ({thr} threads)" if thr else "")
            + "; evaluations scored through the same runtime's logits."
        )
    boundaries = sorted({str(v.get("boundary")) for v in doc["variants"] if v.get("boundary")})
    if boundaries:
        parts.append(
            "Measurement boundary: "
            + ", ".join(boundaries)
            + " (wall = external meter, module rails = INA3221, gpu board = NVML, cpu package = "
            "RAPL, model = the estimate); no delta is computed across two boundaries."
        )
    ps = (hw.get("power_settings") or {}) if isinstance(hw, dict) else {}
    if ps:
        parts.append(
            "Power settings in force: " + ", ".join(f"{k} {v}" for k, v in ps.items()) + "."
        )
    shared = [
        f"{v['name']} (steps 1-{n} shared with {d})"
        for v in doc["variants"]
        for n, d in [_shared(v)]
        if d
    ]
    if shared:
        parts.append(
            "Shared step prefixes ran once: "
            + "; ".join(shared)
            + "; their compression energy is charged to every variant that uses them."
        )
    if any((e or {}).get("cost") for v in doc["variants"] for e in v.get("evals") or []):
        parts.append(
            "Every evaluation ran inside one metered window (energy, time and tokens per item)."
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


def _headline_net(doc: dict[str, Any]) -> bool:
    return any(
        str(v.get("headline_metric") or "").startswith("net_") for v in doc.get("variants") or []
    )


def _shared(v: dict[str, Any]) -> tuple[int, str | None]:
    donor, n = None, 0
    for s in v.get("steps") or []:
        d = (s.get("stats") or {}).get("shared_with")
        if not d:
            break
        donor, n = d, n + 1
    return n, donor


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
    series = (doc.get("lifecycle") or {}).get("series")
    if series:  # time-resolved: the per-window intensity replaces the annual figure
        parts = [
            f"Emissions integrate each window's energy against the "
            f"{doc['lifecycle']['signal']} grid intensity of {series['source']} (PUE "
            f"{c['pue']:.2f}); the annual figure for {where}{src}, "
            f"{c['intensity_g_per_kwh']:.0f} gCO2e/kWh, is for comparison only."
        ]
    study = bool(doc.get("study"))  # a baseline per model and device, each with its line
    base = doc["variants"][0] if doc["variants"] else None
    if base and not study and base.get("emissions_g_per_1000_inferences") is not None:
        parts.append(
            f"The baseline emits {num(base['emissions_g_per_1000_inferences'])} g "
            "CO2e per 1,000 inferences of the workload's requests."
        )
    for v in doc["variants"] if study else doc["variants"][1:]:
        if study and is_baseline(v):
            if v.get("emissions_g_per_1000_inferences") is not None:
                parts.append(
                    f"{v['name']} (baseline): {num(v['emissions_g_per_1000_inferences'])} g "
                    "CO2e per 1,000 inferences."
                )
            continue
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
            else ", and whether it pays that back is not computed (the energy change is "
            "inconclusive)"
            if v.get("verdict") == "inconclusive"
            else ", and it never pays that back (no energy saving per request)"
            if p is None
            else f", repaid after {payback_text(p)} "
            f"{'inference' if payback_text(p) == '1' else 'inferences'}"
        )
        if v.get("verdict") == "not greener" or (v.get("verdict") is None and v.get("not_greener")):
            s += "; compressed but not greener (the CI of its saving lies below the target)"
        elif v.get("verdict") == "inconclusive":
            s += f"; {v.get('verdict_note') or 'inconclusive'}"
        parts.append(s + ".")
    return " ".join(parts)


# ---------------------------------------------------------------- lifecycle (SCI)


def _g(x: Any) -> str:
    return "unknown" if x is None else f"{num(x)} g"


def lifecycle_statement(doc: dict[str, Any]) -> str:
    """Operational, embodied and total emissions per 1,000 inferences (SCI shape), the
    reference-grid line and the scheduling counterfactual, in sentences."""
    lc = doc.get("lifecycle") or {}
    emb = lc.get("embodied") or {}
    basis = f"{lc.get('accounting', 'location')}-based, {lc.get('signal', 'average')} intensity"
    parts = [f"Software Carbon Intensity (ISO/IEC 21031: (E x I + M) per R; {basis})."]
    kind = emb.get("kind")
    if emb.get("kg_co2e") is not None:
        label = "an ESTIMATE" if kind == "estimate" else f"a {kind} figure"
        parts.append(
            f"Embodied carbon of {emb.get('device') or 'the device'}: {num(emb['kg_co2e'])} kg "
            f"CO2e ({label}; {emb.get('source')}), amortised over "
            f"{num(emb.get('service_life_years'))} years ({emb.get('life_source')}) at "
            f"{num(100 * float(emb.get('utilisation') or 0))} % utilisation."
        )
    else:
        parts.append(f"Embodied carbon: {emb.get('source') or 'unknown'}; totals are unknown.")
    for v in doc["variants"]:
        share = v.get("embodied_share_pct")
        s = (
            f"{v['name']}: operational {_g(v.get('operational_g_per_1000_inferences'))}, "
            f"embodied {_g(v.get('embodied_g_per_1000_inferences'))}, total "
            f"{_g(v.get('total_g_per_1000_inferences'))} per 1,000 inferences"
        )
        if v.get("sci_g_per_token") is not None:
            s += f" (SCI {num(v['sci_g_per_token'] * 1000)} mg per token)"
        if share is not None:
            s += f"; embodied is {num(share)} % of the total"
            if share > 50:
                s += " -- MORE than the operational share on this grid"
        parts.append(s + ".")
    ref = lc.get("reference")
    if ref:
        base = doc["variants"][0] if doc["variants"] else {}
        parts.append(
            f"At the reference grid of {num(ref['g_per_kwh'])} gCO2e/kWh ({ref['source']}) the "
            "baseline's total would be "
            f"{_g(base.get('reference_grid_total_g_per_1000_inferences'))} per 1,000 "
            "inferences (compare this line across countries)."
        )
    elif lc.get("accounting") == "market":
        parts.append(
            "No reference-grid line: the figures are market-based and a grid average is "
            "location-based (the two are never mixed)."
        )
    sch = doc.get("schedule")
    if sch:
        parts.append(
            f"Carbon-aware start: chosen {sch.get('start_iso')} within the deadline "
            f"{sch.get('deadline_iso')} from the forecast of {sch['source']} ({sch['signal']}); "
            f"started immediately: {num(sch['immediate_g'])} g; scheduled: "
            f"{num(sch['scheduled_g'])} g (-{num(sch['saving_pct'])} %), expected for a "
            f"{num(sch.get('duration_s'))} s run at {num(sch.get('power_w'))} W "
            f"({sch.get('expected_from') or 'given'})."
        )
    for n in lc.get("notes") or []:
        parts.append(f"Note: {n}.")
    return " ".join(parts)


def lifecycle_methodology(doc: dict[str, Any]) -> str:
    """Every assumption of the lifecycle figures, for the methodology paragraph."""
    lc = doc.get("lifecycle") or {}
    emb = lc.get("embodied") or {}
    parts = []
    ser = lc.get("series")
    if lc.get("time_resolved"):
        if ser:
            parts.append(
                f"Operational emissions integrate each measured window's energy (constant power "
                f"over the window) against the {lc.get('signal')} grid intensity of "
                f"{ser['source']} at the window's timestamps ({ser['points']} points every "
                f"{num(ser['period_s'])} s, {ser['forecast_points']} of them forecasts); "
                "repeat start times not recorded are reconstructed as back-to-back repeats "
                "ending at the last recorded window."
            )
        srcs = lc.get("window_sources") or []
        if srcs:
            parts.append("Intensity source per window: " + "; ".join(srcs) + ".")
    else:
        parts.append(
            "Operational emissions use one annual-average grid intensity for every window."
        )
    parts.append(
        "Embodied emissions per 1,000 inferences = embodied kg CO2e x the device time of "
        "1,000 inferences (the benchmark window's duration / its requests) / (service life "
        "hours x utilisation); the device is counted whole (no share for co-located work)."
    )
    if emb.get("kind") == "estimate" and emb.get("bom"):
        bom = emb["bom"]
        parts.append(
            f"The embodied figure is an ACT estimate from a bill of materials: logic die "
            f"{num(bom['logic_die_area_mm2'])} mm2 at {num(bom['process_node_nm'])} nm "
            f"(ACT row {emb['breakdown'].get('act_node_nm')} nm, "
            f"{num(emb['breakdown'].get('logic_g_per_cm2'))} g/cm2), {num(bom['dram_gb'])} GB "
            f"{bom['dram_type']} ({num(emb['breakdown'].get('dram_g_per_gb'))} g/GB), "
            f"{bom['packages']} IC packages x 150 g; {bom['notes']}."
        )
    parts.append(
        f"Accounting is {lc.get('accounting', 'location')}-based throughout."
        + (
            " The reference-grid line replaces the intensity by "
            f"{num(lc['reference']['g_per_kwh'])} gCO2e/kWh ({lc['reference']['source']})."
            if lc.get("reference")
            else ""
        )
    )
    return " ".join(parts)
