"""The ``gptq`` quantize method: calibrated GPTQ, layer by layer, on the real model.

The decoder layers are walked in order with calibration activations (``prune.layerwise``,
the walk SparseGPT and Wanda use): the input Hessian ``2 X^T X / n`` of every selected linear
of a layer is accumulated from that layer's inputs (which already come from the quantized
layers before it), each linear is quantized with ``gptq_core.gptq_quantize``, and the layer is
run again so the next one sees the quantized layer's outputs. Linears outside the decoder
layers (``lm_head`` when it is targeted) have no calibration activations here and are
rounded to nearest on the same grid; the stats say which.

4-bit results become ``Int4Linear`` (packed codes, PyTorch's CPU int4 kernel); other widths
keep their de-quantized weights in the ``nn.Linear`` (stats: ``storage: simulated``). With
``sparsity`` (or an N:M ``pattern``) the same pass prunes as SparseGPT does. Per-layer
reconstruction errors (``tr(E H E^T) / tr(W H W^T)``) are in the stats.
"""

from __future__ import annotations

import time
from typing import Any

DEFAULT_GROUP_SIZE = 64  # ``group_size: null``; -1 is one scale per output channel


def _grid(cfg) -> tuple[int, int | None, bool]:
    """(bits, group size or None for per channel, symmetric) of a gptq/rtn config."""
    gs = DEFAULT_GROUP_SIZE if cfg.group_size is None else cfg.group_size
    return int(cfg.bits), (None if gs == -1 else gs), bool(cfg.sym)


def _round_to_nearest(model, modules, bits: int, group_size, sym: bool) -> dict[str, str]:
    """RTN on the gptq grid for ``modules`` ([(name, nn.Linear)]); name -> storage."""
    from .gptq_core import rtn_quantize
    from .quantize import set_submodule

    storage = {}
    for name, mod in modules:
        res = rtn_quantize(mod.weight, bits=bits, group_size=group_size, sym=sym)
        new, how = _replacement(mod, res, group_size, bits)
        if new is not None:
            set_submodule(model, name, new)
        storage[name] = how
    return storage


def _replacement(mod, result, group_size: int | None, bits: int):
    import torch

    from .int4_linear import Int4Linear

    if bits == 4 and mod.in_features % 8 == 0:
        gs = group_size or mod.in_features
        return Int4Linear.from_quantized(
            result.codes, result.scales, result.zeros, gs, bias=mod.bias, dtype=mod.weight.dtype
        ), "int4 packed"
    with torch.no_grad():
        mod.weight.copy_(result.weight.to(mod.weight.dtype))
    return None, "simulated"


def _input_stages(named):
    """Forward pre-hooks that group ``named`` ([(name, nn.Linear)]) into stages: the linears
    called on one and the same input tensor, in the order the layer first calls them. Returns
    ``(stages, handles)``; ``stages`` (a list of name lists) fills during the forward."""
    stages: list[list[str]] = []
    seen: dict[int, int] = {}
    alive: list[Any] = []  # keeps the first batch's inputs alive, so ids are not reused
    handles = []

    for name, mod in named:

        def hook(module, inputs, name=name):
            if any(name in st for st in stages):
                return
            x = inputs[0]
            if id(x) not in seen:
                seen[id(x)] = len(stages)
                stages.append([])
                alive.append(x)
            stages[seen[id(x)]].append(name)

        handles.append(mod.register_forward_pre_hook(hook))

    class _Release:
        def remove(self):
            alive.clear()

    handles.append(_Release())
    return stages, handles


