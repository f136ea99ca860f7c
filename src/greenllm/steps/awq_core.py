"""AWQ on one group of linear layers that share an input (Lin et al., "AWQ: Activation-aware
Weight Quantization for LLM Compression and Acceleration", MLSys 2024).

Two searches, both on statistics of the calibration inputs ``X [tokens, in]`` of the layers:

- scale search: per input channel ``s = mean|x|^alpha``, normalised so that
  ``sqrt(max(s) * min(s)) = 1``, for ``alpha`` on a grid over ``[0, 1)``; each candidate
  quantizes ``W * s`` (columns scaled), divides the result by ``s`` again and measures the
  output error on the calibration inputs; the best ``alpha`` wins. Salient input channels
  (large activations) get ``s > 1``: their weights use more of the grid. ``s`` is folded
  exactly into whatever produced the input (the RMSNorm weight, or the rows of the previous
  linear), so the float model does not change.
- clipping search: per output row and group, the weight range ``[-m, m]`` with
  ``m = (1 - k / grid) * max|w|`` for ``k < max_shrink * grid`` that minimises the group's
  output error; the weights are clamped to it before rounding. For GPTQ's rounding on a fixed
  grid (``clipped_grid``), ``search_range`` widens the candidates (both ends of an asymmetric
  range shrunk together) and scores them by GPTQ's own per-column cost.

The output error of ``Q`` on the calibration inputs, ``sum_t ||x_t (W - Q)^T||^2``, is
``tr(E G E^T)`` with ``G = X^T X`` (``E = W - Q``), so the searches need only the Gram matrix
the GPTQ Hessian hooks already collect (``G = H n / 2``), not the activations. For one linear
this is exactly the reference's error; for a group of linears (q/k/v, gate/up) it is the sum
of their output errors, where the reference runs the whole attention / MLP block (a
documented simplification: the searches see the layers' outputs, not the softmax or SiLU
after them). Quantization is round-to-nearest on GPTQ's grid (``gptq_core.grid_params``).

torch is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .gptq_core import GPTQResult, grid_params, rtn_quantize, to_codes


@dataclass
class ScaleSearch:
    """Result of ``search_scale``: the per-input-channel scale, the chosen exponent and the
    output error (sum over the layers) of every grid point, in grid order."""

    scale: Any
    alpha: float
    errors: list[float]


def fake_quantize(w, bits: int, group_size: int | None, sym: bool):
    """Round-to-nearest ``w [out, in]`` on the grid, returned as float weights."""
    return rtn_quantize(w, bits=bits, group_size=group_size, sym=sym).weight


def _search_dtype(w, gram):
    """float64 when either operand is (the tests' exact comparisons), else float32: the
    searches compare errors of candidates, which float32 products with a float64 sum resolve,
    at about half the cost of float64 products on a CPU."""
    import torch

    return torch.float64 if torch.float64 in (w.dtype, gram.dtype) else torch.float32


def output_error(w, q, gram) -> float:
    """``sum_t ||x_t (w - q)^T||^2`` for ``gram = X^T X``."""
    import torch

    ft = _search_dtype(w, gram)
    e = (w - q).to(ft)
    return float(((e @ gram.to(ft)) * e).sum(dtype=torch.float64))


def candidate_scale(act_mean, alpha: float):
    """``mean|x|^alpha`` per channel, clamped away from 0, normalised to geometric middle 1."""
    import torch

    s = act_mean.double().clamp_min(1e-4).pow(alpha).clamp_min(1e-4)
    s = s / torch.sqrt(s.max() * s.min())
    return s


def search_scale(
    weights,
    act_mean,
    gram,
    *,
    bits: int = 4,
    group_size: int | None = 64,
    sym: bool = True,
    grid: int = 20,
) -> ScaleSearch:
    """Best per-input-channel scale for the layers ``weights`` ([out_i, in] each) that share
    the input with per-channel mean magnitude ``act_mean [in]`` and Gram matrix ``gram``.
    ``alpha = 0`` (no scaling, plain round-to-nearest) is always a candidate, so the result
    is never worse than RTN on the calibration inputs."""
    best = None
    errors = []
    for k in range(grid):
        alpha = k / grid
        s = candidate_scale(act_mean, alpha)
        err = 0.0
        for w in weights:
            ft = _search_dtype(w, gram)
            wf, sf = w.detach().to(ft), s.to(ft)
            q = fake_quantize(wf * sf[None, :], bits, group_size, sym) / sf[None, :]
            err += output_error(wf, q, gram)
        errors.append(err)
        if best is None or err < best[0]:
            best = (err, alpha, s)
    assert best is not None
    return ScaleSearch(best[2].to(weights[0].dtype), best[1], errors)


def search_clip(
    w,
    gram,
    *,
    bits: int = 4,
    group_size: int | None = 64,
    sym: bool = True,
    grid: int = 20,
    max_shrink: float = 0.5,
):
    """Per (row, group) clipping bound ``[out, groups]`` that minimises the group's output
    error ``(w_g - q_g) G_gg (w_g - q_g)^T`` (``G_gg`` the group's block of the Gram matrix;
    groups are searched independently, as in the reference): ``search_range`` with AWQ's
    clamp family only, as a bound."""
    import torch

    lo, hi = search_range(
        w,
        gram,
        bits=bits,
        group_size=group_size,
        sym=sym,
        grid=grid,
        max_shrink=max_shrink,
        shrink_both=False,
    )
    # the clamp [max(min, -m), min(max, m)] cuts the longer side to m (or nothing at m = max|w|)
    return torch.maximum(-lo, hi)


def apply_clip(w, max_val, group_size: int | None):
    """``w`` clamped to ``[-max_val, max_val]`` per (row, group)."""
    import torch

    rows, cols = w.shape
    gs = cols if group_size is None else group_size
    wg = w.reshape(rows, cols // gs, gs)
    m = max_val[..., None].to(w.dtype)
    return torch.maximum(torch.minimum(wg, m), -m).reshape(rows, cols)


def _clamped(Wg, lo, hi):
    """``Wg [rows, groups, gs]`` clamped to each (row, group)'s ``[lo, hi]``, as
    ``[rows * groups, gs]``: every (row, group) one row for ``grid_params``."""
    import torch

    cur = torch.maximum(torch.minimum(Wg, hi[..., None]), lo[..., None])
    return cur.reshape(-1, Wg.shape[-1])


def search_range(
    w,
    gram,
    *,
    bits: int = 4,
    group_size: int | None = 64,
    sym: bool = True,
    grid: int = 20,
    max_shrink: float = 0.5,
    col_weights=None,
    shrink_both: bool | None = None,
):
    """Per (row, group) weight range ``(lo, hi)``, each ``[out, groups]``, that minimises the
    group's output error ``(w_g - q_g) G_gg (w_g - q_g)^T`` of round-to-nearest on the grid
    of the clamped weights, or, with ``col_weights [in]``, the weighted squared error
    ``sum_j col_weights_j (w_j - q_j)^2`` (GPTQ's own per-column cost, see
    ``gptq_core.rounding_weights``).

    Candidates, for ``p = 1 - k / grid``, ``k < max_shrink * grid``:
    - AWQ's symmetric clamp ``[-p max|w|, p max|w|]`` (for a symmetric grid, the only family
      that matters: its grid is set by ``max|w|`` alone);
    - with an asymmetric grid, also both ends shrunk together, ``[p min(w, 0), p max(w, 0)]``
      (the GPTQ reference's MSE grid search). AWQ's clamp cuts only the longer side of a
      skewed group until ``p max|w|`` reaches the shorter one; an asymmetric grid can give up
      a little of both ends instead.

    ``shrink_both`` (default: the grid is asymmetric) adds the second family.
    ``p = 1`` (no clipping) is always a candidate, so the range is never worse than the
    min/max grid on the calibration inputs' block-diagonal error."""
    import torch

    ft = _search_dtype(w, gram)
    W = w.detach().to(ft)
    rows, cols = W.shape
    gs = cols if group_size is None else group_size
    n_groups = cols // gs
    Wg = W.reshape(rows, n_groups, gs)
    G = gram.to(ft)
    if col_weights is None:
        blocks = torch.stack(
            [G[g * gs : (g + 1) * gs, g * gs : (g + 1) * gs] for g in range(n_groups)]
        )
    else:
        cw = col_weights.to(ft).reshape(n_groups, gs)
    wmin = Wg.amin(dim=-1).clamp(max=0.0)
    wmax = Wg.amax(dim=-1).clamp(min=0.0)
    amax = torch.maximum(-wmin, wmax)
    best_err = torch.full((rows, n_groups), float("inf"), dtype=ft)
    best_lo, best_hi = wmin.clone(), wmax.clone()
    for k in range(int(max_shrink * grid)):
        p = 1 - k / grid
        families = [(torch.maximum(wmin, -p * amax), torch.minimum(wmax, p * amax))]
        if (not sym if shrink_both is None else shrink_both) and k:
            families.append((p * wmin, p * wmax))
        for lo, hi in families:
            flat = _clamped(Wg, lo, hi)
            s, z = grid_params(flat, bits, sym)
            q = s[:, None] * (to_codes(flat, s[:, None], z[:, None], bits) - z[:, None])
            e = Wg - q.reshape(rows, n_groups, gs)
            if col_weights is None:
                err = torch.einsum("rgi,gij,rgj->rg", e, blocks, e)
            else:
                err = (e.pow(2) * cw[None]).sum(dim=-1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo, best_lo)
            best_hi = torch.where(better, hi, best_hi)
    return best_lo.to(w.dtype), best_hi.to(w.dtype)


def clipped_grid(
    w,
    gram,
    *,
    bits: int,
    group_size: int | None,
    sym: bool,
    grid: int = 20,
    max_shrink: float = 0.5,
    col_weights=None,
):
    """``(scales, zeros) [out, groups]``: the grid of every (row, group) after the range
    search (``search_range``), for a rounding that keeps the original weights as its target
    (GPTQ with a fixed grid: the weights beyond the range clamp to the end codes, and their
    error is spread over the columns not yet rounded)."""

    lo, hi = search_range(
        w,
        gram,
        bits=bits,
        group_size=group_size,
        sym=sym,
        grid=grid,
        max_shrink=max_shrink,
        col_weights=col_weights,
    )
    W = w.detach().double()  # grid in float64
    rows, cols = W.shape
    n_groups = lo.shape[1]
    Wg = W.reshape(rows, n_groups, cols // n_groups)
    scales, zeros = grid_params(_clamped(Wg, lo.double(), hi.double()), bits, sym)
    return scales.reshape(rows, n_groups), zeros.reshape(rows, n_groups)


def quantize_clipped(
    w,
    gram,
    *,
    bits: int,
    group_size: int | None,
    sym: bool,
    clip: bool,
    grid: int = 20,
    max_shrink: float = 0.5,
) -> GPTQResult:
    """The final rounding of an (already scaled) weight: clipping search, then RTN; the
    result's ``rel_error`` is the output error relative to the output energy."""
    if clip:
        w = apply_clip(
            w,
            search_clip(
                w,
                gram,
                bits=bits,
                group_size=group_size,
                sym=sym,
                grid=grid,
                max_shrink=max_shrink,
            ),
            group_size,
        )
    res = rtn_quantize(w, bits=bits, group_size=group_size, sym=sym)
    return res


def awq_quantize_one(
    w,
    act_mean,
    gram,
    *,
    bits: int = 4,
    group_size: int | None = 64,
    sym: bool = True,
    grid: int = 20,
    clip: bool = True,
    max_shrink: float = 0.5,
):
    """AWQ on a single linear (scale search, then clipping and rounding of ``w * s``).
    Returns ``(result on the scaled weights, s)``: the layer computes ``(x / s) Q^T``, i.e.
    its effective weight is ``result.weight / s``."""
    res = search_scale([w], act_mean, gram, bits=bits, group_size=group_size, sym=sym, grid=grid)
    s = res.scale.double()
    g = gram.double() / (s[:, None] * s[None, :])
    q = quantize_clipped(
        w.double() * s[None, :],
        g,
        bits=bits,
        group_size=group_size,
        sym=sym,
        clip=clip,
        grid=grid,
        max_shrink=max_shrink,
    )
    return q, s


__all__ = [
    "ScaleSearch",
    "apply_clip",
    "awq_quantize_one",
    "candidate_scale",
    "clipped_grid",
    "fake_quantize",
    "output_error",
    "quantize_clipped",
    "search_clip",
    "search_range",
    "search_scale",
]
