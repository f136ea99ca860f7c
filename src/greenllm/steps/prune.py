"""Pruning step (registry key ``prune``).

Methods (``PRUNE_METHODS``, did-you-mean on unknown names):

- unstructured, in ``prune_unstructured``: ``magnitude`` (``scope`` layer or global),
  ``wanda`` (|W| * ||X_j||_2 per output row, needs calibration), ``sparsegpt`` (blocked,
  dampened OBS update with the layer Hessian, needs calibration); each optionally with an N:M
  ``pattern`` such as ``2:4``.
- structured, in ``prune_structured``: ``heads`` (attention heads, GQA-consistent), ``neurons``
  (FFN intermediate neurons) and ``layers`` (whole decoder layers). These really remove rows,
  columns or modules and rewrite the model config, so the model gets smaller.

Only ``nn.Linear`` modules inside the decoder layers are candidates: the embeddings and
``lm_head`` are never pruned. Calibration-based methods walk the decoder layers one by one
(``layerwise``): capture the inputs of layer i, collect statistics, prune, run the pruned layer
to produce the inputs of layer i+1, so peak memory stays near one layer's activations.

Masks and fine-tuning: unstructured methods keep the boolean keep-mask of every pruned Linear
as a plain attribute (``MASK_ATTR``; not a buffer, so it neither changes ``state_dict`` nor
``save_pretrained`` output). A training loop calls ``reapply_masks(model)`` after each optimizer
step (and after merging LoRA adapters) to put the zeros back. Every input error is raised
before the model is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import Config
from ..errors import ConfigError, DataError, GreenLLMError, UnsupportedError
from ..registry import Registry
from .base import StepContext, StepSpec
from .select import check_patterns, select_modules

MASK_ATTR = "_greenllm_prune_mask"
STRUCTURED = ("heads", "neurons", "layers")
CALIBRATED = ("wanda", "sparsegpt")

PRUNE_METHODS: Registry[Callable] = Registry(
    "prune method",
    {
        "magnitude": "greenllm.steps.prune_unstructured:prune_magnitude",
        "wanda": "greenllm.steps.prune_unstructured:prune_wanda",
        "sparsegpt": "greenllm.steps.prune_unstructured:prune_sparsegpt",
        "heads": "greenllm.steps.prune_structured:prune_heads",
        "neurons": "greenllm.steps.prune_structured:prune_neurons",
        "layers": "greenllm.steps.prune_structured:prune_layers",
    },
)


@dataclass(frozen=True)
class CalibrationConfig(Config):
    """Calibration windows of the calibrated methods (``greenllm.Calibration``)."""

    samples: int = 32  # windows drawn from the calibration text
    seq_len: int = 512  # tokens per window
    batch_size: int | None = None  # windows per forward pass; None: all in one pass

    def validate(self) -> None:
        for name in ("samples", "seq_len", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PruneConfig(Config):
    """``prune`` step settings (``greenllm.Prune``; validated on construction).

    ``targets`` / ``ignore``: module selection as in ``greenllm.steps.select`` (globs on the
    names of the Linear modules inside the decoder layers; empty ``targets`` = all of them).
    """

    method: str = "magnitude"
    sparsity: float | None = None  # fraction zeroed / removed; default 0.5 (or N:M's)
    pattern: str | None = None  # "N:M": keep N of every M consecutive inputs
    scope: Literal["layer", "global"] = "layer"  # magnitude only
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    targets: list[str] = field(default_factory=list)  # globs on module names; empty: all
    ignore: list[str] = field(default_factory=list)
    dampening: float = 0.01  # sparsegpt: fraction of mean(diag H) added
    blocksize: int = 128  # sparsegpt: columns per lazy-update block
    sequential: bool = True  # calibrate layer i+1 on pruned layer i's outputs
    head_unit: Literal["query", "kv_group"] = "query"  # heads: what one unit is

    def validate(self) -> None:
        try:
            PRUNE_METHODS.check(self.method)
        except GreenLLMError as exc:
            raise ConfigError(f"method: {exc}") from None
        if self.sparsity is not None and not 0.0 < self.sparsity < 1.0:
            raise ConfigError(f"sparsity: must be strictly between 0 and 1, got {self.sparsity}")
        if self.pattern is not None:
            n, m = self.nm()
            if self.method in STRUCTURED:
                raise ConfigError(
                    f"pattern: N:M patterns apply to unstructured methods, not "
                    f"{self.method!r}; drop pattern"
                )
            if self.sparsity is not None and abs(self.sparsity - (1 - n / m)) > 1e-9:
                raise ConfigError(
                    f"sparsity: {self.sparsity} conflicts with pattern "
                    f"{self.pattern!r} (= {1 - n / m:g}); give only one of them"
                )
        if self.scope == "global" and self.method != "magnitude":
            raise ConfigError(
                f"scope: 'global' is only for method 'magnitude' (got "
                f"{self.method!r}); use scope: layer"
            )
        if self.scope == "global" and self.pattern is not None:
            raise ConfigError("scope: an N:M pattern is per group of weights; use scope: layer")
        if not self.dampening > 0:
            raise ConfigError(f"dampening: must be > 0, got {self.dampening}")
        if self.blocksize < 1:
            raise ConfigError(f"blocksize: must be >= 1, got {self.blocksize}")
        if self.method == "sparsegpt" and self.pattern is not None:
            _, m = self.nm()
            if self.blocksize % m:
                raise ConfigError(
                    f"blocksize: SparseGPT with pattern {self.pattern!r} needs "
                    f"blocksize to be a multiple of M={m} (every group of {m} "
                    f"columns inside one block), got {self.blocksize}; use "
                    f"e.g. blocksize: {max(m, self.blocksize - self.blocksize % m)}"
                )
        check_patterns(self)

    def nm(self) -> tuple[int, int]:
        """The pattern as ``(N, M)``: N kept out of every M."""
        text = str(self.pattern)
        parts = text.split(":")
        try:
            n, m = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"pattern: expected 'N:M' such as '2:4', got {text!r}") from None
        if not 0 < n < m:
            raise ConfigError(f"pattern: need 0 < N < M in 'N:M', got {text!r}")
        return n, m

    @property
    def target_sparsity(self) -> float:
        if self.pattern is not None:
            n, m = self.nm()
            return 1 - n / m
        return 0.5 if self.sparsity is None else float(self.sparsity)


# ----------------------------------------------------------------------------- model access


def decoder_layers(model):
    """The decoder layer ModuleList of a causal LM (Llama/Mistral/Qwen/Gemma/GPT-NeoX/GPT-2)."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and hasattr(obj, "__len__") and len(obj) > 0:
            return obj
    raise UnsupportedError(
        f"prune: cannot find the decoder layers of "
        f"{type(model).__name__} (looked for model.layers, transformer.h, "
        "gpt_neox.layers)"
    )


