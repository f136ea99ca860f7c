"""dtype names and GGUF loading (de-quantized to float weights). Torch inside functions only."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import GreenLLMError

DTYPES = ("float32", "bfloat16", "float16", "auto")


def _clear_gguf_marker(model) -> None:
    """A GGUF-loaded model is de-quantized float weights; drop the quantizer so it saves."""
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        with contextlib.suppress(AttributeError):
            del model.config.quantization_config


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        from ..registry import did_you_mean

        hint = did_you_mean(dtype, list(DTYPES))
        raise GreenLLMError(
            f"model.dtype: unknown dtype {dtype!r}"
            + (f"; did you mean {hint!r}?" if hint else "")
            + f" (allowed: {', '.join(DTYPES)})"
        )
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def _load_gguf(path: Path, dtype: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=_torch_dtype(dtype)
    )
    _clear_gguf_marker(model)
    return model, tok
