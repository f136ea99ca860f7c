"""Export a (compressed) model in a runtime's format: GGUF for llama.cpp (``export.gguf``),
ONNX with past key values for ONNX Runtime (``export.onnx``). ``export_model`` is the one
entry point (CLI ``greenllm export``, the recipe step ``export``); ``inspect_gguf`` reads any
GGUF file's bytes, bits per weight and tensor types. Torch inside functions only."""

from __future__ import annotations

from .api import EXPORT_FORMATS, export_model, find_export, record_export
from .base import Exported

__all__ = ["EXPORT_FORMATS", "Exported", "export_model", "find_export", "record_export"]
