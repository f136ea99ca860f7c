"""Everything checkable from a recipe, checked before any work starts. No torch here.

``preflight(recipe)`` is what ``greenllm validate`` adds to parsing and what ``greenllm run``
does before it touches the store or loads a model:

- a step that needs calibration text (prune ``wanda``, ``sparsegpt``, ``layers``; ``distill``,
  ``train`` and ``lora`` without their own ``data``) has a recipe-level ``calibration``;
- local paths exist: the model, ``calibration``, every eval's ``data`` and
  ``workload.prompts``, and any step ``data``.

Which strings are local paths (the rule, also in docs/recipes.md): ``builtin:NAME`` and URLs
(``scheme://``) never are; a string is a local path when it is absolute, starts with ``./``,
``../`` or ``~``, ends in a file extension greenllm reads (``.txt .json .jsonl .csv .parquet
.gguf .safetensors .bin .yaml``), or exists. Anything else (``org/name``) is a hub id or a
dataset name and is left to the loader. Relative paths resolve against the working directory,
then the recipe's folder, as the runner does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError
from .limits import excerpt

FILE_EXTENSIONS = (
    ".txt",
    ".json",
    ".jsonl",
    ".csv",
    ".parquet",
    ".gguf",
    ".safetensors",
    ".bin",
    ".yaml",
    ".yml",
)
CALIBRATED_PRUNE_METHODS = ("wanda", "sparsegpt", "layers")
CALIBRATED_QUANT_METHODS = ("gptq", "awq")
DATA_STEPS = ("distill", "train", "lora")  # use `data`, else the recipe's calibration


def looks_like_path(value: str) -> bool:
    """The rule in the module docstring: is ``value`` meant as a local file or folder?"""
    if value.startswith("builtin:") or "://" in value:
        return False
    if value.startswith(("/", "./", "../", "~")) or value in (".", ".."):
        return True
    if value.lower().endswith(FILE_EXTENSIONS):
        return True
    return Path(value).expanduser().exists()


def _exists(value: str, base: Path) -> bool:
    p = Path(value).expanduser()
    return p.exists() or (not p.is_absolute() and (base / p).exists())


def check_local_path(value: Any, field: str, base: Path) -> None:
    """A DataError naming ``field`` when ``value`` is a local path that does not exist."""
    if not isinstance(value, str) or not looks_like_path(value):
        return
    if not _exists(value, base):
        raise DataError(
            f"{field}: {excerpt(value)} does not exist (relative paths are looked "
            f"up in the working directory, then in {str(base)!r})"
        )


def needs_calibration(key: str, cfg: Any) -> str | None:
    """Why step ``key`` with config ``cfg`` needs the recipe's calibration text, or None."""
    if key == "prune" and getattr(cfg, "method", None) in CALIBRATED_PRUNE_METHODS:
        return f"prune method {cfg.method!r} weighs weights by calibration activations"
    if key == "quantize" and getattr(cfg, "method", None) in CALIBRATED_QUANT_METHODS:
        return f"quantize method {cfg.method!r} calibrates on activations"
    if key in DATA_STEPS and getattr(cfg, "data", None) is None:
        return f"{key} without its own 'data' trains on the calibration text"
    return None


def preflight(recipe) -> None:
    """Check ``recipe`` (a parsed Recipe) for everything that would fail later; raise the
    first problem as one GreenLLMError naming the field path."""
    base = recipe.base_dir
    check_local_path(recipe.model.id, "model.id", base)
    if recipe.calibration is not None:
        check_local_path(recipe.calibration, "calibration", base)
    for name, steps in recipe.variants.items():
        for i, (key, cfg) in enumerate(steps):
            path = f"variants.{name}[{i}].{key}"
            why = needs_calibration(key, cfg)
            if why and recipe.calibration is None:
                raise ConfigError(
                    f"{path}: needs calibration text ({why}); add "
                    "'calibration: builtin:wiki-sample' (or a text file) at the "
                    "top level of the recipe"
                )
            if dataclasses.is_dataclass(cfg) and isinstance(getattr(cfg, "data", None), str):
                check_local_path(cfg.data, f"{path}.data", base)
    for i, (key, cfg) in enumerate(recipe.evals):
        data = getattr(cfg, "data", None)
        if isinstance(data, str):
            check_local_path(data, f"evals[{i}].{key}.data", base)
    prompts = getattr(recipe.workload, "prompts", None)
    if isinstance(prompts, str):
        check_local_path(prompts, "workload.prompts", base)
