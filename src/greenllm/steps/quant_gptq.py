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

from ..errors import DataError


def _opt(cfg, name: str, default):
    value = getattr(cfg, name, None)
    return default if value is None else value


def calibration_tokens(cfg, ctx, method: str):
    from .calibration import calibration_batches

    if ctx.calibration is None:
        raise DataError(
            f"quantize: method {method!r} needs calibration data (GPTQ weighs "
            "rounding errors by the layer inputs); pass calibration= a text file, "
            "a list of strings or a dataset (CLI: --calibration FILE)"
        )
    if ctx.tokenizer is None:
        raise DataError(
            f"quantize: method {method!r} needs the tokenizer to read the "
            "calibration data; pass tokenizer="
        )
    c = cfg.calibration
    return calibration_batches(
        ctx.calibration, ctx.tokenizer, samples=c.samples, seq_len=c.seq_len, seed=ctx.seed
    )


def _replacement(mod, result, group_size: int | None, bits: int):
    import torch

    from .int4_linear import Int4Linear

    if bits == 4 and mod.in_features % 2 == 0:
        gs = group_size or mod.in_features
        return Int4Linear.from_quantized(
            result.codes, result.scales, result.zeros, gs, bias=mod.bias, dtype=mod.weight.dtype
        ), "int4 packed"
    with torch.no_grad():
        mod.weight.copy_(result.weight.to(mod.weight.dtype))
    return None, "simulated"


def apply_gptq(model, modules, cfg, ctx) -> dict[str, Any]:
    """Quantize ``modules`` ([(name, nn.Linear)]) with GPTQ; returns the step stats."""
    from .gptq_core import gptq_quantize, rtn_quantize
    from .prune import decoder_layers, layer_prefix, layerwise
    from .prune_unstructured import _input_hooks
    from .quantize import set_submodule

    bits = int(_opt(cfg, "bits", 4))
    group_size = _opt(cfg, "group_size", 64)
    group_size = None if group_size in (-1, 0) else group_size
    sym = bool(_opt(cfg, "sym", True))
    act_order = bool(_opt(cfg, "desc_act", False))
    static_groups = bool(_opt(cfg, "static_groups", act_order))
    blocksize = int(_opt(cfg, "blocksize", 128))
    dampening = float(_opt(cfg, "dampening", 0.01))
    sparsity = float(_opt(cfg, "sparsity", 0.0) or 0.0)
    nm = cfg.nm() if callable(getattr(cfg, "nm", None)) else None
    t0 = time.perf_counter()
    tokens = calibration_tokens(cfg, ctx, cfg.method)

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

    def quantize_one(name, mod, hessian):
        res = gptq_quantize(
            mod.weight,
            hessian,
            bits=bits,
            group_size=group_size,
            sym=sym,
            act_order=act_order,
            static_groups=static_groups,
            blocksize=blocksize,
            dampening=dampening,
            sparsity=sparsity,
            nm=nm,
        )
        new, how = _replacement(mod, res, group_size, bits)
        if new is not None:
            set_submodule(model, name, new)
        errors[name] = round(res.rel_error, 8)
        storage[name] = how

    def visit(i, _layer, forward):
        named = per_layer[i]
        if not named:
            return None, False
        state, handles = _input_hooks(named, "hessian")
        try:
            outs = forward()
        finally:
            for h in handles:
                h.remove()
        for name, mod in named:
            st = state[name]
            quantize_one(name, mod, st["acc"] * (2.0 / max(st["n"], 1)))
        return outs, False

    calib = getattr(cfg, "calibration", None)
    layerwise(model, tokens, visit, batch_size=getattr(calib, "batch_size", None), sequential=True)
    for name, mod in outside:  # no calibration inputs captured for these: round to nearest
        res = rtn_quantize(mod.weight, bits=bits, group_size=group_size, sym=sym)
        new, how = _replacement(mod, res, group_size, bits)
        if new is not None:
            set_submodule(model, name, new)
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
        "sparsity": sparsity,
        "pattern": getattr(cfg, "pattern", None),
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
    """Rebuild the quantized linears of a saved ``gptq`` model from its checkpoint tensors
    (packed 4-bit codes, scales, zeros; simulated widths are plain weights already)."""
    from .int4_linear import Int4Linear
    from .quantize import swap_modules

    new = {}
    for name in names:
        if f"{name}.qweight" not in tensors:
            continue  # a simulated (non-4-bit) layer: its float weight loaded as usual
        q, scales = tensors[f"{name}.qweight"], tensors[f"{name}.scales"]
        in_f, out_f = q.shape[1] * 2, q.shape[0]
        mod = Int4Linear(in_f, out_f, in_f // scales.shape[1], bias=f"{name}.bias" in tensors)
        mod.qweight.copy_(q)
        mod.scales.copy_(scales)
        mod.zeros.copy_(tensors[f"{name}.zeros"])
        if mod.bias is not None:
            mod.bias.copy_(tensors[f"{name}.bias"])
        mod.prepare()
        new[name] = mod
    swap_modules(model, new)


def apply_rtn(model, modules, cfg, ctx) -> dict[str, Any]:
    """Round-to-nearest on GPTQ's grid (same bits, groups, symmetry and storage), no
    calibration: the data-free baseline that GPTQ is judged against."""
    from .gptq_core import rtn_quantize
    from .quantize import set_submodule

    bits = int(_opt(cfg, "bits", 4))
    group_size = _opt(cfg, "group_size", 64)
    group_size = None if group_size in (-1, 0) else group_size
    sym = bool(_opt(cfg, "sym", True))
    storage = {}
    for name, mod in modules:
        res = rtn_quantize(mod.weight, bits=bits, group_size=group_size, sym=sym)
        new, how = _replacement(mod, res, group_size, bits)
        if new is not None:
            set_submodule(model, name, new)
        storage[name] = how
    return {"bits": bits, "group_size": group_size, "sym": sym, "storage": storage}
