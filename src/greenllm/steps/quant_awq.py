"""The ``awq`` quantize method: activation-aware scales folded into the model, clipping, then
group-wise round-to-nearest into the packed ``Int4Linear`` (``awq_core`` has the searches).

Llama-style decoder layers (Llama, Mistral, Qwen2, SmolLM...) are walked in order with
calibration activations (``prune.layerwise``, as GPTQ and SparseGPT do): each layer's inputs
come from the already-quantized layers before it. One forward of the float layer collects,
for every linear, the Gram matrix ``X^T X`` of its inputs and the mean magnitude of every
input channel. Then, in the reference's order, a scale ``s`` is searched and folded for each
group of linears that share an input, where the producer of that input can absorb ``1 / s``:

============================  ====================================  =====================
input produced by             scaled linears (columns ``* s``)      producer (``/ s``)
============================  ====================================  =====================
``input_layernorm``           ``q_proj``, ``k_proj``, ``v_proj``     RMSNorm weight
``v_proj`` (rows)             ``o_proj``                            only when v and o
                                                                    are square (no GQA)
``post_attention_layernorm``  ``gate_proj``, ``up_proj``             RMSNorm weight
``up_proj`` (rows)            ``down_proj``                         ``up_proj`` rows
============================  ====================================  =====================

Folding is exact in float arithmetic (``x / s`` times ``W * s``; ``silu(g) * (u / s)`` times
``D * s``), so the model computes the same function before rounding. With grouped-query
attention ``v_proj`` has fewer output rows than ``o_proj`` has inputs and that pair is skipped,
as in the reference. Then every selected linear gets the clipping search (except ``q_proj``
and ``k_proj``, as in the reference: their error matters through the softmax, which the
search does not see) and is rounded to nearest on GPTQ's grid; 4-bit layers become
``Int4Linear``. Linears outside the decoder layers are rounded to nearest.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import UnsupportedError

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
NO_CLIP = ("q_proj", "k_proj")


def _parts(layer, i: int) -> dict[str, Any]:
    """The modules of a Llama-style decoder layer by short name, or UnsupportedError."""
    found: dict[str, Any] = {}
    for short, path in (
        [
            ("input_layernorm", "input_layernorm"),
            ("post_attention_layernorm", "post_attention_layernorm"),
        ]
        + [(n, f"self_attn.{n}") for n in ATTN]
        + [(n, f"mlp.{n}") for n in MLP]
    ):
        obj = layer
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise UnsupportedError(
                    f"quantize: awq folds its scales into Llama-style decoder layers "
                    f"(input_layernorm, self_attn.q/k/v/o_proj, post_attention_layernorm, "
                    f"mlp.gate/up/down_proj); layer {i} ({type(layer).__name__}) has no "
                    f"{path}; use method gptq for this model"
                )
        found[short] = obj
    for norm in ("input_layernorm", "post_attention_layernorm"):
        mod = found[norm]
        if "gemma" in type(mod).__name__.lower() or getattr(mod, "weight", None) is None:
            raise UnsupportedError(
                f"quantize: awq divides the {norm} weight by its scales; "
                f"{type(mod).__name__} does not scale its output by its weight alone "
                "(a (1 + weight) or weight-less norm); use method gptq for this model"
            )
    return found


def fold_groups(parts: dict[str, Any]) -> list[tuple[str, Any, list[str]]]:
    """``[(group, producer module, [consumer short names])]`` in the reference's order."""
    groups: list[tuple[str, Any, list[str]]] = [
        ("input_layernorm", parts["input_layernorm"], ["q_proj", "k_proj", "v_proj"])
    ]
    v, o = parts["v_proj"], parts["o_proj"]
    if v.out_features == o.in_features:
        groups.append(("v_proj", v, ["o_proj"]))
    groups.append(
        ("post_attention_layernorm", parts["post_attention_layernorm"], ["gate_proj", "up_proj"])
    )
    groups.append(("up_proj", parts["up_proj"], ["down_proj"]))
    return groups


def fold_scale(producer, consumers, s) -> None:
    """Divide what ``producer`` emits by ``s`` (norm weight, or linear rows and bias) and
    multiply the input columns of every consumer linear by ``s``: the composition is
    unchanged."""
    import torch

    with torch.no_grad():
        s = s.to(producer.weight.dtype)
        if producer.weight.dim() == 1:  # a norm: y = w * normalize(x) (+ b)
            producer.weight.div_(s)
        else:  # a linear: rows are its outputs
            producer.weight.div_(s[:, None])
        if getattr(producer, "bias", None) is not None:
            producer.bias.div_(s)
        for mod in consumers:
            mod.weight.mul_(s[None, :].to(mod.weight.dtype))


