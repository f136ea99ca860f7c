"""The ``quantize`` step: weight quantization and casting of a causal LM's linear layers.

Config is data (``QuantizeConfig``); each method is a ``QuantMethod`` record in the
``QUANT_METHODS`` registry that points at its handler module (``quant_native``,
``quant_torchao``, ``quant_quanto``, ``quant_bnb``) and says whether a model quantized with it
can be saved and reloaded. No torch at module level: a recipe validates without torch.

Module selection (``steps/select.py``, the same for every step): every plain ``nn.Linear``
whose qualified name matches one of ``targets`` (all linears when ``targets`` is empty) and none
of ``ignore`` (``lm_head`` by default). A pattern is an fnmatch glob matched against the full
name (``model.layers.0.mlp.down_proj``) or any dotted suffix of it, so ``down_proj``, ``mlp.*``
and ``model.layers.1[0-9].*`` all work.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, ConfigError
from ..models.sizes import layer_bits, packed_storage_bytes, tensor_storage_bytes
from ..registry import Registry, _resolve
from .base import StepContext, StepSpec
from .prune import CalibrationConfig
from .select import check_patterns, matches, select_modules

RECOMMENDED_INT8 = "int8_weight"
COMPUTE_DTYPES = ("bfloat16", "float32", "float16")


@dataclass(frozen=True)
class QuantMethod:
    """What greenllm knows about a method without importing its backend."""

    name: str
    handler: str  # "module:function" -> apply(model, modules, cfg, ctx) -> stats
    bits: float
    backend: str  # torch, torchao, quanto, bitsandbytes
    reloads: bool
    why_not_reload: str = ""
    summary: str = ""
    restore: str | None = None  # "module:function" -> restore(model, modules, cfg, tensors)

    def load(self):
        return _resolve(self.handler)

    def load_restore(self):
        if not self.restore:
            raise ConfigError(
                f"quantize method {self.name!r} cannot be reloaded: {self.why_not_reload}"
            )
        return _resolve(self.restore)


_N = "greenllm.steps.quant_native"
_TAO = "greenllm.steps.quant_torchao"
_QU = "greenllm.steps.quant_quanto"
_BNB = "greenllm.steps.quant_bnb"
_GPTQ = "greenllm.steps.quant_gptq"
_AWQ = "greenllm.steps.quant_awq"
_TAO_NO = (
    "torchao tensor subclasses cannot be written by save_pretrained; save the fp32 "
    "model and quantize after loading, or use int8_weight, which reloads"
)
_BNB_NO = (
    "bitsandbytes checkpoints saved on CPU do not reload correctly (NF4 reloaded with "
    "perplexity in the millions); quantize after loading instead"
)

_METHODS = [
    QuantMethod(
        "gptq",
        f"{_GPTQ}:apply_gptq",
        4,
        "torch",
        True,
        summary="GPTQ: calibrated, error-compensating weight quantization (bits "
        "2/3/4/8, groups or per channel, sym/asym, act-order); 4-bit layers "
        "are packed and run on PyTorch's CPU int4 kernel",
        restore=f"{_GPTQ}:restore_gptq",
    ),
    QuantMethod(
        "awq",
        f"{_AWQ}:apply_awq",
        4,
        "torch",
        True,
        summary="AWQ: activation-aware per-input-channel scales folded into the "
        "preceding norm / linear, clipping search, then group-wise round-to-nearest; "
        "4-bit layers packed like gptq",
        restore=f"{_GPTQ}:restore_gptq",
    ),
    QuantMethod(
        "rtn",
        f"{_GPTQ}:apply_rtn",
        4,
        "torch",
        True,
        summary="round-to-nearest on GPTQ's grid and storage (no calibration): the "
        "data-free baseline of gptq",
        restore=f"{_GPTQ}:restore_gptq",
    ),
    QuantMethod(
        "int8_weight",
        f"{_N}:apply_int8_weight",
        8,
        "torch",
        True,
        summary="int8 weight-only, per-channel scales, PyTorch's "
        "_weight_int8pack_mm kernel (recommended int8 on CPU)",
        restore=f"{_N}:restore_int8_weight",
    ),
    QuantMethod(
        "bf16",
        f"{_N}:apply_cast",
        16,
        "torch",
        True,
        summary="cast linear weights to bfloat16, compute in bfloat16",
        restore=f"{_N}:restore_cast",
    ),
    QuantMethod(
        "fp16",
        f"{_N}:apply_cast",
        16,
        "torch",
        True,
        summary="cast linear weights to float16, compute in float16",
        restore=f"{_N}:restore_cast",
    ),
    QuantMethod(
        "dynamic_int8",
        f"{_N}:apply_dynamic_int8",
        8,
        "torch",
        False,
        why_not_reload="torch.ao dynamic int8 modules keep their weights in packed "
        "script objects that save_pretrained cannot write",
        summary="torch.ao dynamic quantization: int8 weights (per-channel by "
        "default) and int8 activations with one dynamic scale per input "
        "tensor (per-tensor, not per-token)",
    ),
    QuantMethod(
        "torchao_int8_weight",
        f"{_TAO}:apply_int8_weight",
        8,
        "torchao",
        False,
        why_not_reload=_TAO_NO,
        summary="torchao Int8WeightOnlyConfig",
    ),
    QuantMethod(
        "torchao_int8_dynamic",
        f"{_TAO}:apply_int8_dynamic",
        8,
        "torchao",
        False,
        why_not_reload=_TAO_NO,
        summary="torchao Int8DynamicActivationInt8WeightConfig",
    ),
    QuantMethod(
        "torchao_int4_weight",
        f"{_TAO}:apply_int4_weight",
        4,
        "torchao",
        False,
        why_not_reload=_TAO_NO,
        summary="torchao Int4WeightOnlyConfig (tinygemm kernels: CUDA only)",
    ),
    QuantMethod(
        "quanto_int8",
        f"{_QU}:apply_quanto",
        8,
        "quanto",
        True,
        summary="optimum-quanto qint8 weights",
        restore=f"{_QU}:restore_quanto",
    ),
    QuantMethod(
        "quanto_int4",
        f"{_QU}:apply_quanto",
        4,
        "quanto",
        True,
        summary="optimum-quanto qint4 weights (grouped)",
        restore=f"{_QU}:restore_quanto",
    ),
    QuantMethod(
        "quanto_float8",
        f"{_QU}:apply_quanto",
        8,
        "quanto",
        True,
        summary="optimum-quanto float8 e4m3 weights",
        restore=f"{_QU}:restore_quanto",
    ),
    QuantMethod(
        "bnb_int8",
        f"{_BNB}:apply_bnb",
        8,
        "bitsandbytes",
        False,
        why_not_reload=_BNB_NO,
        summary="bitsandbytes LLM.int8() Linear8bitLt",
    ),
    QuantMethod(
        "bnb_nf4",
        f"{_BNB}:apply_bnb",
        4,
        "bitsandbytes",
        False,
        why_not_reload=_BNB_NO,
        summary="bitsandbytes 4-bit NormalFloat",
    ),
    QuantMethod(
        "bnb_fp4",
        f"{_BNB}:apply_bnb",
        4,
        "bitsandbytes",
        False,
        why_not_reload=_BNB_NO,
        summary="bitsandbytes 4-bit float",
    ),
]

CLIP_COSTS = ("gptq", "output")

QUANT_METHODS: Registry[QuantMethod] = Registry("quantize method", {m.name: m for m in _METHODS})


@dataclass(frozen=True)
class QuantizeConfig(Config):
    """``quantize`` step settings (``greenllm.Quantize``; validated on construction).

    method: a key of QUANT_METHODS (``int8_weight`` is the recommended int8 on CPU).
    targets: glob patterns of linear layers to quantize; empty = every nn.Linear
      (module selection as in ``greenllm.steps.select``).
    ignore: glob patterns to leave alone (``lm_head`` by default).
    group_size: group size of the 4-bit methods: torchao_int4_weight (default 128) and the
      bitsandbytes 4-bit block size (default 64); quanto chooses its own (128).
    per_channel: dynamic_int8 only: per-output-channel weight scales (else one per tensor).
    compute_dtype: int8_weight only: activation dtype fed to the int8 kernel (PyTorch's CPU
      kernel is fast for bfloat16 and slow for float32).
    """

    method: str = RECOMMENDED_INT8
    targets: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    group_size: int | None = None
    per_channel: bool = True
    compute_dtype: str = "bfloat16"
    # gptq / awq / rtn (see docs/compress-quantize.md)
    bits: int = 4
    sym: bool = True
    desc_act: bool = False
    static_groups: bool = False
    dampening: float = 0.01
    blocksize: int = 128
    true_sequential: bool = False  # gptq: q/k/v, o, gate/up, down in turn, on quantized inputs
    sequential: bool = True  # gptq/awq: layer i+1 calibrated on quantized layer i's outputs
    sparsity: float = 0.0
    pattern: str | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    # clipping search (awq, gptq): None = the method's default (awq: on, gptq: off)
    clip: bool | None = None
    clip_max_shrink: float = 0.5  # the clip bound goes down to (1 - this) * max|w|
    scale_grid: int = 20  # awq exponents alpha = k / scale_grid; also the clip search's grid
    rounding: str = "rtn"  # awq: rtn (the paper) or gptq (GPTQ on the scaled weights)
    # the cost that scores the clip search's grids for GPTQ's rounding: gptq (each column's
    # error at GPTQ's conditioned Hessian diagonal) or output (AWQ's block output error);
    # None = gptq for asymmetric grids, output for symmetric ones (measured on SmolLM2-135M,
    # docs/compress-quantize.md)
    clip_cost: str | None = None

    def validate(self) -> None:
        try:
            QUANT_METHODS.check(self.method)
        except ConfigError as exc:
            raise ConfigError(f"method: {exc}") from None
        check_patterns(self)
        if self.method in ("gptq", "rtn", "awq"):
            self._validate_gptq()
        if self.rounding != "rtn" and self.method != "awq":
            raise ConfigError(
                f"rounding: {self.rounding!r} applies to method awq only (the rounding after "
                "its scales); drop rounding"
            )
        calibrated = self.method in ("gptq", "awq")
        if self.clip is not None and not calibrated:
            raise ConfigError(
                f"clip: the clipping search belongs to methods gptq and awq (got "
                f"{self.method}); drop clip"
            )
        if not self.sequential and not calibrated:
            raise ConfigError(
                f"sequential: applies to the calibrated methods gptq and awq (got "
                f"{self.method}); drop sequential"
            )
        if self.true_sequential and self.method != "gptq":
            raise ConfigError(
                f"true_sequential: applies to method gptq only (got {self.method}); drop it"
            )
        if self.method == "awq":
            self._validate_awq()
        elif self.group_size is not None and self.group_size not in (32, 64, 128, 256):
            raise ConfigError(f"group_size: {self.group_size} is not one of 32, 64, 128, 256")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(
                f"compute_dtype: {self.compute_dtype!r} is not one of {', '.join(COMPUTE_DTYPES)}"
            )
        if self.clip_cost is not None:  # after rounding and clip are known to be valid
            self._validate_clip_cost()

    def _validate_gptq(self) -> None:
        if self.bits not in (2, 3, 4, 8):
            raise ConfigError(f"bits: {self.bits} is not one of 2, 3, 4, 8")
        if (
            self.group_size is not None
            and self.group_size != -1
            and (self.group_size < 2 or self.group_size & (self.group_size - 1))
        ):
            raise ConfigError(
                f"group_size: {self.group_size} is not a power of two >= 2 "
                "(or -1 / null for one scale per output channel)"
            )
        if self.blocksize < 1:
            raise ConfigError(f"blocksize: must be >= 1, got {self.blocksize}")
        if self.scale_grid < 1:
            raise ConfigError(f"scale_grid: must be >= 1, got {self.scale_grid}")
        if not 0 <= self.clip_max_shrink < 1:
            raise ConfigError(f"clip_max_shrink: {self.clip_max_shrink} is not in [0, 1)")
        if not 0 < self.dampening < 1:
            raise ConfigError(f"dampening: {self.dampening} is not in (0, 1)")
        if not 0 <= self.sparsity < 1:
            raise ConfigError(f"sparsity: {self.sparsity} is not in [0, 1)")
        if self.desc_act and self.group_size not in (None, -1) and not self.static_groups:
            raise ConfigError(
                "static_groups: desc_act with groups needs static_groups: true "
                "(groups stay contiguous along the input dimension, the layout "
                "the int4 kernel needs)"
            )
        if self.group_size not in (None, -1) and self.blocksize % self.group_size:
            raise ConfigError(
                f"blocksize: {self.blocksize} is not a multiple of group_size {self.group_size}"
            )
        if self.pattern is not None:
            n, m = self.nm()
            if self.blocksize % m:
                raise ConfigError(
                    f"blocksize: {self.blocksize} is not a multiple of the pattern's M ({m})"
                )
        self.calibration.validate()

    def clip_for(self, method: str) -> bool:
        """Whether the clipping search runs: ``clip``, or the method's default."""
        if self.clip is not None:
            return bool(self.clip)
        return method == "awq"

    def _validate_clip_cost(self) -> None:
        if self.clip_cost not in CLIP_COSTS:
            raise ConfigError(
                f"clip_cost: {self.clip_cost!r} is not one of {', '.join(CLIP_COSTS)}"
            )
        if not (self.method == "gptq" or (self.method == "awq" and self.rounding == "gptq")):
            raise ConfigError(
                "clip_cost: scores the clip grid of GPTQ's rounding (method gptq, or awq with "
                f"rounding: gptq; got method {self.method}, rounding {self.rounding}); "
                "drop clip_cost"
            )
        if not self.clip_for(self.method):
            raise ConfigError("clip_cost: the clip search is off; set clip: true or drop clip_cost")

    def clip_cost_for(self) -> str:
        """The clip grid's cost for GPTQ's rounding: ``clip_cost``, or by the grid's symmetry."""
        if self.clip_cost is not None:
            return self.clip_cost
        return "output" if self.sym else "gptq"

    def _validate_awq(self) -> None:
        if self.rounding not in ("rtn", "gptq"):
            raise ConfigError(f"rounding: {self.rounding!r} is not one of rtn, gptq")
        for name in ("desc_act", "static_groups"):
            if getattr(self, name) and self.rounding != "gptq":
                raise ConfigError(
                    f"{name}: GPTQ's column order; awq with rounding: rtn has none "
                    f"(drop {name}, or set rounding: gptq)"
                )
        if self.sparsity or self.pattern is not None:
            raise ConfigError(
                "sparsity: awq does not prune; use method gptq with sparsity (SparseGPT + GPTQ)"
            )
        if self.scale_grid < 1:
            raise ConfigError(f"scale_grid: must be >= 1, got {self.scale_grid}")
        if not 0 <= self.clip_max_shrink < 1:
            raise ConfigError(f"clip_max_shrink: {self.clip_max_shrink} is not in [0, 1)")

    def nm(self) -> tuple[int, int] | None:
        if self.pattern is None:
            return None
        try:
            n, m = (int(v) for v in str(self.pattern).split(":"))
        except ValueError:
            raise ConfigError(f"pattern: {self.pattern!r} is not N:M (e.g. 2:4)") from None
        if not 0 < n < m:
            raise ConfigError(f"pattern: {self.pattern!r} needs 0 < N < M")
        return n, m

    @property
    def info(self) -> QuantMethod:
        return QUANT_METHODS.get(self.method)


