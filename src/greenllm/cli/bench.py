"""``greenllm bench`` and ``greenllm devices``. Parses arguments, calls the API. No torch here."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import typer

_TABLE_ROWS = (
    ("ttft_s", "TTFT", "s"),
    ("tpot_s", "time per output token", "s"),
    ("e2e_latency_s", "end-to-end latency", "s"),
    ("prefill_tokens_per_s", "prefill", "tokens/s"),
    ("decode_tokens_per_s", "decode", "tokens/s"),
    ("energy_per_request_j", "energy per request", "J"),
    ("energy_per_token_j", "energy per output token", "J"),
    ("tokens_per_wh", "tokens per Wh", "tokens/Wh"),
    ("edp_js", "EDP", "J*s"),
    ("edp_js_per_b_params", "EDP per B params", "J*s/B"),
    ("wh_per_b_params", "Wh per B params", "Wh/B"),
    ("mean_power_w", "mean power", "W"),
    ("roofline_fraction", "roofline fraction", ""),
    ("peak_memory_bytes", "peak RSS", "bytes"),
    ("cuda_max_allocated_bytes", "CUDA max allocated", "bytes"),
    ("gpu_util_mean_pct", "GPU utilisation", "%"),
    ("size_bytes", "model size", "bytes"),
)


@contextlib.contextmanager
def _hardware_settings(cap, value, clock_cap, clock_value):
    """The power cap and the locked clocks (either may be None) held for the block, each
    restored on the way out (``control.base.capped``)."""
    from ..control.base import capped

    with contextlib.ExitStack() as ctx:
        if cap is not None:
            ctx.enter_context(capped(cap, value))
        if clock_cap is not None:
            ctx.enter_context(capped(clock_cap, clock_value))
        yield


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (abs(v) >= 1e5 or (0 < abs(v) < 1e-3)):
        return f"{v:.3e}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def make_cap(power_cap_w: float | None, power_mode: str | None, profile: str | None = None):
    """(cap, value) for the CLI options, checked before any model is loaded; (None, None)."""
    from ..control.select import select_power_cap

    return select_power_cap(
        power_cap_w, power_mode, profile=profile, names=("--power-cap-w", "--power-mode")
    )


def bench_cmd(
    model: str = typer.Argument(..., help="Hub id, local HF directory or .gguf file."),
    prompts: str | None = typer.Option(
        None, "--prompts", help="Prompt file (one per line) or builtin:prompts (default)."
    ),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    batch_size: int = typer.Option(1, "--batch-size"),
    repeats: str = typer.Option(
        "auto",
        "--repeats",
        help="Metered windows: a number, or auto (until the 95 % CI of J/token is within "
        "--precision).",
    ),
    precision: float = typer.Option(0.05, "--precision", help="Target CI, fraction of mean."),
    max_time_s: float = typer.Option(600.0, "--max-time-s", help="Most seconds of windows."),
    min_window_s: float = typer.Option(1.0, "--min-window-s", help="Shortest window, s."),
    idle_s: float = typer.Option(
        0.0, "--idle-s", help="Measure idle power first (net energy figures)."
    ),
    warmup: int = typer.Option(2, "--warmup", help="Untimed batches before the windows."),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N prompts."),
    power_cap_w: float | None = typer.Option(
        None, "--power-cap-w", help="Hold the GPU power limit (NVML) at W watts."
    ),
    power_mode: str | None = typer.Option(
        None, "--power-mode", help="Hold the Jetson nvpmodel mode (id or name)."
    ),
    clocks: str | None = typer.Option(
        None,
        "--clocks",
        help="Lock the GPU clocks (MHz): 1410, 810-1410 or gpu=1410,mem=5001 (NVML; on a "
        "Jetson the GPU devfreq range). Restored afterwards, also after a crash.",
    ),
    meter: str = typer.Option("auto", "--meter", help="auto, or meter names joined by commas."),
    hz: float = typer.Option(10.0, "--hz", help="Meter sampling rate."),
    dtype: str = typer.Option("float32", "--dtype"),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    profile: str | None = typer.Option(
        None, "--profile", help="Device profile for the roofline bandwidth."
    ),
    compile_: bool = typer.Option(
        False,
        "--compile",
        help="Decode with a static KV cache and "
        "a torch.compile'd decode step (compiles in the warm-up).",
    ),
    runtime: str = typer.Option(
        "torch",
        "--runtime",
        help="torch, llama.cpp, llama-server or onnxruntime. A .gguf / .onnx MODEL runs as it "
        "is; another model is exported first (GGUF Q8_0 / ONNX int8 for int8_weight, else F16 "
        "/ fp32). llama-bench: llama.cpp's own benchmark on a .gguf MODEL inside greenllm's "
        "energy window (-n --max-new-tokens, -p --prompt-tokens, -r --repeats, -t --threads; "
        "--warmup 0 skips the untimed warm-up run).",
    ),
    prompt_tokens: int = typer.Option(
        64, "--prompt-tokens", help="llama-bench only: prompt length of its pp test (-p)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="Threads of the runtime (default: the runtime's own)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Benchmark inference: TTFT, tokens/s, J/token, tokens/Wh, EDP, memory, roofline."""
    from ..bench import WORKLOAD_BOUNDS, bench, parse_workload
    from ..devices import get_profile
    from ..errors import ConfigError
    from ..limits import check_number

    if runtime == "llama-bench":
        given = [
            opt
            for opt, val, default in (
                ("--prompts", prompts, None),
                ("--batch-size", batch_size, 1),
                ("--limit", limit, None),
                ("--compile", compile_, False),
                ("--idle-s", idle_s, 0.0),
            )
            if val != default
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)}: not used by --runtime llama-bench (it runs its own "
                f"synthetic prompt of --prompt-tokens tokens); leave them out"
            )
        _llama_bench_cmd(
            model,
            n_prompt=prompt_tokens,
            n_gen=max_new_tokens,
            threads=threads,
            repeats=repeats,
            warmup=warmup,
            meter=meter,
            hz=hz,
            caps=(make_cap(power_cap_w, power_mode, profile), clocks, profile),
            json_out=json_out,
        )
        return
    for opt, val, key in (
        ("--max-new-tokens", max_new_tokens, "max_new_tokens"),
        ("--batch-size", batch_size, "batch_size"),
        ("--warmup", warmup, "warmup"),
    ):
        check_number(val, opt, None, WORKLOAD_BOUNDS[key][1], integer=True)  # low: Workload
    reps: int | str = repeats.strip()
    if reps != "auto":
        try:
            reps = int(str(reps))
        except ValueError:
            raise ConfigError(f"--repeats: {repeats!r} is not a number or auto") from None
    check_number(idle_s, "--idle-s", 0, 3600, unit="seconds")
    check_number(hz, "--hz", 0.1, 1000, unit="samples per second")
    if power_cap_w is not None:
        check_number(power_cap_w, "--power-cap-w", 0, None, unit="W")  # range: the device
    wl = parse_workload(
        {
            "prompts": prompts or "builtin:prompts",
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "repeats": reps,
            "precision": precision,
            "max_time_s": max_time_s,
            "min_window_s": min_window_s,
            "warmup": warmup,
            "limit": limit,
            "compile": compile_,
            "runtime": runtime,
            "threads": threads,
        }
    )
    from ..bench import load_prompts

    load_prompts(wl.prompts, wl.limit)  # a bad prompt file fails before the model loads
    if profile is not None:
        get_profile(profile)
    from .evaluate import parse_meter_option

    meters = parse_meter_option(meter, allow_none=False)
    cap, value = make_cap(power_cap_w, power_mode, profile)
    from ..control.select import select_clocks

    clock_cap, clock_value = select_clocks(clocks, profile=profile)
    from ..runtimes import load_for_runtime

    mdl, tok = load_for_runtime(wl.runtime, model, dtype=dtype, device=device)
    with _hardware_settings(cap, value, clock_cap, clock_value):
        result = bench(
            mdl, tok, wl, meters=meters, device=device, hz=hz, profile=profile, idle_s=idle_s
        )
    if cap is not None:
        result = dataclasses.replace(
            result, device={**result.device, "power_control": cap.name, "power_setting": value}
        )
    if clock_cap is not None:
        result = dataclasses.replace(
            result, device={**result.device, "clock_control": clock_cap.name, "clocks": clock_value}
        )
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    _print_table(model, result)