def apply_awq(model, modules, cfg, ctx) -> dict[str, Any]:
    """Quantize ``modules`` ([(name, nn.Linear)]) with AWQ; returns the step stats."""
    import torch

    from .awq_core import output_error, quantize_clipped, search_scale
    from .prune import decoder_layers, layer_prefix, layerwise, require_calibration
    from .prune_unstructured import _input_hooks
    from .quant_gptq import _grid, _replacement, _round_to_nearest, gptq_round
    from .quantize import set_submodule

    bits, group_size, sym = _grid(cfg)
    grid, clip, shrink = int(cfg.scale_grid), cfg.clip_for("awq"), float(cfg.clip_max_shrink)
    use_gptq = cfg.rounding == "gptq"
    t0 = time.perf_counter()
    layers = decoder_layers(model)
    all_parts = [_parts(layer, i) for i, layer in enumerate(layers)]  # before any change
    tokens = require_calibration(
        cfg, ctx, "AWQ scales weights by the magnitude of their inputs", step="quantize"
    )
    prefix = layer_prefix(model, layers)
    selected = {name for name, _ in modules}
    inside = {
        f"{prefix}.{i}.{'self_attn' if s in ATTN else 'mlp'}.{s}"
        for i in range(len(layers))
        for s in ATTN + MLP
    }
    outside = [(n, m) for n, m in modules if n not in inside]

    errors: dict[str, float] = {}
    alphas: dict[str, float] = {}
    storage: dict[str, str] = {}

    def full(i: int, short: str) -> str:
        return f"{prefix}.{i}.{'self_attn' if short in ATTN else 'mlp'}.{short}"

    def visit(i, _layer, forward):
        parts = all_parts[i]
        shorts = [s for s in ATTN + MLP if full(i, s) in selected]
        if not shorts:
            return None, False
        named = [(s, parts[s]) for s in ATTN + MLP]
        gram_state, h1 = _input_hooks(named, "hessian")
        abs_state, h2 = _input_hooks(named, "abs")
        try:
            outs = forward()
        finally:
            for h in h1 + h2:
                h.remove()
        n = {s: max(gram_state[s]["n"], 1) for s, _ in named}
        gram = {s: gram_state[s]["acc"].float() for s, _ in named}  # float32: see awq_core
        col_scale = {s: None for s, _ in named}
        for group, producer, consumers in fold_groups(parts):
            chosen = [c for c in consumers if c in shorts]
            if not chosen:
                continue
            act_mean = abs_state[consumers[0]]["acc"] / n[consumers[0]]
            res = search_scale(
                [parts[c].weight for c in chosen],
                act_mean,
                gram[consumers[0]],
                bits=bits,
                group_size=group_size,
                sym=sym,
                grid=grid,
            )
            fold_scale(producer, [parts[c] for c in consumers], res.scale)
            alphas[f"{prefix}.{i}.{group}"] = res.alpha
            for c in consumers:
                col_scale[c] = res.scale.float()
        for s in shorts:
            mod = parts[s]
            g = gram[s]
            if col_scale[s] is not None:  # the layer now sees x / s
                g = g / (col_scale[s][:, None] * col_scale[s][None, :])
            w = mod.weight.detach()
            if use_gptq:
                # the scaled inputs' Hessian 2 G / n
                q = gptq_round(w, g * (2.0 / n[s]), cfg, clip=clip and s not in NO_CLIP)
            else:
                q = quantize_clipped(
                    w.float(),
                    g,
                    bits=bits,
                    group_size=group_size,
                    sym=sym,
                    clip=clip and s not in NO_CLIP,
                    grid=grid,
                    max_shrink=shrink,
                )
            wf = w.float()
            energy = output_error(wf, torch.zeros_like(wf), g)
            errors[full(i, s)] = (
                round(output_error(wf, q.weight.float(), g) / energy, 8) if energy > 0 else 0.0
            )
            new, how = _replacement(mod, q, group_size, bits)
            if new is not None:
                set_submodule(model, full(i, s), new)
            storage[full(i, s)] = how
        return outs, False

    layerwise(
        model, tokens, visit, batch_size=cfg.calibration.batch_size, sequential=cfg.sequential
    )
    for name, how in _round_to_nearest(model, outside, bits, group_size, sym).items():
        storage[name] = how + " (round-to-nearest: outside the decoder layers)"
    vals = list(errors.values())
    return {
        "bits": bits,
        "group_size": group_size,
        "sym": sym,
        "scale_grid": grid,
        "clip": clip,
        "clip_max_shrink": shrink,
        "rounding": cfg.rounding,
        "clip_cost": cfg.clip_cost_for() if clip and cfg.rounding == "gptq" else None,
        "desc_act": bool(cfg.desc_act),
        "sequential": bool(cfg.sequential),
        "calibration": {
            "samples": int(tokens.shape[0]),
            "seq_len": int(tokens.shape[1]),
            "tokens": int(tokens.numel()),
        },
        "calibration_s": round(time.perf_counter() - t0, 3),
        "scale_alpha": alphas,
        "reconstruction_error": errors,
        "reconstruction_error_mean": round(sum(vals) / len(vals), 8) if vals else None,
        "storage": storage,
    }