def gptq_round(weight, hessian, cfg, *, clip: bool, sparsity: float = 0.0, nm=None):
    """GPTQ on one weight with ``cfg``'s grid and column order (``gptq_core.gptq_quantize``),
    on the range search's grid when ``clip`` (``awq_core.clipped_grid``, computed on the
    original weights and scored by ``cfg.clip_cost_for()``: GPTQ's per-column cost,
    ``gptq_core.rounding_weights``, or the block output error);
    shared by ``gptq`` and ``awq`` with ``rounding: gptq``."""
    from .awq_core import clipped_grid
    from .gptq_core import gptq_quantize, rounding_weights

    bits, group_size, sym = _grid(cfg)
    fixed = None
    if clip:
        fixed = clipped_grid(
            weight,
            hessian,
            bits=bits,
            group_size=group_size,
            sym=sym,
            grid=int(cfg.scale_grid),
            max_shrink=float(cfg.clip_max_shrink),
            col_weights=(
                rounding_weights(
                    hessian, act_order=bool(cfg.desc_act), dampening=float(cfg.dampening)
                )
                if cfg.clip_cost_for() == "gptq"
                else None
            ),
        )
    return gptq_quantize(
        weight,
        hessian,
        bits=bits,
        group_size=group_size,
        sym=sym,
        act_order=bool(cfg.desc_act),
        static_groups=bool(cfg.static_groups),
        blocksize=int(cfg.blocksize),
        dampening=float(cfg.dampening),
        sparsity=sparsity,
        nm=nm,
        grid=fixed,
    )


def apply_gptq(model, modules, cfg, ctx) -> dict[str, Any]:
    """Quantize ``modules`` ([(name, nn.Linear)]) with GPTQ; returns the step stats."""
    from .prune import decoder_layers, layer_prefix, layerwise, require_calibration
    from .prune_unstructured import _input_hooks
    from .quantize import set_submodule

    bits, group_size, sym = _grid(cfg)
    act_order, static_groups = bool(cfg.desc_act), bool(cfg.static_groups)
    blocksize, dampening, sparsity = int(cfg.blocksize), float(cfg.dampening), float(cfg.sparsity)
    nm = cfg.nm()
    t0 = time.perf_counter()
    tokens = require_calibration(
        cfg, ctx, "GPTQ weighs rounding errors by the layer inputs", step="quantize"
    )

    layers = decoder_layers(model)
    prefix = layer_prefix(model, layers)
    per_layer: list[list[tuple[str, Any]]] = [[] for _ in layers]
    outside = []
    for name, mod in modules:
        head, _, rest = name.partition(prefix + ".")
        idx = rest.split(".", 1)[0] if not head and rest else ""
        if idx.isdigit() and int(idx) < len(layers):
            per_layer[int(idx)].append((name, mod))
        else:
            outside.append((name, mod))

    errors: dict[str, float] = {}
    storage: dict[str, str] = {}

    clip = cfg.clip_for("gptq")
    true_seq = bool(cfg.true_sequential)

    def quantize_one(name, mod, hessian):
        res = gptq_round(mod.weight, hessian, cfg, clip=clip, sparsity=sparsity, nm=nm)
        new, how = _replacement(mod, res, group_size, bits)
        if new is not None:
            set_submodule(model, name, new)
        errors[name] = round(res.rel_error, 8)
        storage[name] = how

    def hessians(named, forward):
        state, handles = _input_hooks(named, "hessian")
        order, handles2 = _input_stages(named) if true_seq else ([], [])
        try:
            outs = forward()
        finally:
            for h in handles + handles2:
                h.remove()
        return {n: st["acc"] * (2.0 / max(st["n"], 1)) for n, st in state.items()}, order, outs

    def visit(i, _layer, forward):
        named = per_layer[i]
        if not named:
            return None, False
        hess, stages, outs = hessians(named, forward)
        if not true_seq:
            for name, mod in named:
                quantize_one(name, mod, hess[name])
            return outs, False
        # true sequential: each stage (the linears that share one input tensor: q/k/v, o,
        # gate/up, down) is calibrated on the outputs of the stages already quantized
        by_name = dict(named)
        for k, stage in enumerate(stages):
            if k:
                hess, _, outs = hessians([(n, by_name[n]) for n in stage], forward)
            for name in stage:
                quantize_one(name, by_name[name], hess[name])
        return outs, False

    layerwise(
        model, tokens, visit, batch_size=cfg.calibration.batch_size, sequential=cfg.sequential
    )
    # no calibration inputs are captured outside the decoder layers: round to nearest there
    for name, how in _round_to_nearest(model, outside, bits, group_size, sym).items():
        storage[name] = how + " (round-to-nearest: outside the decoder layers)"
    vals = list(errors.values())
    return {
        "bits": bits,
        "group_size": group_size,
        "sym": sym,
        "desc_act": act_order,
        "static_groups": static_groups,
        "blocksize": blocksize,
        "dampening": dampening,
        "clip": clip,
        "clip_cost": cfg.clip_cost_for() if clip else None,
        "true_sequential": true_seq,
        "sparsity": sparsity,
        "pattern": cfg.pattern,
        "sequential": bool(cfg.sequential),
        "calibration": {
            "samples": int(tokens.shape[0]),
            "seq_len": int(tokens.shape[1]),
            "tokens": int(tokens.numel()),
        },
        "calibration_s": round(time.perf_counter() - t0, 3),
        "reconstruction_error": errors,
        "reconstruction_error_mean": round(sum(vals) / len(vals), 8) if vals else None,
        "storage": storage,
    }