def layer_prefix(model, layers) -> str:
    for name, mod in model.named_modules():
        if mod is layers:
            return name
    return "layers"


def target_linears(model, cfg: PruneConfig) -> list[list[tuple[str, Any]]]:
    """Per decoder layer, the ``(full_name, nn.Linear)`` pairs selected by targets/ignore."""
    import torch

    layers = decoder_layers(model)
    prefix = layer_prefix(model, layers)
    out: list[list[tuple[str, Any]]] = [[] for _ in layers]
    index = {f"{prefix}.{i}": i for i in range(len(layers))}

    def in_layer(name: str) -> int | None:
        parts = name.split(".")
        for k in range(len(parts) - 1, 0, -1):
            i = index.get(".".join(parts[:k]))
            if i is not None:
                return i
        return None

    chosen = select_modules(
        model,
        cfg.targets,
        cfg.ignore,
        candidate=lambda name, mod: isinstance(mod, torch.nn.Linear) and in_layer(name) is not None,
    )
    for name, mod in chosen:
        out[in_layer(name)].append((name, mod))
    if not any(out):
        raise ConfigError(
            f"targets: no Linear layer inside the decoder layers matches "
            f"targets={cfg.targets} minus ignore={cfg.ignore} "
            f"(names look like {prefix}.0.mlp.down_proj)"
        )
    if cfg.pattern is not None:
        _, m = cfg.nm()
        for layer in out:
            for name, mod in layer:
                if mod.in_features % m:
                    raise ConfigError(
                        f"pattern: {cfg.pattern!r} does not divide layer {name} "
                        f"({mod.in_features} inputs is not a multiple of {m}); "
                        "add it to ignore or choose another pattern"
                    )
    return out