# --------------------------------------------------------------------------- selection
def select_linears(model, targets: list[str], ignore: list[str]) -> list[tuple[str, Any]]:
    """``[(name, nn.Linear)]`` chosen by targets/ignore; ConfigError when nothing matches."""
    import torch.nn as nn

    # already-quantized or custom modules are not candidates
    chosen = select_modules(model, targets, ignore, candidate=lambda _, mod: type(mod) is nn.Linear)
    if not chosen:
        example = next((n for n, m in model.named_modules() if type(m) is nn.Linear), None)
        done = sum(
            1 for f in layer_bits(model).values() if f not in ("float32", "float16", "bfloat16")
        )
        hint = (
            f"; linear layers here are named like {example!r}"
            if example
            else "; the model has no plain nn.Linear layers left"
        )
        if done:
            hint += f" ({done} layers are already quantized and are skipped)"
        raise ConfigError(
            f"quantize.targets: no linear layer matched targets={targets or ['*']} "
            f"minus ignore={ignore}{hint}"
        )
    return chosen


def set_submodule(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def swap_modules(model, replacements: dict[str, Any]) -> None:
    """Install all replacement modules at once (after every one was built successfully)."""
    for name, new in replacements.items():
        set_submodule(model, name, new)


# --------------------------------------------------------------------------- the step
def apply(model, cfg: QuantizeConfig, ctx: StepContext):
    """Quantize the selected linears. Raises GreenLLMError before touching the model when the
    method cannot run here (missing SDK, unsupported device, no matching layer)."""
    info = cfg.info
    modules = select_linears(model, cfg.targets, cfg.ignore)
    handler = info.load()
    n_params = sum(m.weight.numel() for _, m in modules)
    stats = dict(handler(model, modules, cfg, ctx) or {})
    stats.update(
        {
            "method": cfg.method,
            "bits": stats.get("bits", info.bits),
            "backend": info.backend,
            "quantized_modules": len(modules),
            "quantized_params": int(n_params),
            "reloads": info.reloads,
            "modules": [n for n, _ in modules],
        }
    )
    return model, stats


def save_blocker(model) -> str | None:
    """Why ``model`` cannot be saved and reloaded faithfully, or None when it can.

    Looks at the quantize steps recorded on the model and at the modules themselves, so a
    model quantized outside greenllm (torchao, torch.ao, bitsandbytes) is refused as well."""
    from ..models import model_meta

    for entry in model_meta(model).get("steps", []):
        if entry.get("step") != "quantize":
            continue
        method = entry.get("config", {}).get("method")
        if method in QUANT_METHODS and not QUANT_METHODS.get(method).reloads:
            return (
                f"quantize method {method!r} does not reload: "
                f"{QUANT_METHODS.get(method).why_not_reload}"
            )
    for name, fmt in layer_bits(model).items():
        if fmt.startswith(("int8(torch.ao", "bnb.")):
            return f"layer {name!r} is {fmt}, which does not reload faithfully"
        if fmt[:1].isupper():  # a tensor subclass greenllm does not know how to restore
            return f"layer {name!r} holds a {fmt} weight that save_pretrained cannot write"
    return None


def restore_step(model, entry: dict, tensors) -> None:
    """Re-apply a saved quantize step from greenllm.json to a freshly loaded model."""
    from ..config import parse_config
    from ..errors import ModelError

    cfg = parse_config(QuantizeConfig, entry.get("config", {}), "greenllm.json quantize")
    names = entry.get("stats", {}).get("modules")
    if not names:
        raise ModelError(
            "greenllm.json: quantize step has no module list; re-save the model with greenllm.save"
        )
    restore = cfg.info.load_restore()
    if "stats" in inspect.signature(restore).parameters:
        restore(model, names, cfg, tensors, stats=entry.get("stats", {}))
    else:
        restore(model, names, cfg, tensors)


SPEC = StepSpec(
    "quantize",
    QuantizeConfig,
    apply,
    "quantize or cast linear-layer weights (int8/int4/float8/bf16/fp16)",
)


def quiet_torchao_import() -> None:
    """Drop torchao's "Failed to load ..._C*.so" lines (CUDA-only kernels on a CPU install);
    idempotent. ``import greenllm`` already does it; kept for code importing this module."""
    from .._logging import quiet_third_party

    quiet_third_party()


__all__ = [
    "QUANT_METHODS",
    "RECOMMENDED_INT8",
    "QuantMethod",
    "QuantizeConfig",
    "SPEC",
    "layer_bits",
    "matches",
    "packed_storage_bytes",
    "quiet_torchao_import",
    "restore_step",
    "save_blocker",
    "select_linears",
    "tensor_storage_bytes",
]
