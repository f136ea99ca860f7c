"""Runtimes run a model for the benchmark and the evaluators: ``torch`` (eager or compiled),
``llama.cpp`` (a GGUF file, through llama-cpp-python), ``llama-server`` (a GGUF file served by
the user's llama.cpp ``llama-server`` binary, benchmark only: no logits) and ``onnxruntime`` (an
ONNX decoder with past key values). One interface (``base.Runtime``); ``open_runtime`` picks
and opens one.

A torch model given to a non-torch runtime is run from the file its last ``export`` step
wrote (``model_meta(model)["exports"]``), else it is exported first into a temporary folder,
keeping what it stores (``export.api.auto_type``: GGUF Q8_0 / ONNX int8 for an ``int8_weight``
model, GGUF F16 / ONNX fp32 for a float one). Torch and vendor SDKs inside functions only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import RUNTIME_NAMES, RUNTIMES, Runtime, check_runtime, is_runtime

_FORMAT = {"llama.cpp": "gguf", "llama-server": "gguf", "onnxruntime": "onnx"}
_SUFFIX = {"llama.cpp": ".gguf", "llama-server": ".gguf", "onnxruntime": ".onnx"}


def artifact_for(runtime: str, model: Any, tokenizer: Any) -> Path:
    """The file ``runtime`` runs for ``model``: the model itself when it is a path, the last
    recorded export, or a fresh export."""
    from ..export import export_model, find_export

    fmt = _FORMAT[runtime]
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.suffix != _SUFFIX[runtime]:
            raise ConfigError(
                f"runtime: {runtime} runs a {_SUFFIX[runtime]} file, got {path}; export the "
                f"model first (greenllm export MODEL --format {fmt})"
            )
        return path
    rec = find_export(model, fmt)
    if rec is not None:
        return Path(rec["path"])
    return Path(export_model(model, tokenizer, fmt, "auto").path)


def load_for_runtime(runtime: str, source: str, *, dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) for ``runtime``: a .gguf file for llama.cpp (or a .onnx file for
    ONNX Runtime) stays a path, run as it is, with the tokenizer read from the GGUF file (or
    saved beside the ONNX file); anything else loads as a torch model (``load_model``)."""
    check_runtime(runtime)
    path = Path(source).expanduser()
    if runtime in _SUFFIX and path.suffix == _SUFFIX[runtime] and path.is_file():
        from transformers import AutoTokenizer

        try:
            if _FORMAT[runtime] == "gguf":
                tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            else:
                tok = AutoTokenizer.from_pretrained(str(path.parent))
        except (OSError, ValueError) as exc:
            from ..errors import ModelError

            raise ModelError(f"{path}: cannot read its tokenizer ({exc})") from None
        return str(path), tok
    from ..models import load_model

    return load_model(source, dtype=dtype, device=device)


def open_runtime(
    runtime: str,
    model: Any,
    tokenizer: Any = None,
    *,
    threads: int | None = None,
    device: Any = None,
    compile: bool = False,
    max_cache_len: int | None = None,
    n_ctx: int | None = None,
) -> tuple[Runtime, bool]:
    """(runtime object, whether the caller owns it and must ``close()`` it). ``model`` is a
    torch model, an exported file's path, or already a runtime (returned as it is)."""
    if is_runtime(model):
        return model, False
    check_runtime(runtime)
    if runtime == "torch":
        if isinstance(model, (str, os.PathLike)):
            raise ConfigError(
                f"runtime: torch runs a loaded model; {model} is a file (load it with "
                f"greenllm.models.load_model, or pick runtime llama.cpp / llama-server / "
                f"onnxruntime)"
            )
        from .torchrt import TorchRuntime

        return (
            TorchRuntime(
                model,
                device=device,
                compile=compile,
                max_cache_len=max_cache_len,
                threads=threads,
            ),
            True,
        )
    if compile:
        raise ConfigError(
            f"workload.compile: torch.compile applies to runtime torch, not {runtime}"
        )
    path = artifact_for(runtime, model, tokenizer)
    cls = RUNTIMES.get(runtime)
    return cls(path, threads=threads, n_ctx=n_ctx), True


__all__ = [
    "RUNTIMES",
    "RUNTIME_NAMES",
    "Runtime",
    "artifact_for",
    "check_runtime",
    "is_runtime",
    "load_for_runtime",
    "open_runtime",
]