def require_calibration(cfg: Any, ctx: StepContext, why: str, step: str = "prune"):
    """Calibration token windows ``[samples, seq_len]`` or a DataError (model untouched);
    ``cfg`` has ``method`` and ``calibration`` (a prune or a calibrated quantize config)."""
    from .calibration import calibration_batches

    if ctx.calibration is None:
        raise DataError(
            f"{step}: method {cfg.method!r} needs calibration data ({why}); pass "
            "calibration= a text file, list of strings or dataset "
            "(CLI: --calibration FILE)"
        )
    if ctx.tokenizer is None:
        raise DataError(
            f"{step}: method {cfg.method!r} needs the tokenizer to read the "
            "calibration data; pass tokenizer="
        )
    c = cfg.calibration
    return calibration_batches(
        ctx.calibration, ctx.tokenizer, samples=c.samples, seq_len=c.seq_len, seed=ctx.seed
    )


# ----------------------------------------------------------------------------- layer walk


class _Captured(Exception):
    pass


def _model_device(model):
    return next(model.parameters()).device


_NOT_REPLAYED = ("hidden_states", "past_key_values", "past_key_value", "cache", "use_cache")


class _Passthrough(tuple):
    """What a decoder layer returns while only its inputs are recorded: ``(hidden,)``, so a
    loop that takes ``out[0]`` and one that takes the output as is both carry it on."""


