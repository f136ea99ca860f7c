"""Unstructured pruning: magnitude, Wanda and SparseGPT, each optionally N:M.

Importance scores (smaller = pruned first):

- ``magnitude``: |W_ij|. ``scope: layer`` prunes the same fraction of every Linear; ``scope:
  global`` one threshold over all targeted Linears (ties at the threshold broken in module
  order, so the total count is exact).
- ``wanda`` (Sun et al. 2023): |W_ij| * ||X_j||_2, where ||X_j||_2 is the L2 norm of input
  feature j over every calibration token; the same fraction is pruned in every output row.
- ``sparsegpt`` (Frantar & Alistarh 2023): with H = 2/n X X^T (+ dampening * mean(diag H) * I)
  and the upper Cholesky factor U of H^-1, columns are visited left to right in blocks of
  ``blocksize``; inside a block the mask keeps the weights with the largest w^2 / U_jj^2 (for
  N:M: per group of M columns, chosen when the group is reached), and each pruned column's
  error (w - q) / U_jj is propagated to the not-yet-visited columns through row j of U (the
  OBS update), lazily across blocks.

With ``pattern: N:M`` every group of M consecutive input weights of a row keeps its N most
important ones. Masks are stored for ``prune.reapply_masks``.
"""

from __future__ import annotations

from typing import Any

from .base import StepContext
from .prune import (
    PruneConfig,
    layerwise,
    require_calibration,
    set_mask,
    sparsity_stats,
    target_linears,
)

# ----------------------------------------------------------------------------- masks


def _count(n: int, sparsity: float) -> int:
    return int(round(n * sparsity))


def nm_keep(score, n: int, m: int):
    """Keep-mask that keeps the ``n`` largest scores of every ``m`` consecutive columns."""
    import torch

    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    drop = torch.topk(groups, m - n, dim=-1, largest=False).indices
    keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False)
    return keep.reshape(rows, cols)


def smallest_keep(score, sparsity: float, *, per_row: bool):
    """Keep-mask that drops exactly round(sparsity * size) lowest scores (per row or overall).

    The k-th smallest value is the threshold; ties at the threshold are dropped left to right
    until the count is exact (de-quantized weights have many equal values).
    """
    import torch

    rows = score if per_row else score.reshape(1, -1)
    k = _count(rows.shape[1], sparsity)
    if k == 0:
        return torch.ones_like(score, dtype=torch.bool)
    thresh = torch.kthvalue(rows, k, dim=1, keepdim=True).values
    below = rows < thresh
    ties = rows == thresh
    need = k - below.sum(1, keepdim=True)
    drop = below | (ties & (torch.cumsum(ties, dim=1) <= need))
    return (~drop).reshape(score.shape)


def magnitude_mask(weight, sparsity: float, nm: tuple[int, int] | None = None):
    score = weight.detach().abs().float()
    return nm_keep(score, *nm) if nm else smallest_keep(score, sparsity, per_row=False)


def wanda_score(weight, sq_norm):
    """|W_ij| * ||X_j||_2 given the per-input-feature sum of squares ``sq_norm``."""
    return weight.detach().abs().float() * sq_norm.float().clamp_min(0).sqrt()[None, :]


def wanda_mask(weight, sq_norm, sparsity: float, nm: tuple[int, int] | None = None):
    score = wanda_score(weight, sq_norm)
    return nm_keep(score, *nm) if nm else smallest_keep(score, sparsity, per_row=True)


def _inverse_cholesky(hessian, dampening: float):
    """Upper Cholesky factor of (H + damp I)^-1, raising the damping until H is definite."""
    import torch

    h = hessian.clone()
    damp = dampening * torch.mean(torch.diag(h))
    if not torch.isfinite(damp) or damp <= 0:
        damp = torch.tensor(dampening, dtype=h.dtype, device=h.device)
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(h + damp * eye)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(hinv, upper=True)
            if int(info) == 0:
                return upper
        damp = damp * 10
    raise ArithmeticError("layer Hessian is not positive definite even with 10^6x dampening")


def sparsegpt_prune(
    weight,
    hessian,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    *,
    blocksize: int = 128,
    dampening: float = 0.01,
):
    """SparseGPT on one weight matrix ``[out, in]`` with Hessian ``[in, in]``.

    Returns ``(new_weight, keep_mask)``; new_weight is exactly zero where keep is False.
    """
    import torch

    if nm is not None and blocksize % nm[1]:
        raise ValueError(
            f"sparsegpt_prune: blocksize {blocksize} is not a multiple of "
            f"M={nm[1]} of the {nm[0]}:{nm[1]} pattern"
        )
    W = weight.detach().float().clone()
    H = hessian.detach().float().clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0  # inputs that were always zero: prune freely
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    U = _inverse_cholesky(H, dampening)
    keep = torch.ones_like(W, dtype=torch.bool)
    for b0 in range(0, cols, blocksize):
        b1 = min(b0 + blocksize, cols)
        W1 = W[:, b0:b1].clone()
        U1 = U[b0:b1, b0:b1]
        d = torch.diag(U1)
        Err1 = torch.zeros_like(W1)
        if nm is None:
            keep1 = smallest_keep(W1.pow(2) / d.pow(2)[None, :], sparsity, per_row=False)
        else:
            keep1 = torch.ones_like(W1, dtype=torch.bool)
        for j in range(b1 - b0):
            if nm is not None and j % nm[1] == 0:
                g = slice(j, j + nm[1])
                keep1[:, g] = nm_keep(W1[:, g].pow(2) / d[g].pow(2)[None, :], *nm)
            w = W1[:, j]
            q = w * keep1[:, j]
            err = (w - q) / d[j]
            W1[:, j:].addr_(err, U1[j, j:], alpha=-1.0)  # in place, no outer temp
            W1[:, j] = q
            Err1[:, j] = err
        W[:, b0:b1] = W1
        keep[:, b0:b1] = keep1
        W[:, b1:] -= Err1 @ U[b0:b1, b1:]
    W *= keep
    return W.to(weight.dtype), keep