def restore_gptq(model, names, cfg, tensors, stats=None) -> None:
    """Rebuild the quantized linears of a saved ``gptq`` / ``awq`` / ``rtn`` model from its
    checkpoint tensors (the compressed-tensors ``pack-quantized`` layout of ``Int4Linear``;
    simulated widths are plain weights already)."""
    from .int4_linear import Int4Linear
    from .quantize import swap_modules

    new = {}
    for name in names:
        if f"{name}.weight_packed" not in tensors:
            continue  # a simulated (non-4-bit) layer: its float weight loaded as usual
        keys = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "bias")
        found = {f"{name}.{k}": tensors[f"{name}.{k}"] for k in keys if f"{name}.{k}" in tensors}
        new[name] = Int4Linear.from_state(found, name)
    swap_modules(model, new)


def compressed_tensors_config(model) -> dict[str, Any] | None:
    """The ``quantization_config`` entry of config.json that makes a checkpoint of a model
    with ``Int4Linear`` layers a compressed-tensors ``pack-quantized`` checkpoint (one config
    group per grid, its targets the module names), or None when it has none."""
    import torch

    from .int4_linear import Int4Linear

    groups: dict[tuple[int | None, bool], list[str]] = {}
    others = []
    for name, mod in model.named_modules():
        if isinstance(mod, Int4Linear):
            per_channel = mod.group_size == mod.in_features
            groups.setdefault((None if per_channel else mod.group_size, mod.sym), []).append(name)
        elif isinstance(mod, torch.nn.Linear):
            others.append(name)
    if not groups:
        return None
    config_groups = {}
    for i, ((gs, sym), names) in enumerate(sorted(groups.items(), key=lambda kv: kv[1][0])):
        config_groups[f"group_{i}"] = {
            "targets": names,
            "weights": {
                "num_bits": 4,
                "type": "int",
                "symmetric": sym,
                "group_size": gs,
                "strategy": "channel" if gs is None else "group",
                "dynamic": False,
                "observer": "minmax",
            },
            "input_activations": None,
            "output_activations": None,
        }
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": others,
        "kv_cache_scheme": None,
    }


def apply_rtn(model, modules, cfg, ctx) -> dict[str, Any]:
    """Round-to-nearest on GPTQ's grid (same bits, groups, symmetry and storage), no
    calibration: the data-free baseline that GPTQ is judged against."""
    bits, group_size, sym = _grid(cfg)
    storage = _round_to_nearest(model, modules, bits, group_size, sym)
    return {"bits": bits, "group_size": group_size, "sym": sym, "storage": storage}
