"""Structured pruning: remove attention heads, FFN neurons or whole decoder layers.

The weights are really sliced (new, smaller ``nn.Linear`` parameters) and the model config is
rewritten, so the model is smaller, saves with ``save_pretrained`` and still runs
``generate()``. A Hugging Face config holds one head count and one FFN width for all layers,
so ``heads`` and ``neurons`` remove the same number of units in every layer (``sparsity`` is
the fraction removed, rounded to whole units); which units go is chosen per layer.

Importance scores (calibration activations when given, else the weights alone):

- ``neurons``: neuron j of the MLP scores ||X_j||_2 * ||W_down[:, j]||_2, where X_j is the
  input of ``down_proj`` (the gated activation) over all calibration tokens; without
  calibration ||W_gate[j]|| * ||W_up[j]|| * ||W_down[:, j]||.
- ``heads``: each input column c of ``o_proj`` scores ||X_c||_2 * ||W_o[:, c]||_2 (X = the
  attention output), a head sums its head_dim columns; without calibration the X factor is
  dropped. ``head_unit: query`` removes the same number of query heads from every KV group
  (the KV cache keeps its size, GQA stays consistent); ``head_unit: kv_group`` removes whole
  KV groups (a key/value head and all query heads that share it; shrinks the KV cache).
  With plain multi-head attention (one query head per KV head) both are the same.
- ``layers``: block influence (Men et al. 2024, "ShortGPT"): 1 - mean cosine similarity of a
  decoder layer's input and output hidden states over calibration tokens; the layers that
  change their input least are removed. Needs calibration data.
"""

from __future__ import annotations

import functools
from typing import Any

from ..errors import ConfigError, DataError, UnsupportedError
from .base import StepContext
from .prune import MASK_ATTR, PruneConfig, decoder_layers, layerwise, require_calibration


def _units_removed(total: int, sparsity: float, what: str) -> int:
    r = int(round(total * sparsity))
    if r < 1 or r >= total:
        lo, hi = 0.5 / total, (total - 0.5) / total
        raise ConfigError(
            f"sparsity: {sparsity} of {total} {what} removes {r}; choose a "
            f"sparsity between {lo:.3f} and {hi:.3f} to remove 1 to "
            f"{total - 1} of them"
        )
    return r


def _slice_linear(lin, dim: int, keep_idx) -> None:
    """Keep rows (dim 0) or input columns (dim 1) ``keep_idx`` of an nn.Linear, in place."""
    import torch

    with torch.no_grad():
        w = lin.weight.index_select(dim, keep_idx.to(lin.weight.device)).clone()
        lin.weight = torch.nn.Parameter(w, requires_grad=lin.weight.requires_grad)
        if dim == 0 and lin.bias is not None:
            lin.bias = torch.nn.Parameter(
                lin.bias[keep_idx].clone(), requires_grad=lin.bias.requires_grad
            )
    mask = getattr(lin, MASK_ATTR, None)
    if mask is not None:
        setattr(lin, MASK_ATTR, mask.index_select(dim, keep_idx.to(mask.device)))
    if dim == 0:
        lin.out_features = w.shape[0]
    else:
        lin.in_features = w.shape[1]


