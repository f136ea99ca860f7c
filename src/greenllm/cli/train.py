"""``greenllm train-search``: energy-aware batch size / power cap search, then training.

Parses arguments and calls ``greenllm.training``. No torch here.
"""

from __future__ import annotations

import json

import typer

from ..errors import ConfigError


def _floats(text: str | None, option: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a comma-separated list of numbers") from None


def _ints(text: str, option: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a comma-separated list of integers") from None
    if not out:
        raise ConfigError(f"{option}: give at least one value, e.g. 4,8,16")
    return out


def split_clocks(text: str | None) -> list[str]:
    """Clock candidates: separated by ';', or by ',' when none names gpu= / mem=."""
    if not text or not text.strip():
        return []
    parts = text.split(";") if (";" in text or "=" in text) else text.split(",")
    return [p.strip() for p in parts if p.strip()]


def train_search_cmd(
    model: str = typer.Argument(..., help="Hub id, local HF directory or .gguf file."),
    data: str = typer.Option(
        ...,
        "--data",
        help="Training data: text file, SQuAD JSON, instruction JSONL or builtin:NAME.",
    ),
    batch_sizes: str = typer.Option("4,8,16", "--batch-sizes", help="Candidates, e.g. 4,8,16."),
    power_caps_w: str | None = typer.Option(
        None, "--power-caps-w", help="GPU power caps to try (W, NVML), e.g. 150,200,250."
    ),
    power_limits_w: str | None = typer.Option(
        None, "--power-limits-w", hidden=True, help="Old name of --power-caps-w."
    ),
    power_modes: str | None = typer.Option(
        None, "--power-modes", help="Jetson nvpmodel modes to try, e.g. 0,1."
    ),
    clocks: str | None = typer.Option(
        None,
        "--clocks",
        help="Locked GPU clocks to try (MHz), e.g. 1980,1410,1110 (or 'gpu=1410,mem=5001;"
        "gpu=1110' for several settings with memory clocks); restored after each.",
    ),
    eta: float = typer.Option(0.5, "--eta", help="Zeus weight: 1 = energy only, 0 = time only."),
    default_batch_size: int | None = typer.Option(
        None,
        "--default-batch-size",
        help="The setting savings are projected against "
        "(default: the first batch size, power left as is).",
    ),
    task: str = typer.Option("lm", "--task", help="lm, qa or instruct."),
    seq_len: int = typer.Option(256, "--seq-len"),
    epochs: int = typer.Option(1, "--epochs"),
    lr: float = typer.Option(5e-5, "--lr"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16."),
    profile_steps: int = typer.Option(3, "--profile-steps", help="Measured steps per candidate."),
    meter: str = typer.Option("auto", "--meter", help="auto, or meter names joined by commas."),
    device: str = typer.Option("cpu", "--device"),
    search_only: bool = typer.Option(False, "--search-only", help="Do not train afterwards."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Profile batch sizes x power caps, pick by eta*E + (1-eta)*P_max*T, then train."""
    from ..config import parse_config
    from ..limits import check_number
    from ..steps.train import TrainConfig

    check_number(eta, "--eta", 0, 1)
    check_number(lr, "--lr", 0, 10)
    from ..training import energy_aware_train

    sizes = _ints(batch_sizes, "--batch-sizes")
    if power_caps_w is not None and power_limits_w is not None:
        raise ConfigError("--power-caps-w: give it once (--power-limits-w is its old name)")
    if power_limits_w is not None:
        power_caps_w = power_limits_w
    limits = _floats(power_caps_w, "--power-caps-w")
    modes = [m.strip() for m in (power_modes or "").split(",") if m.strip()]
    cfg = parse_config(
        TrainConfig,
        {
            "data": data,
            "task": task,
            "seq_len": seq_len,
            "epochs": epochs,
            "lr": lr,
            "precision": precision,
            "batch_size": default_batch_size or sizes[0],
        },
        "train-search",
    )
    meters = meter if meter == "auto" else [m.strip() for m in meter.split(",") if m.strip()]
    if not data.startswith("builtin:"):  # a missing data file is found before the model loads
        from ..builtin_data import resolve_data

        resolve_data(data, "--data")
    from ..control.select import select_power_cap

    # the power control of this device, every setting checked before the model is loaded
    cap, _ = select_power_cap(limits, modes, names=("--power-caps-w", "--power-modes"))
    from ..control.select import select_clocks

    clock_list = split_clocks(clocks)
    clock_cap, _ = select_clocks(clock_list)
    from ..models import load_model

    m, tok = load_model(model, device=device)
    result, report, energy = energy_aware_train(
        m,
        tok,
        cfg,
        batch_sizes=sizes,
        power_caps_w=limits,
        power_modes=modes,
        eta=eta,
        profile_steps=profile_steps,
        meters=meters,
        cap=cap,
        train=not search_only,
        clocks=clock_list,
        clock_cap=clock_cap,
    )
    if json_out:
        out = {
            "search": result.to_dict(),
            "train": report.to_dict() if report is not None else None,
            "energy": energy.to_dict() if energy is not None else None,
        }
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    typer.echo(result.table())
    typer.echo(
        f"\nchoice: {result.choice.label()} (default {result.default.label()}, "
        f"eta={result.eta:g}, P_max={result.p_max_w:.4g} W)"
    )
    typer.echo(
        f"projected vs default per sample: energy {-100 * result.projected_energy_saving:+.1f} %, "
        f"time {100 * result.projected_time_change:+.1f} %, cost "
        f"{-100 * result.projected_cost_saving:+.1f} %"
    )
    typer.echo(f"note: {result.note}")
    if report is not None:
        typer.echo(
            f"trained {report.steps} steps, {report.epochs_run} epoch(s), "
            f"{report.tokens} tokens in {report.duration_s:.1f} s; loss "
            f"{report.first_loss:.4g} -> {report.last_loss:.4g}; energy "
            f"{energy.energy_j:.4g} J" + (" (estimate)" if energy.estimated else "")
        )
        for e in report.epochs:
            typer.echo(
                f"  epoch {e['epoch']}: {e['duration_s']:.1f} s, {e['tokens']} tokens, "
                f"train loss {e['train_loss']:.4g}, energy {e.get('energy_j', 0):.4g} J"
            )


def register(app: typer.Typer) -> None:
    app.command("train-search")(train_search_cmd)