def _llama_bench_cmd(
    model: str,
    *,
    n_prompt: int,
    n_gen: int,
    threads: int | None,
    repeats: str,
    warmup: int,
    meter: str,
    hz: float,
    caps: tuple,
    json_out: bool,
) -> None:
    """``greenllm bench MODEL.gguf --runtime llama-bench``: llama-bench in the energy window."""
    from ..control.select import select_clocks
    from ..errors import ConfigError
    from ..limits import check_number
    from ..runtimes.llamabench import llama_bench
    from .evaluate import parse_meter_option

    reps = repeats.strip()
    try:
        n_reps = 5 if reps == "auto" else int(reps)
    except ValueError:
        raise ConfigError(f"--repeats: {repeats!r} is not a number or auto") from None
    check_number(n_reps, "--repeats", 1, 100_000, integer=True)
    check_number(n_prompt, "--prompt-tokens", 0, 1_000_000, integer=True)
    check_number(n_gen, "--max-new-tokens", 1, 1_000_000, integer=True)
    check_number(hz, "--hz", 0.1, 1000, unit="samples per second")
    if threads is not None:
        check_number(threads, "--threads", 1, 4096, integer=True)
    meters = parse_meter_option(meter, allow_none=False)
    (cap, value), clocks, profile = caps
    clock_cap, clock_value = select_clocks(clocks, profile=profile)
    with _hardware_settings(cap, value, clock_cap, clock_value):
        res = llama_bench(
            model,
            n_prompt=n_prompt,
            n_gen=n_gen,
            threads=threads,
            repetitions=n_reps,
            warmup=warmup > 0,
            meters=meters,
            hz=hz,
        )
    if cap is not None:
        res.update(power_control=cap.name, power_setting=value)
    if clock_cap is not None:
        res.update(clock_control=clock_cap.name, clocks=clock_value)
    if json_out:
        typer.echo(json.dumps(res, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    est = " (ESTIMATE)" if res["estimated"] else ""
    table = Table(
        title=f"greenllm bench {model} --runtime llama-bench: {res['repetitions']} repetitions, "
        f"meter {res['meter']}{est}"
    )
    for col in ("metric", "value", "± sd", "unit"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    rows = (
        ("generation (llama-bench avg_ts)", "gen_tokens_per_s", "gen_tokens_per_s_stddev", "t/s"),
        ("prompt (llama-bench avg_ts)", "prompt_tokens_per_s", "prompt_tokens_per_s_stddev", "t/s"),
        ("generated tokens / window", "window_gen_tokens_per_s", None, "t/s"),
        ("energy per generated token", "energy_per_token_j", None, "J"),
        ("tokens per Wh", "tokens_per_wh", None, "tokens/Wh"),
        ("window energy", "energy_j", None, "J"),
        ("mean power", "mean_power_w", None, "W"),
        ("window", "duration_s", None, "s"),
        ("of which llama-bench timed", "llama_bench_busy_s", None, "s"),
        ("untimed warm-up run", "warmup_s", None, "s"),
    )
    for label, key, sd, unit in rows:
        table.add_row(label, _fmt(res.get(key)), _fmt(res.get(sd)) if sd else "", unit)
    Console().print(table)
    typer.echo(
        f"llama-bench {res['binary']} build {res.get('build_number')} "
        f"({res.get('build_commit')}); {res.get('backends')}; threads {res.get('threads')}; "
        f"{res['generated_tokens']} generated, {res['prompt_tokens']} prompt tokens"
    )
    for why in res["invalid"]:
        typer.echo(f"energy window invalid: {why}")


def _print_table(model: str, result) -> None:
    from rich.console import Console
    from rich.table import Table

    est = " (ESTIMATE)" if result.estimated else ""
    table = Table(
        title=f"greenllm bench {model}: {result.repeats} repeats, meter {result.meter}{est}"
    )
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("± 95% CI", justify="right")
    table.add_column("unit")
    for key, label, unit in _TABLE_ROWS:
        if key in result.metrics:
            table.add_row(label, _fmt(result.metrics[key]), _fmt(result.ci95.get(key)), unit)
    Console().print(table)
    d = result.device
    typer.echo(
        f"roofline bandwidth {d.get('memory_bandwidth_bytes_per_s', 0) / 1e9:.1f} GB/s "
        f"({d.get('bandwidth_source')}); device {d.get('torch_device')}, profile "
        f"{d.get('profile')}; decoding: {result.workload.get('decoding')}; runtime "
        f"{d.get('runtime', 'torch')}, threads {d.get('runtime_threads', d.get('torch_threads'))}"
    )


def devices_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the device profiles and the device detected here."""
    from ..devices import PROFILES, detect_device

    detected = detect_device()
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "detected": detected.to_dict(),
                    "profiles": [p.to_dict() for p in PROFILES.values()],
                },
                indent=2,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="greenllm device profiles")
    table.add_column("profile", no_wrap=True)
    for col in ("memory", "bandwidth", "CPU cores", "GPU cores", "power modes (nvpmodel id=name)"):
        table.add_column(col)
    for p in PROFILES.values():
        mark = " *" if p.name == detected.profile.name else ""
        modes = ", ".join(f"{m.id}={m.name}" for m in p.power_modes) or "-"
        table.add_row(
            p.name + mark,
            f"{p.memory_bytes / 1024**3:.0f} GiB" if p.memory_bytes else "-",
            f"{p.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s"
            if p.memory_bandwidth_bytes_per_s
            else "measured",
            str(p.cpu_cores or "-"),
            str(p.gpu_cores or "-"),
            modes,
        )
    Console().print(table)
    typer.echo(f"detected: {detected.profile.name} (via {detected.via}: {detected.model or '-'})")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
    app.command("devices")(devices_cmd)