def _llama_like(model, need: str):
    layers = decoder_layers(model)
    probe = layers[0]
    attrs = {
        "heads": ("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
        "neurons": ("mlp", ("gate_proj", "up_proj", "down_proj")),
    }[need]
    block = getattr(probe, attrs[0], None)
    if block is None or not all(hasattr(block, a) for a in attrs[1]):
        raise UnsupportedError(
            f"prune: structured {need} pruning supports Llama-style models "
            f"({attrs[0]}.{'/'.join(attrs[1])}); {type(model).__name__} "
            "has another layout"
        )
    return layers


def _activation_norms(model, cfg: PruneConfig, ctx: StepContext, layers, module_of):
    """Per layer, sqrt(sum over calibration tokens of x_c^2) for each input column of the
    Linear ``module_of(layer)``; None without calibration. ``sequential`` follows the config."""
    import torch

    if ctx.calibration is None:
        return None
    tokens = require_calibration(cfg, ctx, "activation-aware importance")
    norms: list[Any] = []

    def visit(i, layer, forward):
        acc = {"v": None}

        def hook(module, inputs):
            x = inputs[0].detach().reshape(-1, module.in_features).float()
            v = x.pow(2).sum(0)
            acc["v"] = v if acc["v"] is None else acc["v"] + v

        h = module_of(layer).register_forward_pre_hook(hook)
        try:
            outs = forward()
        finally:
            h.remove()
        norms.append(acc["v"].sqrt())
        return outs, False

    with torch.no_grad():
        layerwise(model, tokens, visit, batch_size=cfg.calibration.batch_size, sequential=False)
    return norms, tokens


def prune_neurons(model, cfg: PruneConfig, ctx: StepContext) -> dict[str, Any]:
    import torch

    layers = _llama_like(model, "neurons")
    inter = layers[0].mlp.down_proj.in_features
    removed = _units_removed(inter, cfg.target_sparsity, "FFN neurons per layer")
    got = _activation_norms(model, cfg, ctx, layers, lambda layer: layer.mlp.down_proj)
    kept_per_layer = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            mlp = layer.mlp
            col = mlp.down_proj.weight.float().norm(dim=0)
            if got is not None:
                score = got[0][i] * col
            else:
                score = (
                    mlp.gate_proj.weight.float().norm(dim=1)
                    * mlp.up_proj.weight.float().norm(dim=1)
                    * col
                )
            keep = torch.topk(score, inter - removed).indices.sort().values
            _slice_linear(mlp.gate_proj, 0, keep)
            _slice_linear(mlp.up_proj, 0, keep)
            _slice_linear(mlp.down_proj, 1, keep)
            if hasattr(mlp, "intermediate_size"):
                mlp.intermediate_size = inter - removed
            kept_per_layer[f"layer.{i}"] = int(inter - removed)
    model.config.intermediate_size = inter - removed
    return {
        "unit": "ffn_neuron",
        "removed_per_layer": removed,
        "kept_per_layer": inter - removed,
        "importance": "activation" if got is not None else "weight",
        "intermediate_size": [inter, inter - removed],
        "layers": kept_per_layer,
    }


def prune_heads(model, cfg: PruneConfig, ctx: StepContext) -> dict[str, Any]:
    import torch

    layers = _llama_like(model, "heads")
    conf = model.config
    attn0 = layers[0].self_attn
    head_dim = int(getattr(attn0, "head_dim", None) or conf.hidden_size // conf.num_attention_heads)
    n_q = attn0.q_proj.out_features // head_dim
    n_kv = attn0.k_proj.out_features // head_dim
    rep = n_q // n_kv
    unit = cfg.head_unit if rep > 1 else "kv_group"
    if unit == "query":
        removed = _units_removed(rep, cfg.target_sparsity, "query heads per KV group")
    else:
        removed = _units_removed(n_kv, cfg.target_sparsity, "KV groups per layer")
    got = _activation_norms(model, cfg, ctx, layers, lambda layer: layer.self_attn.o_proj)
    per_layer = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            col = attn.o_proj.weight.float().norm(dim=0)
            if got is not None:
                col = col * got[0][i]
            else:
                col = col * attn.q_proj.weight.float().norm(dim=1)
            head_score = col.reshape(n_q, head_dim).sum(1).reshape(n_kv, rep)  # [kv, rep]
            ar = functools.partial(torch.arange, device=head_score.device)
            if unit == "query":
                keep_q = torch.topk(head_score, rep - removed, dim=1).indices.sort(dim=1).values
                keep_q = (keep_q + ar(n_kv)[:, None] * rep).reshape(-1)
                keep_kv = ar(n_kv)
            else:
                keep_kv = torch.topk(head_score.sum(1), n_kv - removed).indices.sort().values
                keep_q = (keep_kv[:, None] * rep + ar(rep)[None, :]).reshape(-1)
            q_rows = (keep_q[:, None] * head_dim + ar(head_dim)[None, :]).reshape(-1)
            kv_rows = (keep_kv[:, None] * head_dim + ar(head_dim)[None, :]).reshape(-1)
            _slice_linear(attn.q_proj, 0, q_rows)
            _slice_linear(attn.o_proj, 1, q_rows)
            if unit == "kv_group":
                _slice_linear(attn.k_proj, 0, kv_rows)
                _slice_linear(attn.v_proj, 0, kv_rows)
            new_q, new_kv = len(keep_q), len(keep_kv)
            attn.num_key_value_groups = new_q // new_kv
            for a, v in (("num_heads", new_q), ("num_key_value_heads", new_kv)):
                if hasattr(attn, a):
                    setattr(attn, a, v)
            per_layer[f"layer.{i}"] = {
                "kept_query_heads": keep_q.tolist(),
                "kept_kv_heads": keep_kv.tolist(),
            }
    conf.head_dim = head_dim
    conf.num_attention_heads = new_q
    conf.num_key_value_heads = new_kv
    return {
        "unit": "query_head" if unit == "query" else "kv_group",
        "importance": "activation" if got is not None else "weight",
        "num_attention_heads": [n_q, new_q],
        "num_key_value_heads": [n_kv, new_kv],
        "layers": per_layer,
    }


def prune_layers(model, cfg: PruneConfig, ctx: StepContext) -> dict[str, Any]:
    import torch

    layers = decoder_layers(model)
    total = len(layers)
    removed = _units_removed(total, cfg.target_sparsity, "decoder layers")
    if ctx.calibration is None:
        raise DataError(
            "prune: method 'layers' needs calibration data (block influence "
            "compares each layer's input and output on real text); pass "
            "calibration= a text file, list of strings or dataset"
        )
    tokens = require_calibration(cfg, ctx, "block influence")
    influence: list[float] = []

    def visit(_i, _layer, forward):
        outs = forward()
        influence.append(_block_influence(forward.inputs, outs))
        return outs, True

    layerwise(model, tokens, visit, batch_size=cfg.calibration.batch_size, sequential=False)
    order = sorted(range(total), key=lambda i: influence[i])
    drop = sorted(order[:removed])
    keep = [i for i in range(total) if i not in drop]
    new = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(new):
        attn = getattr(layer, "self_attn", None) or getattr(layer, "attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_idx
    parent = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    for name in ("layers", "h"):
        if getattr(parent, name, None) is layers:
            setattr(parent, name, new)
            break
    else:
        raise UnsupportedError(
            f"prune: cannot replace the decoder layers of {type(model).__name__}"
        )
    conf = model.config
    conf.num_hidden_layers = len(keep)
    if isinstance(getattr(conf, "layer_types", None), list):
        conf.layer_types = [conf.layer_types[i] for i in keep]
    return {
        "unit": "decoder_layer",
        "importance": "block_influence",
        "num_hidden_layers": [total, len(keep)],
        "removed_layers": drop,
        "layers": {f"layer.{i}": round(float(influence[i]), 6) for i in range(total)},
    }


def _block_influence(ins, outs) -> float:
    """1 - mean over tokens of cos(input, output) of one decoder layer."""
    import torch

    num, den = 0.0, 0
    for x, y in zip(ins, outs):
        cos = torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
        num += float(cos.sum())
        den += cos.numel()
    return 1.0 - num / max(den, 1)
