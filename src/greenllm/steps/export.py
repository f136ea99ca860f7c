"""The ``export`` step: write the model as it is at this point of a variant in a runtime's
format, ``{export: {format: gguf, type: q8_0}}``. The model itself is unchanged; the file is
recorded on it (``model_meta(model)["exports"]``), so a workload with ``runtime: llama.cpp``
or ``runtime: onnxruntime`` benchmarks and evaluates exactly this file.

``type``: GGUF ``f32``, ``f16``, ``q8_0`` (default), ``q4_0``; ONNX ``fp32`` (default),
``int8``; ``auto`` keeps what the model stores (``int8_weight`` -> Q8_0 / ONNX int8, float ->
F16 / fp32). ``out``: the file to write; default, the run's artifact folder when the runner
gives one (``StepContext.extras["artifacts_dir"]``), else a new temporary folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import Config, ConfigError
from .base import StepContext, StepSpec


@dataclass(frozen=True)
class ExportConfig(Config):
    format: Literal["gguf", "onnx"] = field(
        default="gguf", metadata={"doc": "gguf (llama.cpp) or onnx (ONNX Runtime)."}
    )
    type: str = field(
        default="auto",
        metadata={
            "doc": "gguf: f32, f16, q8_0, q4_0; onnx: fp32, int8; auto keeps what the model "
            "stores (int8_weight -> q8_0 / int8, else f16 / fp32)."
        },
    )
    out: str | None = field(
        default=None, metadata={"doc": "File to write (default: a new temporary folder)."}
    )

    def validate(self) -> None:
        from ..export.api import EXPORT_FORMATS

        allowed = (*EXPORT_FORMATS[self.format], "auto")
        if self.type not in allowed:
            raise ConfigError(
                f"type: {self.type!r} is not among the {self.format} export types (allowed: "
                f"{', '.join(allowed)})"
            )
        if self.out is not None and not str(self.out).strip():
            raise ConfigError("out: give a file path, or leave it out for a temporary folder")


def _apply(model: Any, cfg: ExportConfig, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
    from ..export import export_model
    from ..export.api import auto_type, check_format

    qtype = (
        auto_type(model, cfg.format) if cfg.type == "auto" else check_format(cfg.format, cfg.type)
    )
    out: Path | None = Path(cfg.out) if cfg.out else None
    folder = ctx.extras.get("artifacts_dir")
    if out is None and folder:
        suffix = ".gguf" if cfg.format == "gguf" else ".onnx"
        out = Path(folder) / f"model-{qtype}{suffix}"
    result = export_model(model, ctx.tokenizer, cfg.format, qtype, out)
    return model, {"export": result.to_dict()}


SPEC = StepSpec(
    key="export",
    config_cls=ExportConfig,
    apply=_apply,
    summary="write the model as GGUF (llama.cpp) or ONNX (ONNX Runtime); the model is unchanged",
)
