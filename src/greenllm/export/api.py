"""``export_model``: one entry point for every export format, and the record on the model of
what was exported (``model_meta(model)["exports"]``), which the llama.cpp / ONNX Runtime
runtimes open when a bench or an evaluation asks for them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Exported, default_out

EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "gguf": ("f32", "f16", "q8_0", "q4_0"),
    "onnx": ("fp32", "int8"),
}
DEFAULT_TYPE = {"gguf": "q8_0", "onnx": "fp32"}


def check_format(fmt: str, qtype: str | None, where: str = "export") -> str:
    """The export type to use (the format's default when ``qtype`` is None or ``auto``)."""
    if fmt not in EXPORT_FORMATS:
        from ..registry import did_you_mean

        hint = did_you_mean(fmt, list(EXPORT_FORMATS))
        raise ConfigError(
            f"{where}.format: unknown export format {fmt!r}"
            + (f"; did you mean {hint!r}?" if hint else "")
            + f" (known: {', '.join(EXPORT_FORMATS)})"
        )
    if qtype in (None, "auto"):
        return DEFAULT_TYPE[fmt]
    if qtype not in EXPORT_FORMATS[fmt]:
        raise ConfigError(
            f"{where}.type: {qtype!r} is not among the {fmt} export types (allowed: "
            f"{', '.join(EXPORT_FORMATS[fmt])})"
        )
    return qtype


def auto_type(model: Any, fmt: str) -> str:
    """The type that keeps what a model stores: GGUF Q8_0 for an ``int8_weight`` model, F16
    for a float one; ONNX int8 for an ``int8_weight`` model, fp32 for a float one."""
    int8 = any(getattr(m, "greenllm_weight_format", None) == "int8_weight" for m in model.modules())
    if fmt == "gguf":
        return "q8_0" if int8 else "f16"
    return "int8" if int8 else "fp32"


def export_model(
    model: Any,
    tokenizer: Any,
    format: str = "gguf",
    type: str | None = None,
    out: str | os.PathLike | None = None,
) -> Exported:
    """Export ``model`` as ``format`` / ``type`` to ``out`` (a new temporary folder when None);
    records the file on the model and returns its ``Exported`` report."""
    qtype = auto_type(model, format) if type == "auto" else check_format(format, type)
    target = Path(out) if out is not None else default_out(model, format, qtype)
    if format == "gguf":
        from .gguf import export_gguf

        result = export_gguf(model, tokenizer, target, qtype)
    else:
        from .onnx import export_onnx

        result = export_onnx(model, tokenizer, target, qtype)
    record_export(model, result)
    return result


def record_export(model: Any, result: Exported) -> None:
    from ..models import model_meta

    model_meta(model).setdefault("exports", []).append(result.to_dict())


def find_export(model: Any, fmt: str) -> dict[str, Any] | None:
    """The latest export of ``fmt`` recorded on ``model`` whose file still exists."""
    from ..models import model_meta

    for rec in reversed(model_meta(model).get("exports", [])):
        if rec.get("format") == fmt and Path(rec["path"]).exists():
            return rec
    return None