def _layer_calls(model, layers, ids, *, run_layers: bool):
    """One forward of ``model`` on ``ids`` recording, for every decoder layer, the arguments the
    model passes it besides the hidden states (attention masks and rotary embeddings differ
    between layer types, e.g. sliding and full attention). Returns ``(hidden of layer 0,
    [(args, kwargs) per layer])``. Unless ``run_layers``, the layers are not computed: each
    one passes its input through, since those arguments do not depend on the hidden states."""
    calls: list[tuple[tuple, dict] | None] = [None] * len(layers)
    first: dict[str, Any] = {}
    last = len(layers) - 1

    def make_hook(i):
        def hook(_module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if i == 0:
                first["hidden"] = hidden.detach()
            calls[i] = (
                tuple(args[1:]),
                {k: v for k, v in kwargs.items() if k not in _NOT_REPLAYED},
            )
            if i == last:
                raise _Captured

        return hook

    def passthrough(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return hidden if isinstance(hidden, _Passthrough) else _Passthrough((hidden,))

    handles = [
        layer.register_forward_pre_hook(make_hook(i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    own = [layer.__dict__.get("forward") for layer in layers]  # e.g. accelerate's wrapper
    if not run_layers:
        for layer in layers:
            layer.forward = passthrough
    try:
        model(input_ids=ids, use_cache=False)
    except _Captured:
        pass
    finally:
        for h in handles:
            h.remove()
        if not run_layers:
            for layer, fwd in zip(layers, own):
                if fwd is None:
                    del layer.forward  # the instance attribute; the class method is back
                else:
                    layer.forward = fwd
    if any(c is None for c in calls):
        raise UnsupportedError(
            f"prune: the forward of {type(model).__name__} did not call "
            "every decoder layer; calibration cannot replay its layers"
        )
    return first["hidden"], calls


def capture_layer_inputs(model, layers, tokens, batch_size: int):
    """Per batch ``(hidden_states of layer 0, [(args, kwargs) of every decoder layer])``."""
    import torch

    captured: list[tuple[Any, list]] = []
    device = _model_device(model)
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch_size):
            ids = tokens[start : start + batch_size].to(device)
            try:
                captured.append(_layer_calls(model, layers, ids, run_layers=False))
            except Exception:  # noqa: BLE001 - a model that works on the hidden states
                # between layers: record the arguments with the layers really computed
                captured.append(_layer_calls(model, layers, ids, run_layers=True))
    return captured


def run_layer(layer, hidden, call):
    args, kwargs = call
    out = layer(hidden, *args, use_cache=False, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def layerwise(model, tokens, visit, *, batch_size: int | None = None, sequential: bool = True):
    """Walk the decoder layers with calibration activations.

    ``visit(i, layer, forward)`` may register hooks, calls ``forward()`` (which runs the layer
    on every captured batch, with the masks and position embeddings the model gives that
    layer, and returns the outputs; ``forward.inputs`` holds the inputs) and may then modify
    the layer. It returns ``(outputs, final)``: ``final`` says the outputs already come from
    the modified layer. Otherwise, with ``sequential``, the layer is run again so layer i+1
    sees the outputs of the pruned layer i; without it the outputs of the stats pass are used
    (one pass per layer, about half the time).
    """
    import torch

    layers = decoder_layers(model)
    was_training = model.training
    model.eval()
    try:
        batches = capture_layer_inputs(model, layers, tokens, batch_size or tokens.shape[0])
        with torch.no_grad():
            for i, layer in enumerate(layers):

                def forward(layer=layer, i=i, batches=batches):
                    return [run_layer(layer, h, calls[i]) for h, calls in batches]

                forward.inputs = [h for h, _ in batches]  # type: ignore[attr-defined]
                outs, final = visit(i, layer, forward)
                if outs is None or (sequential and not final):
                    outs = forward()
                batches = [(o, calls) for o, (_, calls) in zip(outs, batches)]
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- masks


def set_mask(module, keep) -> None:
    """Zero the pruned weights of ``module`` and remember the keep-mask for ``reapply_masks``."""
    import torch

    with torch.no_grad():
        old = getattr(module, MASK_ATTR, None)
        if old is not None:
            keep = keep & old.to(keep.device)
        module.weight.mul_(keep.to(module.weight.dtype))
    setattr(module, MASK_ATTR, keep.to(torch.bool))


def reapply_masks(model) -> int:
    """Zero again every weight a prune step removed (call after optimizer.step() or after
    merging LoRA). Returns the number of masked modules. Safe to call when there are none."""
    import torch

    n = 0
    with torch.no_grad():
        for mod in model.modules():
            mask = getattr(mod, MASK_ATTR, None)
            if mask is None:
                continue
            w = mod.weight
            if tuple(mask.shape) != tuple(w.shape):
                raise GreenLLMError(
                    f"prune mask {tuple(mask.shape)} no longer matches a weight "
                    f"of shape {tuple(w.shape)}; the module was reshaped "
                    "after pruning, call clear_masks(model) first"
                )
            w.mul_(mask.to(device=w.device, dtype=w.dtype))
            n += 1
    return n


def clear_masks(model) -> int:
    n = 0
    for mod in model.modules():
        if getattr(mod, MASK_ATTR, None) is not None:
            delattr(mod, MASK_ATTR)
            n += 1
    return n


def masks(model) -> dict[str, Any]:
    """``{module_name: keep-mask}`` of every pruned module."""
    return {
        name: getattr(m, MASK_ATTR)
        for name, m in model.named_modules()
        if getattr(m, MASK_ATTR, None) is not None
    }


def sparsity_stats(named_linears: list[tuple[str, Any]]) -> dict[str, Any]:
    """Per-layer and overall fraction of exactly-zero weights."""
    per, zeros, total = {}, 0, 0
    for name, mod in named_linears:
        z = int((mod.weight == 0).sum())
        per[name] = round(z / mod.weight.numel(), 6)
        zeros += z
        total += mod.weight.numel()
    return {
        "sparsity": round(zeros / total, 6) if total else 0.0,
        "pruned_params": zeros,
        "target_params": total,
        "layers": per,
    }


# ----------------------------------------------------------------------------- step


def apply(model, cfg: PruneConfig, ctx: StepContext):
    handler = PRUNE_METHODS.get(cfg.method)
    stats = handler(model, cfg, ctx)
    return model, {"method": cfg.method, **stats}


SPEC = StepSpec(
    key="prune",
    config_cls=PruneConfig,
    apply=apply,
    summary="zero weights (magnitude, wanda, sparsegpt; optional N:M) or remove "
    "heads, FFN neurons or decoder layers",
)

__all__ = [
    "SPEC",
    "PRUNE_METHODS",
    "PruneConfig",
    "CalibrationConfig",
    "reapply_masks",
    "clear_masks",
    "masks",
    "decoder_layers",
    "target_linears",
    "layerwise",
    "sparsity_stats",
    "MASK_ATTR",
]
