"""GPTQ on one weight matrix, optionally pruned in the same pass (SparseGPT + GPTQ).

Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers" (ICLR 2023), Algorithm 1: the columns of ``W [out, in]`` are quantized one at a
time, left to right in blocks; the rounding error of each column, divided by the diagonal of
the upper Cholesky factor of ``H^-1`` (``H = 2 X^T X``, the layer's input Hessian), is spread
over the columns not yet quantized, so they compensate for it. Blocks defer the update of the
columns to their right to one matrix product (the "lazy batch" update).

Options, as the reference implementations name them:
- ``bits`` 2/3/4/8, ``group_size`` (None = one scale per output row, else a scale and zero per
  ``group_size`` input columns), ``sym`` (zero fixed at the grid's middle, ``2^(bits-1)``; at
  4 bits with group 32 that is GGUF ``Q4_0``'s ``(q - 8) * d``) or asymmetric (min/max grid
  that always contains 0, as the reference does);
- ``act_order`` (``desc_act``): columns in order of decreasing Hessian diagonal, with
  ``static_groups``: group parameters computed from the original weights before any update, so
  the groups stay contiguous along the input dimension (the layout the int4 kernels need);
- ``dampening``: ``damp * mean(diag H)`` added to the diagonal, raised 10x until ``H`` is
  positive definite (shared with SparseGPT: ``_inverse_cholesky``);
- ``sparsity`` / ``nm``: SparseGPT's mask chosen in the same column loop (Frantar & Alistarh
  2023, section 3.5, "joint sparsification and quantization"): pruned weights are exactly 0,
  kept weights lie on the grid.

torch is imported inside the functions.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .prune_unstructured import _inverse_cholesky, nm_keep, smallest_keep


@contextmanager
def _single_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass
class GPTQResult:
    """The quantized matrix as integers and parameters, and as float weights.

    ``codes`` [out, in] uint8 in ``0 .. 2^bits - 1``; ``scales`` / ``zeros`` [out, groups]
    (zeros are integers on the grid, stored as float); ``g_idx`` [in]: the group of each input
    column; ``weight`` = ``scales[:, g_idx] * (codes - zeros[:, g_idx])`` (times the sparsity
    mask, which is already in ``codes == zero``); ``rel_error`` = ``tr(E H E^T) / tr(W H W^T)``,
    the share of the layer's output energy on the calibration data that the rounding (and
    pruning) lost."""

    codes: Any
    scales: Any
    zeros: Any
    g_idx: Any
    weight: Any
    rel_error: float
    bits: int
    group_size: int | None
    sym: bool


def grid_params(w, bits: int, sym: bool):
    """Per-row (scale, zero) of the ``bits``-bit grid for ``w [rows, cols]`` (min/max, as the
    GPTQ reference's quantizer: the range always contains 0; symmetric: zero = 2^(bits-1))."""
    import torch

    maxq = 2**bits - 1
    lo = torch.clamp(w.amin(dim=1), max=0.0)
    hi = torch.clamp(w.amax(dim=1), min=0.0)
    if sym:
        amax = torch.maximum(lo.abs(), hi)
        scale = 2.0 * amax / maxq
        zero = torch.full_like(scale, float(2 ** (bits - 1)))
    else:
        scale = (hi - lo) / maxq
        zero = torch.round(-lo / torch.where(scale == 0, torch.ones_like(scale), scale))
    dead = scale == 0
    scale = torch.where(dead, torch.ones_like(scale), scale)
    if not sym:
        zero = torch.where(dead, torch.zeros_like(zero), zero)
    return scale, zero


def to_codes(w, scale, zero, bits: int):
    """Integer codes of ``w`` on the grid (``scale``, ``zero`` broadcast along rows)."""
    import torch

    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def _factor(H, *, act_order: bool, dampening: float):
    """GPTQ's preparation of a Hessian: ``(dead, perm, U)``, the columns with a zero diagonal
    (set to 1 on a copy, so the factor exists), the act-order permutation (largest diagonal
    first; None without act-order) and the upper Cholesky factor of ``(H + damp I)^-1`` in
    that column order. One place for ``gptq_quantize`` and ``rounding_weights``."""
    import torch

    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else None
    if perm is not None:
        H = H[perm][:, perm]
    return dead, perm, _inverse_cholesky(H, dampening)


def rounding_weights(hessian, *, act_order: bool, dampening: float = 0.01):
    """GPTQ's cost per unit of squared rounding error of each input column, ``1 / d_j^2``
    (``d`` the diagonal of the upper Cholesky factor of ``(H + damp I)^-1`` in GPTQ's column
    order), in the original column order.

    GPTQ spreads the error of column ``j`` over the columns after it; what is left is
    ``err_j^2 / d_j^2`` of the layer's output error, with ``1 / d_j^2`` the Hessian diagonal
    conditioned on the columns still free to compensate: small for the columns GPTQ takes
    first, ``H_jj`` for the last. A grid chosen for this cost is chosen for GPTQ's rounding
    (the full ``H``-block error assumes no compensation)."""
    import torch

    # in the dtype gptq_quantize factors the Hessian in (float32 for a real model's float32
    # Hessian; float64 in the exact tests), so the order and the factor are GPTQ's own
    ft = torch.float64 if hessian.dtype == torch.float64 else torch.float32
    dead, perm, U = _factor(hessian.detach().to(ft), act_order=act_order, dampening=dampening)
    d = torch.empty(U.shape[0], dtype=torch.float64)
    d[slice(None) if perm is None else perm] = torch.diag(U).to(torch.float64)
    wts = 1.0 / d.pow(2)
    wts[dead] = 0.0
    return wts


def gptq_quantize(
    weight,
    hessian,
    *,
    bits: int = 4,
    group_size: int | None = 64,
    sym: bool = True,
    act_order: bool = False,
    static_groups: bool = False,
    blocksize: int = 128,
    dampening: float = 0.01,
    sparsity: float = 0.0,
    nm: tuple[int, int] | None = None,
    grid: tuple[Any, Any] | None = None,
) -> GPTQResult:
    """GPTQ (and, with ``sparsity`` or ``nm``, SparseGPT in the same pass) on one matrix.

    ``grid``: precomputed ``(scales, zeros)`` ``[out, groups]`` (for example from a clipping
    search on the original weights); they are used as static groups, so ``W`` is rounded on
    that grid (values beyond it clamp to the end codes) and only the rounding is GPTQ's."""
    import torch

    if group_size is not None and weight.shape[1] % group_size:
        raise ValueError(
            f"{weight.shape[1]} input columns are not a multiple of group_size {group_size}"
        )
    if act_order and group_size is not None and not static_groups:
        raise ValueError(
            "act_order with groups needs static_groups=True (groups must stay "
            "contiguous along the input dimension)"
        )
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"blocksize {blocksize} is not a multiple of the N:M group {nm[1]}")
    ft = torch.float64 if weight.dtype == torch.float64 else torch.float32  # float64 for checks
    W0 = weight.detach().to(ft)
    W = W0.clone()
    H0 = hessian.detach().to(ft)
    rows, cols = W.shape
    dead, perm, U = _factor(H0, act_order=act_order, dampening=dampening)
    W[:, dead] = 0.0

    n_groups = 1 if group_size is None else cols // group_size
    scales = torch.empty(rows, n_groups, dtype=ft)
    zeros = torch.empty(rows, n_groups, dtype=ft)
    g_idx = (
        torch.zeros(cols, dtype=torch.long)
        if group_size is None
        else torch.arange(cols) // group_size
    )
    if grid is not None:
        gs_, gz_ = grid
        if tuple(gs_.shape) != (rows, n_groups) or tuple(gz_.shape) != (rows, n_groups):
            raise ValueError(
                f"grid: scales/zeros must be [{rows}, {n_groups}], got "
                f"{tuple(gs_.shape)} / {tuple(gz_.shape)}"
            )
        scales.copy_(gs_.to(ft))
        zeros.copy_(gz_.to(ft))
    elif group_size is None:
        scales[:, 0], zeros[:, 0] = grid_params(W, bits, sym)
    elif static_groups or act_order:
        for g in range(n_groups):
            scales[:, g], zeros[:, g] = grid_params(
                W[:, g * group_size : (g + 1) * group_size], bits, sym
            )

    if perm is not None:
        W = W[:, perm]
    # columns are rows of these transposed buffers: every per-column update is contiguous
    QT = torch.empty(cols, rows, dtype=ft)
    codesT = torch.zeros(cols, rows, dtype=torch.uint8)
    fresh_groups = group_size is not None and not (static_groups or act_order or grid is not None)
    for b0 in range(0, cols, blocksize):
        b1 = min(b0 + blocksize, cols)
        W1 = W[:, b0:b1].t().contiguous()  # [block, rows]
        U1 = U[b0:b1, b0:b1]
        d = torch.diag(U1)
        Err1 = torch.zeros_like(W1)
        keep1 = None  # [block, rows]
        if sparsity > 0 and nm is None:
            keep1 = (
                smallest_keep(W1.t().pow(2) / d.pow(2)[None, :], sparsity, per_row=False)
                .t()
                .contiguous()
            )
        elif nm is not None:
            keep1 = torch.ones_like(W1, dtype=torch.bool)
        with _single_thread():  # thousands of small ops: threads only add sync cost
            for j in range(b1 - b0):
                col = b0 + j
                orig = int(perm[col]) if perm is not None else col
                if fresh_groups and col % group_size == 0:
                    g = col // group_size
                    ahead = torch.cat([W1[j:].t(), W[:, b1:]], dim=1)[:, :group_size]
                    scales[:, g], zeros[:, g] = grid_params(ahead, bits, sym)
                if nm is not None and j % nm[1] == 0:
                    sl = slice(j, j + nm[1])
                    keep1[sl] = nm_keep(W1[sl].t().pow(2) / d[sl].pow(2)[None, :], *nm).t()
                g = int(g_idx[orig])
                s, z = scales[:, g], zeros[:, g]
                w = W1[j]
                c = to_codes(w, s, z, bits)
                if keep1 is not None:
                    c = torch.where(keep1[j], c, z)  # a pruned weight is the grid's zero
                q = s * (c - z)
                codesT[orig] = c.to(torch.uint8)
                QT[col] = q
                err = (w - q) / d[j]
                W1[j:].addr_(U1[j, j:], err, alpha=-1.0)
                Err1[j] = err
        W[:, b1:] -= Err1.t() @ U[b0:b1, b1:]
    Q = QT.t()
    codes = codesT.t().contiguous()
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    Q = Q.contiguous()
    E = W0 - Q
    denom = float(((W0 @ H0) * W0).sum())
    rel = float(((E @ H0) * E).sum()) / denom if denom > 0 else 0.0
    return GPTQResult(codes, scales, zeros, g_idx, Q.to(weight.dtype), rel, bits, group_size, sym)


