"""The record greenllm keeps on a model object: source, provenance, steps applied."""

from __future__ import annotations

from typing import Any

META_ATTR = "_greenllm"  # dict on the model: source, provenance, steps applied


def model_meta(model) -> dict[str, Any]:
    meta = getattr(model, META_ATTR, None)
    if meta is None:
        meta = {"source": None, "resolved": None, "provenance": {}, "steps": []}
        setattr(model, META_ATTR, meta)
    return meta


__all__ = ["META_ATTR", "model_meta"]
