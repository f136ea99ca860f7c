"""Checkpoint I/O: ``save(model, dir)`` writes ``save_pretrained`` output plus
``greenllm.json``; ``load_model(dir)`` calls ``_restore_saved`` to re-apply what it records.

Model I/O sits below steps in the import layers, so a step that changes what a checkpoint
must hold plugs in here by registry target instead of being imported: a save check returns
why a model cannot be saved faithfully (or None), a restorer re-applies a recorded step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import fsutil
from ..errors import GreenLLMError, ModelError, first_line
from ..registry import Registry
from .meta import model_meta
from .sizes import layer_bits, model_size_bytes, param_count

SAVE_CHECKS: Registry[Callable[[Any], str | None]] = Registry(
    "save check",
    {
        "quantize": "greenllm.steps.quantize:save_blocker",
    },
)
RESTORERS: Registry[Callable[..., None]] = Registry(
    "step restorer",
    {
        "quantize": "greenllm.steps.quantize:restore_step",
    },
)

# entries a step adds to config.json (``quantization_config`` of packed 4-bit layers, so the
# checkpoint is a compressed-tensors one that transformers and vLLM load): model -> dict|None
CONFIG_ENTRIES: Registry[Callable[[Any], dict[str, Any] | None]] = Registry(
    "config.json entry",
    {
        "quantization_config": "greenllm.steps.quant_gptq:compressed_tensors_config",
    },
)

GREENLLM_JSON = "greenllm.json"
CHECKPOINT_FORMAT = "greenllm-checkpoint/1"


def _package_versions(model) -> dict[str, str]:
    from importlib import metadata

    names = ["greenllm", "torch", "transformers", "safetensors"]
    for entry in model_meta(model).get("steps", []):
        backend = (entry.get("stats") or {}).get("backend")
        names += {
            "quanto": ["optimum-quanto"],
            "torchao": ["torchao"],
            "bitsandbytes": ["bitsandbytes"],
        }.get(backend, [])
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

    out: dict[str, dict[str, Any]] = {}
    for name, fmt in layer_bits(model).items():
        mod = model.get_submodule(name)
        w = getattr(mod, "weight_int8", None)
        if w is None:
            w = getattr(mod, "weight", None)
            w = (
                w
                if isinstance(w, torch.Tensor) and type(w) in (torch.Tensor, torch.nn.Parameter)
                else None
            )
        entry: dict[str, Any] = {"format": fmt}
        if w is not None and w.numel():
            entry["sparsity"] = round(float((w == 0).sum()) / w.numel(), 6)
        out[name] = entry
    return out


def save_blocker(model) -> str | None:
    """Why ``model`` cannot be saved and reloaded faithfully (the first SAVE_CHECKS answer),
    or None when it can."""
    for name in SAVE_CHECKS.names():
        why = SAVE_CHECKS.get(name)(model)
        if why:
            return why
    return None


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

    out = Path(out_dir).expanduser()
    why = save_blocker(model)
    if why:
        raise ModelError(f"cannot save to {str(out)!r}: {why}; nothing was written")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ModelError(
            f"output {str(out)!r} already exists and is not empty; choose a new "
            "directory or pass overwrite=True (--overwrite)"
        )
    if out.is_dir() and overwrite:
        from ..modelfiles import check_overwrite

        check_overwrite(out, "output")  # replace a saved model, never other files
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        model.save_pretrained(staging)
        _add_config_entries(model, staging / "config.json")
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        meta = model_meta(model)
        record = {
            "format": CHECKPOINT_FORMAT,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "source": meta.get("source"),
            "provenance": meta.get("provenance", {}),
            "steps": meta.get("steps", []),
            "size_bytes": model_size_bytes(model),
            "param_count": param_count(model),
            "layers": _layer_report(model),
            "packages": _package_versions(model),
        }
        (staging / GREENLLM_JSON).write_text(json.dumps(record, indent=2, default=str))
        fsutil.honour_umask(staging)  # save_pretrained writes weights 0600 (mkstemp)
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


def _add_config_entries(model, config_json: Path) -> None:
    entries = {}
    for key in CONFIG_ENTRIES.names():
        value = CONFIG_ENTRIES.get(key)(model)
        if value is not None:
            entries[key] = value
    if entries and config_json.exists():
        cfg = json.loads(config_json.read_text())
        cfg.update(entries)
        config_json.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


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
            raise ModelError(
                f"checkpoint tensor {key!r} is missing; the directory was not "
                "written by greenllm.save or is incomplete"
            ) from None
        with self._open(str(f), framework="pt") as fh:
            return fh.get_tensor(key)


def _restore_saved(model, path: Path) -> None:
    """Re-apply what greenllm.json says was done to the model in ``path``."""
    try:
        record = json.loads((path / GREENLLM_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{str(path / GREENLLM_JSON)!r} is not readable JSON ({exc})") from None
    steps = record.get("steps", [])
    if any(s.get("step") in RESTORERS for s in steps):
        tensors = _SafetensorsDir(path)
        for entry in steps:
            if entry.get("step") in RESTORERS:
                RESTORERS.get(entry["step"])(model, entry, tensors)
    meta = model_meta(model)
    meta["steps"] = list(steps)
    if record.get("provenance") and not meta.get("provenance"):
        meta["provenance"] = record["provenance"]


__all__ = [
    "CHECKPOINT_FORMAT",
    "CONFIG_ENTRIES",
    "GREENLLM_JSON",
    "RESTORERS",
    "SAVE_CHECKS",
    "save",
    "save_blocker",
]