def rtn_quantize(
    weight, *, bits: int = 4, group_size: int | None = 64, sym: bool = True
) -> GPTQResult:
    """Round-to-nearest on the same grid (the data-free baseline GPTQ is compared with)."""
    import torch

    W = weight.detach().float()
    rows, cols = W.shape
    gs = cols if group_size is None else group_size
    n_groups = cols // gs
    Wg = W.reshape(rows, n_groups, gs)
    scales = torch.empty(rows, n_groups)
    zeros = torch.empty(rows, n_groups)
    for g in range(n_groups):
        scales[:, g], zeros[:, g] = grid_params(Wg[:, g], bits, sym)
    codes = to_codes(Wg, scales[..., None], zeros[..., None], bits)
    Q = (scales[..., None] * (codes - zeros[..., None])).reshape(rows, cols)
    g_idx = torch.arange(cols) // gs
    return GPTQResult(
        codes.reshape(rows, cols).to(torch.uint8),
        scales,
        zeros,
        g_idx,
        Q.to(weight.dtype),
        float("nan"),
        bits,
        group_size,
        sym,
    )


def dequantize(codes, scales, zeros, g_idx):
    """Float weights from codes and group parameters."""
    return scales[:, g_idx] * (codes.float() - zeros[:, g_idx])


def pack_int4(codes):
    """Two 4-bit codes per byte along the input dimension: ``[out, in] -> [out, in / 2]``,
    column ``2i`` in the low nibble, ``2i + 1`` in the high one."""
    import torch

    if codes.shape[-1] % 2:
        raise ValueError("an odd number of input columns cannot be packed two per byte")
    c = codes.to(torch.uint8)
    if int(c.max()) > 15:
        raise ValueError("codes above 15 are not 4-bit")
    return (c[..., 0::2] | (c[..., 1::2] << 4)).contiguous()


def unpack_int4(packed):
    """Inverse of ``pack_int4``."""
    import torch

    out = torch.empty(*packed.shape[:-1], packed.shape[-1] * 2, dtype=torch.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out
