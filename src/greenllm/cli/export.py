"""``greenllm export``: write a model as GGUF (llama.cpp) or ONNX (ONNX Runtime). No torch here.

    greenllm export MODEL --format gguf --type f16|q8_0|q4_0 [--out FILE] [--json]
    greenllm export MODEL --format onnx --type fp32|int8 [--out FILE]

MODEL is a hub id, a local Hugging Face directory (a compressed checkpoint from ``greenllm
compress --out`` included) or a .gguf file. The report gives the file's bytes, its effective
bits per weight and the per-tensor type histogram, read back from the written file.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import ModelError


def export_cmd(
    model: str = typer.Argument(..., help="Hub id, local HF directory or .gguf file."),
    format: str = typer.Option("gguf", "--format", help="gguf (llama.cpp) or onnx."),
    type: str = typer.Option(
        "auto",
        "--type",
        help="gguf: f32, f16, q8_0, q4_0; onnx: fp32, int8; auto keeps what the model "
        "stores (int8_weight -> q8_0 / int8, float -> f16 / fp32).",
    ),
    out: str | None = typer.Option(None, "--out", help="The file to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    dtype: str = typer.Option("float32", "--dtype", help="dtype to load the model in."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Export a model for llama.cpp (GGUF) or ONNX Runtime (ONNX)."""
    from ..export.api import check_format

    if type != "auto":
        check_format(format, type, "--format/--type")
    else:
        check_format(format, None, "--format/--type")
    target = None
    if out is not None:
        target = Path(out).expanduser()
        if target.exists() and not overwrite:
            raise ModelError(f"--out {out} already exists; choose a new file or pass --overwrite")
        if target.is_dir():
            raise ModelError(f"--out {out} is a folder; give a file name")
        from ..limits import check_writable_dir

        target.parent.mkdir(parents=True, exist_ok=True)
        check_writable_dir(target.parent, "folder of --out")  # before the model loads
    from ..export import export_model
    from ..models import load_model

    mdl, tok = load_model(model, dtype=dtype, device="cpu")
    result = export_model(mdl, tok, format, type, target)
    if json_out:
        typer.echo(json.dumps({"model": model, **result.to_dict()}, indent=2))
        return
    typer.echo(result.summary())
    for note in result.notes:
        typer.echo(f"  note: {note}")
    for extra in result.extra_files:
        typer.echo(f"  with: {extra}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