# ----------------------------------------------------------------------------- handlers


def _nm(cfg: PruneConfig):
    return cfg.nm() if cfg.pattern is not None else None


def _common_stats(cfg: PruneConfig, flat, tokens=None) -> dict[str, Any]:
    stats = {
        "target_sparsity": round(cfg.target_sparsity, 6),
        "pattern": cfg.pattern,
        **sparsity_stats(flat),
    }
    if tokens is not None:
        stats["calibration"] = {
            "samples": int(tokens.shape[0]),
            "seq_len": int(tokens.shape[1]),
            "tokens": int(tokens.numel()),
            "sequential": cfg.sequential,
        }
    return stats


def prune_magnitude(model, cfg: PruneConfig, ctx: StepContext) -> dict[str, Any]:
    import torch

    per_layer = target_linears(model, cfg)
    flat = [pair for layer in per_layer for pair in layer]
    s, nm = cfg.target_sparsity, _nm(cfg)
    if cfg.scope == "layer" or nm:
        for _, mod in flat:
            set_mask(mod, magnitude_mask(mod.weight, s, nm))
    else:
        with torch.no_grad():
            scores = torch.cat([m.weight.detach().abs().float().reshape(-1) for _, m in flat])
            k = _count(scores.numel(), s)
            keep = torch.ones_like(scores, dtype=torch.bool)
            if k:
                thresh = torch.kthvalue(scores, k).values
                keep = scores > thresh
                ties = torch.nonzero(scores == thresh).reshape(-1)
                need = k - int((scores < thresh).sum())
                keep[ties[need:]] = True  # ties beyond the count stay, in module order
            del scores
            start = 0
            for _, mod in flat:
                n = mod.weight.numel()
                set_mask(mod, keep[start : start + n].reshape(mod.weight.shape))
                start += n
    stats = _common_stats(cfg, flat)
    stats["scope"] = cfg.scope
    return stats


def _stat(x, kind: str):
    if kind == "abs":  # AWQ: sum of |x_j| (mean magnitude of an input channel)
        return x.abs().sum(0)
    return x.pow(2).sum(0) if kind == "sq" else x.t() @ x


def _input_hooks(named, kind: str):
    """Forward pre-hooks accumulating per-Linear input statistics: 'sq' (sum of x_j^2) or
    'hessian' (X^T X) or 'abs' (sum of |x_j|). Returns (state, handles)."""
    state: dict[str, dict[str, Any]] = {}
    handles = []
    last: dict[str, Any] = {"x": None, "v": None}  # q/k/v (gate/up) share one input tensor

    for name, mod in named:
        st = {"n": 0, "acc": None}
        state[name] = st

        def hook(module, inputs, st=st):
            if last["x"] is inputs[0]:
                v = last["v"]
            else:
                x = inputs[0].detach().reshape(-1, module.in_features).float()
                v = _stat(x, kind)
                last["x"], last["v"] = inputs[0], v
            st["acc"] = v.clone() if st["acc"] is None else st["acc"].add_(v)
            st["n"] += inputs[0].numel() // module.in_features

        handles.append(mod.register_forward_pre_hook(hook))

    class _Forget:  # removing the hooks also drops the cached input
        def remove(self):
            last["x"] = last["v"] = None

    handles.append(_Forget())
    return state, handles


def _calibrated(model, cfg: PruneConfig, ctx: StepContext, kind: str, prune_one):
    """The reference Wanda/SparseGPT walk: per decoder layer, the statistics of every targeted
    Linear come from the layer's unpruned forward on its inputs (whatever
    calibration.batch_size splits them into), then all of them are pruned; with
    ``sequential`` the pruned layer is run again to give the next layer its inputs."""
    per_layer = target_linears(model, cfg)  # validate before anything is touched
    tokens = require_calibration(cfg, ctx, "it weighs weights by their input activations")

    def visit(i, _layer, forward):
        named = per_layer[i]
        if not named:
            return None, False
        state, handles = _input_hooks(named, kind)
        try:
            outs = forward()
        finally:
            for h in handles:
                h.remove()
        for name, mod in named:
            prune_one(mod, state[name])
        return outs, False

    layerwise(
        model, tokens, visit, batch_size=cfg.calibration.batch_size, sequential=cfg.sequential
    )
    return _common_stats(cfg, [p for layer in per_layer for p in layer], tokens)


def prune_wanda(model, cfg: PruneConfig, ctx: StepContext) -> dict[str, Any]:
    s, nm = cfg.target_sparsity, _nm(cfg)

    def prune_one(mod, st):
        set_mask(mod, wanda_mask(mod.weight, st["acc"], s, nm))

    return _calibrated(model, cfg, ctx, "sq", prune_one)


def prune_sparsegpt(model, cfg: PruneConfig, ctx: StepContext) -> dict[str, Any]:
    import torch

    s, nm = cfg.target_sparsity, _nm(cfg)

    def prune_one(mod, st):
        hessian = st["acc"] * (2.0 / max(st["n"], 1))
        new_w, keep = sparsegpt_prune(
            mod.weight, hessian, s, nm, blocksize=cfg.blocksize, dampening=cfg.dampening
        )
        with torch.no_grad():
            mod.weight.copy_(new_w)
        set_mask(mod, keep)

    stats = _calibrated(model, cfg, ctx, "hessian", prune_one)
    stats.update(dampening=cfg.dampening, blocksize=cfg.blocksize)
    return stats
