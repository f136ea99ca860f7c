"""load_model: a Hugging Face causal LM from a hub id, a local directory or a .gguf file.

The hub id ``HuggingFaceTB/SmolLM2-135M-Instruct`` (and the alias ``smollm2-135m``) resolves
to the offline cache (see ``offline.py``) and records the provenance: its weights are the
Q4_1 GGUF de-quantized, not the hub's bf16 weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._logging import quiet_third_party
from ..errors import GreenLLMError, ModelError, first_line
from ..provenance import OFFLINE_ALIASES
from .checkpoint import GREENLLM_JSON, _quiet_saved_load, _restore_saved
from .gguf import _load_gguf, _torch_dtype
from .meta import META_ATTR
from .offline import offline_model_dir


def _greenllm_config(path: Path, trust_remote_code: bool) -> dict[str, Any]:
    """For a greenllm checkpoint with packed 4-bit layers: its config without the
    compressed-tensors ``quantization_config`` (greenllm restores those layers packed itself,
    where transformers would de-quantize them or need the compressed-tensors package)."""
    if not (path / GREENLLM_JSON).exists():
        return {}
    raw = json.loads((path / "config.json").read_text())
    if (raw.get("quantization_config") or {}).get("quant_method") != "compressed-tensors":
        return {}
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return {"config": config}


def load_model(
    source: str, *, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a hub id, a local HF directory or a ``.gguf`` file.

    ``trust_remote_code`` stays off unless asked for. The model is put in eval mode and
    carries ``model._greenllm`` (source, resolved path, provenance, steps applied).
    """
    quiet_third_party()  # drop torchao's "Failed to load _C*.so" lines on CPU installs
    from ..modelfiles import check_safetensors, check_torch_device

    check_torch_device(device)  # before any loading: cuda on CPU-only torch
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("transformers", "torch", "loading models") from None
    torch_dtype = _torch_dtype(dtype)
    provenance: dict[str, Any] = {}
    path = Path(source).expanduser()
    try:
        if path.suffix == ".gguf":
            if not path.is_file():
                raise ModelError(f"model file {str(path)!r} does not exist")
            model, tok = _load_gguf(path, dtype)
            resolved = str(path)
            provenance = {"gguf_file": path.name, "note": "de-quantized from GGUF"}
        elif path.is_dir():
            if not (path / "config.json").exists():
                raise ModelError(
                    f"{str(path)!r} is not a Hugging Face model directory (no config.json)"
                )
            check_safetensors(path)  # a truncated download: one clear error
            with _quiet_saved_load(path):
                model = AutoModelForCausalLM.from_pretrained(
                    str(path),
                    dtype=torch_dtype,
                    trust_remote_code=trust_remote_code,
                    **_greenllm_config(path, trust_remote_code),
                )
            tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
            resolved = str(path)
            prov = path / "greenllm_provenance.json"
            if prov.exists():
                provenance = json.loads(prov.read_text())
        elif source in OFFLINE_ALIASES and not os.environ.get("GREENLLM_PREFER_HUB"):
            d = offline_model_dir(OFFLINE_ALIASES[source])
            model = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch_dtype)
            tok = AutoTokenizer.from_pretrained(str(d))
            resolved = str(d)
            provenance = json.loads((d / "greenllm_provenance.json").read_text())
        elif source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise ModelError(f"model path {source!r} does not exist")
        else:
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, trust_remote_code=trust_remote_code
            )
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            resolved = source
    except GreenLLMError:
        raise
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        raise ModelError(
            f"cannot load model {source!r}: {first} (give a local directory, a "
            f".gguf file, or a hub id reachable from this machine)"
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if device != "cpu":
        model = model.to(device)
    model.eval()
    setattr(
        model,
        META_ATTR,
        {
            "source": source,
            "resolved": resolved,
            "dtype": dtype,
            "provenance": provenance,
            "steps": [],
        },
    )
    if path.is_dir() and (path / GREENLLM_JSON).exists():
        _restore_saved(model, path)  # re-apply saved quantization (see save())
    return model, tok


__all__ = ["load_model"]
