"""``greenllm compress``: apply compression steps to a model and save it. No torch here.

    greenllm compress MODEL --step 'prune:method=wanda,sparsity=0.5' \\
        --step 'quantize:method=int8_weight' [--calibration FILE] --out DIR [--json]

Every --step is parsed and checked before the model is loaded. With --out, a step whose result
cannot be saved and reloaded (torchao, torch.ao dynamic int8, bitsandbytes) is refused up front
(exit 2, nothing computed or written); without --out the steps run, the statistics are printed
and the command says why such a model could not be saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError, DataError, ModelError


def _not_savable(parsed) -> str | None:
    from ..steps.quantize import QUANT_METHODS

    for key, cfg in parsed:
        if key == "quantize" and not QUANT_METHODS.get(cfg.method).reloads:
            info = QUANT_METHODS.get(cfg.method)
            return f"quantize method {cfg.method!r} does not reload: {info.why_not_reload}"
    return None


def _summary(stats: dict[str, Any]) -> str:
    """One line of the interesting statistics: scalars, and min/mean/max of per-layer maps."""
    parts = []
    for k, v in stats.items():
        if k in ("modules", "method", "reloads"):
            continue
        if v is None:
            continue
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, (bool, int, str)):
            parts.append(f"{k}={v}")
        elif (
            isinstance(v, dict)
            and v
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())
        ):
            vals = list(v.values())
            parts.append(
                f"{k}[{len(vals)} layers] min={min(vals):.3g} "
                f"mean={sum(vals) / len(vals):.3g} max={max(vals):.3g}"
            )
    return ", ".join(parts)


def compress_cmd(
    model: str = typer.Argument(..., help="Hub id, local HF directory or .gguf file."),
    step: list[str] = typer.Option(
        [],
        "--step",
        help="A step as NAME:key=value,... "
        "(repeatable, applied in order), e.g. "
        "'quantize:method=int8_weight'.",
    ),
    calibration: str | None = typer.Option(
        None, "--calibration", help="Text file of calibration data (prune)."
    ),
    out: str | None = typer.Option(None, "--out", help="Save the compressed model here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    dtype: str = typer.Option("float32", "--dtype"),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Apply compression steps (quantize, prune, ...) in order and save the model."""
    from ..config import parse_kv_spec
    from ..steps.base import compress, parse_steps

    if not step:
        raise ConfigError(
            "--step: give at least one step, e.g. --step 'quantize:method=int8_weight'"
        )
    parsed = parse_steps([parse_kv_spec(s) for s in step], "--step")
    from ..preflight import needs_calibration

    for i, (key, cfg) in enumerate(parsed):
        need = needs_calibration(key, cfg)
        if need and calibration is None:  # before the model loads, not after
            raise ConfigError(
                f"--step[{i}] {key}: needs calibration text ({need}); pass --calibration FILE"
            )
    why = _not_savable(parsed)
    if out is not None:
        target = Path(out).expanduser()
        if why:
            raise ModelError(f"--out {out}: {why}; drop --out to run it without saving")
        if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
            raise ModelError(
                f"--out {out} already exists and is not empty; choose a new "
                "directory or pass --overwrite"
            )
        from ..limits import check_writable_dir
        from ..modelfiles import check_overwrite

        if overwrite:
            check_overwrite(target)
        check_writable_dir(target.parent, "folder of --out")  # before the model loads
    if calibration is not None and not Path(calibration).expanduser().is_file():
        raise DataError(f"--calibration {calibration}: file not found")

    from ..models import load_model, model_size_bytes, save

    mdl, tok = load_model(model, dtype=dtype, device=device)
    size0 = model_size_bytes(mdl)
    mdl, results = compress(
        mdl, parsed, tokenizer=tok, calibration=calibration, device=device, seed=seed
    )
    saved = None
    if out is not None:
        saved = str(save(mdl, out, tok, overwrite=overwrite))
    final = model_size_bytes(mdl)
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "model": model,
                    "size_bytes_before": size0,
                    "size_bytes_after": final,
                    "steps": [r.to_dict() for r in results],
                    "saved_to": saved,
                    "not_saved_reason": None if saved else (why or "no --out given"),
                },
                indent=2,
                default=str,
            )
        )
        return
    _print(model, results, size0, final, saved, why)


def _print(model, results, size0, final, saved, why) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"greenllm compress {model}")
    for col in (
        "step",
        "method",
        "time_s",
        "size_bytes before",
        "size_bytes after",
        "ratio",
        "statistics",
    ):
        table.add_column(
            col, justify="right" if "size" in col or col in ("time_s", "ratio") else "left"
        )
    for r in results:
        ratio = r.size_bytes_after / r.size_bytes_before if r.size_bytes_before else float("nan")
        table.add_row(
            r.step,
            r.method,
            f"{r.duration_s:.2f}",
            f"{r.size_bytes_before:,}",
            f"{r.size_bytes_after:,}",
            f"{ratio:.3f}",
            _summary(r.stats),
        )
    Console(width=160).print(table)
    typer.echo(f"size_bytes {size0:,} -> {final:,} ({final / size0:.3f} of the original)")
    if saved:
        typer.echo(f"saved to {saved} (reload with greenllm.load_model({saved!r}))")
    else:
        typer.echo(
            "not saved: " + (why + "; quantize after loading instead" if why else "no --out given")
        )


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_cmd)
