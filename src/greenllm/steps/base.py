"""The step contract shared by every step family.

A ``StepSpec`` names a config dataclass and ``apply(model, cfg, ctx) -> (model, stats)``.
``apply_step`` does what every step needs around the handler: strict config parsing, timing,
size before/after, and recording the step in ``model._greenllm["steps"]`` (used by save()).
A handler that fails on user input raises GreenLLMError before touching the model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, parse_config, to_dict
from ..registry import Registry
from ..results import StepResult


@dataclass
class StepContext:
    """What a step may need besides the model. Everything is optional."""

    tokenizer: Any = None
    calibration: Any = None  # path to a text file, list of strings, or datasets dataset
    teacher: Any = None  # e.g. the baseline model, for distillation
    device: str = "cpu"
    seed: int = 0
    progress: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepSpec:
    key: str
    config_cls: type
    apply: Callable[[Any, Any, StepContext], tuple[Any, dict[str, Any]]]
    summary: str = ""


STEPS: Registry[StepSpec] = Registry(
    "step",
    {
        "quantize": "greenllm.steps.quantize:SPEC",
        "prune": "greenllm.steps.prune:SPEC",
        "distill": "greenllm.steps.distill:SPEC",
        "lora": "greenllm.steps.lora:SPEC",
        "train": "greenllm.steps.train:SPEC",
        "export": "greenllm.steps.export:SPEC",
    },
)


def step_key(cfg: Any) -> str | None:
    """The ``STEPS`` key whose config class is exactly ``type(cfg)`` (None for other objects).

    The config type selects its handler: ``compress(model, [greenllm.Prune(...)])``."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return None
    for key in STEPS.names():
        if type(cfg) is STEPS.get(key).config_cls:
            return key
    return None


def parse_step(entry: Any, path: str = "step") -> tuple[str, Any]:
    """A config object (``Prune(...)``), ``{'prune': {...}}``, ``('prune', cfg_or_mapping)`` or
    ``'prune:method=wanda,sparsity=0.5'`` -> ``(key, config)``; every form builds the same
    config object (strict, validated)."""
    from ..config import parse_kv_spec

    if isinstance(entry, str):
        entry = parse_kv_spec(entry)
    key = step_key(entry)
    if key is not None:
        return key, entry
    if isinstance(entry, tuple) and len(entry) == 2:
        key, body = entry
    elif isinstance(entry, dict) and len(entry) == 1:
        ((key, body),) = entry.items()
    else:
        known = ", ".join(f"greenllm.{n.capitalize()}" for n in STEPS.names())
        raise ConfigError(
            f"{path}: a step is a config object ({known}), a mapping with "
            f"exactly one key such as {{prune: {{method: wanda}}}}, or a string "
            f"such as 'prune:method=wanda'; got {entry!r}"
        )
    key = str(key)
    STEPS.check(key)  # did-you-mean on unknown step names
    spec = STEPS.get(key)
    if type(body) is spec.config_cls:
        return key, body
    other = step_key(body)
    if other is not None:
        raise ConfigError(
            f"{path}: step {key!r} got a {type(body).__name__}, which is the "
            f"config of step {other!r}"
        )
    return key, parse_config(spec.config_cls, body, f"{path}.{key}")


def parse_steps(entries: Any, path: str = "steps") -> list[tuple[str, Any]]:
    if entries is None:
        return []
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{path}: expected a list of steps, got {type(entries).__name__}")
    return [parse_step(e, f"{path}[{i}]") for i, e in enumerate(entries)]


def apply_step(model, key: str, cfg: Any, ctx: StepContext | None = None):
    """Apply one step; returns ``(model, StepResult)``."""
    from ..models import model_meta, model_size_bytes

    ctx = ctx or StepContext()
    spec = STEPS.get(key)
    if type(cfg) is not spec.config_cls:
        key, cfg = parse_step((key, cfg))
    before = model_size_bytes(model)
    t0 = time.perf_counter()
    model, stats = spec.apply(model, cfg, ctx)
    duration = time.perf_counter() - t0
    after = model_size_bytes(model)
    cfg_dict = to_dict(cfg)
    model_meta(model)["steps"].append({"step": key, "config": cfg_dict, "stats": stats})
    return model, StepResult(
        step=key,
        method=str(getattr(cfg, "method", key)),
        config=cfg_dict,
        duration_s=duration,
        size_bytes_before=before,
        size_bytes_after=after,
        stats=stats,
    )


def compress(
    model,
    steps,
    *,
    tokenizer=None,
    calibration=None,
    teacher=None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
):
    """Apply ``steps`` in order; returns ``(model, [StepResult, ...])``.

    Each entry is a typed config, whose type selects the step (``greenllm.Prune(method=
    "wanda", sparsity=0.5)``, ``greenllm.Quantize(method="int8_weight")``), or the same
    config as ``{'prune': {...}}``, ``('prune', cfg)`` or the one-line shorthand
    ``'prune:method=wanda,sparsity=0.5'``. Every step is parsed and checked before the first
    one runs, so a typo in the third step leaves the model untouched. ``progress`` is a call
    option (it changes no result).
    """
    if isinstance(steps, (str, dict, tuple)) or step_key(steps) is not None:
        steps = [steps]
    parsed = parse_steps(steps)
    ctx = StepContext(
        tokenizer=tokenizer,
        calibration=calibration,
        teacher=teacher,
        device=device,
        seed=seed,
        progress=progress,
    )
    results = []
    for key, cfg in parsed:
        model, res = apply_step(model, key, cfg, ctx)
        results.append(res)
    return model, results
