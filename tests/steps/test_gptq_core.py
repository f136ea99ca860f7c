"""GPTQ on one layer against a straightforward implementation of the paper's algorithm,
packing, and the int4 CPU linear."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from greenllm.steps.gptq_core import (  # noqa: E402
    dequantize,
    gptq_quantize,
    grid_params,
    pack_int4,
    rtn_quantize,
    to_codes,
    unpack_int4,
)


def _layer(seed=0, rows=48, cols=128, n=512):
    g = torch.Generator().manual_seed(seed)
    # correlated inputs with a few strong channels, as real activations have
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    X = torch.randn(n, cols, generator=g) @ mix
    X[:, :4] *= 6.0
    W = torch.randn(rows, cols, generator=g) * 0.05
    H = 2.0 * X.T @ X / n
    return W, H, X


def _reference(W, H, bits, group_size, sym, damp=0.01):
    """Algorithm 1 of the GPTQ paper written plainly: one column at a time, every remaining
    column updated at once, group parameters from the current weights at a group's start."""
    W = W.clone()
    H = H.clone()
    cols = W.shape[1]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    Q = torch.zeros_like(W)
    s = z = None
    if group_size is None:
        s, z = grid_params(W, bits, sym)
    for j in range(cols):
        if group_size is not None and j % group_size == 0:
            s, z = grid_params(W[:, j : j + group_size], bits, sym)
        c = torch.clamp(torch.round(W[:, j] / s) + z, 0, 2**bits - 1)
        Q[:, j] = s * (c - z)
        err = (W[:, j] - Q[:, j]) / Hinv[j, j]
        W[:, j:] -= torch.outer(err, Hinv[j, j:])
    return Q


@pytest.mark.parametrize(
    "bits,group_size,sym",
    [(4, 32, True), (4, 64, False), (3, None, True), (8, 64, True), (2, 32, False)],
)
def test_gptq_on_one_layer_equals_the_papers_algorithm(bits, group_size, sym):
    W, H, _ = _layer(1)
    W, H = W.double(), H.double()  # float64 on both sides: no rounding ties decided by noise
    if sym:
        # The symmetric min/max grid puts a row's extreme at exactly +-(2^(bits-1) - 0.5)
        # steps: a true tie. On the positive side both roundings clamp to the same code; on
        # the negative side the last ulp of the (mathematically equal, differently summed)
        # updated weights decides it, and one flip cascades through the later columns (seen
        # on an AVX-512 CPU). A dominant positive weight at each group's start keeps every
        # group's extreme positive, so the comparison below stays exact.
        W[:, ::32] = 4 * W.abs().max()
    got = gptq_quantize(W, H, bits=bits, group_size=group_size, sym=sym, blocksize=64)
    ref = _reference(W, H, bits, group_size, sym)
    torch.testing.assert_close(got.weight, ref, atol=1e-9, rtol=0)
    # the integers and parameters describe exactly the returned weights
    torch.testing.assert_close(
        dequantize(got.codes, got.scales, got.zeros, got.g_idx), got.weight, atol=1e-6, rtol=0
    )
    assert int(got.codes.max()) <= 2**bits - 1


def _reference_act_order(W, H, bits, group_size, sym, damp=0.01):
    """Act-order with static groups, plainly: group parameters from the original weights'
    contiguous groups, columns visited in order of decreasing diag(H), each rounded on its
    own (original) group's grid, the error spread over the columns not yet visited."""
    cols = W.shape[1]
    params = [grid_params(W[:, g : g + group_size], bits, sym) for g in range(0, cols, group_size)]
    perm = torch.argsort(torch.diag(H), descending=True)
    Wp, Hp = W[:, perm].clone(), H[perm][:, perm].clone()
    Hp += damp * torch.mean(torch.diag(Hp)) * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.linalg.inv(Hp), upper=True)
    Qp = torch.zeros_like(Wp)
    for j in range(cols):
        s, z = params[int(perm[j]) // group_size]
        c = torch.clamp(torch.round(Wp[:, j] / s) + z, 0, 2**bits - 1)
        Qp[:, j] = s * (c - z)
        err = (Wp[:, j] - Qp[:, j]) / Hinv[j, j]
        Wp[:, j:] -= torch.outer(err, Hinv[j, j:])
    return Qp[:, torch.argsort(perm)]


@pytest.mark.parametrize("sym", [True, False])
def test_act_order_with_static_groups_equals_the_plain_algorithm(sym):
    W, H, _ = _layer(9)
    W, H = W.double(), H.double()
    got = gptq_quantize(
        W, H, bits=4, group_size=32, sym=sym, act_order=True, static_groups=True, blocksize=64
    )
    torch.testing.assert_close(
        got.weight, _reference_act_order(W, H, 4, 32, sym), atol=1e-9, rtol=0
    )


def test_lazy_blocks_do_not_change_the_result():
    W, H, _ = _layer(2)
    a = gptq_quantize(W, H, group_size=32, blocksize=32)
    b = gptq_quantize(W, H, group_size=32, blocksize=128)
    torch.testing.assert_close(a.weight, b.weight, atol=2e-5, rtol=0)


def test_gptq_loses_less_of_the_layer_output_than_round_to_nearest():
    W, H, X = _layer(3)
    for sym in (True, False):
        gq = gptq_quantize(W, H, bits=4, group_size=32, sym=sym)
        rtn = rtn_quantize(W, bits=4, group_size=32, sym=sym)
        out_err = lambda Q: float(((X @ (W - Q).T) ** 2).sum())  # noqa: E731
        assert out_err(gq.weight) < 0.7 * out_err(rtn.weight)
        assert 0 < gq.rel_error < 1


def test_act_order_with_static_groups_keeps_groups_contiguous_and_helps():
    W, H, X = _layer(4)
    plain = gptq_quantize(W, H, group_size=32, static_groups=True)
    ordered = gptq_quantize(W, H, group_size=32, act_order=True, static_groups=True)
    assert torch.equal(ordered.g_idx, torch.arange(W.shape[1]) // 32)
    torch.testing.assert_close(
        dequantize(ordered.codes, ordered.scales, ordered.zeros, ordered.g_idx),
        ordered.weight,
        atol=1e-6,
        rtol=0,
    )
    assert ordered.rel_error <= plain.rel_error * 1.05
    with pytest.raises(ValueError, match="static_groups"):
        gptq_quantize(W, H, group_size=32, act_order=True)


def test_sparse_and_quantized_in_one_pass():
    W, H, _ = _layer(5)
    both = gptq_quantize(W, H, bits=4, group_size=32, sparsity=0.5)
    zero = both.weight == 0
    assert abs(float(zero.float().mean()) - 0.5) < 0.02
    nm = gptq_quantize(W, H, bits=4, group_size=32, nm=(2, 4))
    groups = (nm.weight != 0).reshape(W.shape[0], -1, 4).sum(-1)
    assert int(groups.max()) <= 2
    with pytest.raises(ValueError, match="blocksize"):
        gptq_quantize(W, H, nm=(2, 3), group_size=32, blocksize=64)


def test_symmetric_4bit_is_the_q4_0_form():
    W, _, _ = _layer(6)
    r = rtn_quantize(W, bits=4, group_size=32, sym=True)
    assert torch.all(r.zeros == 8)  # (q - 8) * d, d = the group's scale
    c = to_codes(W[:, :32], r.scales[:, :1], r.zeros[:, :1], 4)
    assert torch.equal(c.to(torch.uint8), r.codes[:, :32])


def test_packing_round_trips_bit_exactly():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (7, 64), generator=g, dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (7, 32) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), codes)
    assert int(packed[0, 0]) == int(codes[0, 0]) | (int(codes[0, 1]) << 4)
    with pytest.raises(ValueError):
        pack_int4(torch.full((2, 4), 16, dtype=torch.uint8))


@pytest.mark.parametrize("sym", [True, False])
def test_int4_linear_runs_the_cpu_kernel_and_matches_the_dequantized_weights(sym):
    from greenllm.steps.int4_linear import Int4Linear

    W, H, X = _layer(7, rows=64, cols=128)
    q = gptq_quantize(W, H, bits=4, group_size=32, sym=sym)
    bias = torch.randn(64) * 0.01
    mod = Int4Linear.from_quantized(q.codes, q.scales, q.zeros, 32, bias=bias)
    assert "int4pack" in mod.kernel
    torch.testing.assert_close(mod.dequantized_weight(), q.weight, atol=1e-6, rtol=0)
    x = X[:8]
    ref = x @ q.weight.T + bias
    y = mod(x)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    # bf16 activations: relative error of the order of bf16's precision
    assert float((y - ref).abs().max()) <= 2e-2 * float(ref.abs().max())
    y3 = mod(x.reshape(2, 4, 128))
    torch.testing.assert_close(y3.reshape(8, 64), y, atol=1e-5, rtol=0)


def test_int4_linear_without_a_kernel_group_size_uses_the_dequantized_matmul():
    from greenllm.steps.int4_linear import Int4Linear

    W, H, X = _layer(8, rows=16, cols=96)
    q = gptq_quantize(W, H, bits=4, group_size=None)
    mod = Int4Linear.from_quantized(q.codes, q.scales, q.zeros, 96)
    assert mod.kernel == "dequantized matmul"
    torch.testing.assert_close(mod(X[:4]), X[:4] @ q.weight.T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sym", [True, False])
def test_a_fixed_grid_equal_to_the_static_one_gives_the_same_result(sym):
    W, H, _ = _layer(5)
    W, H = W.double(), H.double()
    static = gptq_quantize(W, H, bits=4, group_size=32, sym=sym, static_groups=True)
    s = torch.empty(W.shape[0], 4, dtype=torch.float64)
    z = torch.empty_like(s)
    for g in range(4):
        s[:, g], z[:, g] = grid_params(W[:, g * 32 : (g + 1) * 32], 4, sym)
    fixed = gptq_quantize(W, H, bits=4, group_size=32, sym=sym, grid=(s, z))
    assert torch.equal(fixed.codes, static.codes)
    assert torch.equal(fixed.weight, static.weight)
    with pytest.raises(ValueError, match="grid"):
        gptq_quantize(W, H, bits=4, group_size=32, sym=sym, grid=(s[:, :2], z[:, :2]))


def test_a_clipped_grid_is_used_as_given_and_lowers_the_output_error():
    from greenllm.steps.awq_core import clipped_grid
    from greenllm.steps.gptq_core import rounding_weights

    W, H, X = _layer(6)
    W, H = W.double(), H.double()
    W[:, 7] *= 8.0  # a column of large weights: min/max grids waste their steps on it
    wts = rounding_weights(H, act_order=False)
    s, z = clipped_grid(W, H, bits=4, group_size=32, sym=False, col_weights=wts)
    res = gptq_quantize(W, H, bits=4, group_size=32, sym=False, grid=(s, z))
    g_idx = torch.arange(128) // 32
    torch.testing.assert_close(res.weight, dequantize(res.codes, s, z, g_idx))
    plain = gptq_quantize(W, H, bits=4, group_size=32, sym=False, static_groups=True)
    assert res.rel_error < plain.rel_error


def test_rounding_weights_are_the_conditioned_hessian_diagonal():
    from greenllm.steps.gptq_core import rounding_weights

    _, H, _ = _layer(7, cols=16)
    H = H.double()
    Hd = H + 0.01 * torch.mean(torch.diag(H)) * torch.eye(16, dtype=H.dtype)
    wts = rounding_weights(H, act_order=False, dampening=0.01)
    # GPTQ's last column has nothing left to compensate it: its cost is the plain diagonal
    assert float(wts[-1]) == pytest.approx(float(Hd[-1, -1]), rel=1e-10)
    # the first can be compensated by all the others: 1 / (H^-1)_11, the Schur complement
    assert float(wts[0]) == pytest.approx(1.0 / float(torch.linalg.inv(Hd)[0, 0]), rel=1e-10)
    # a column in the middle: conditioned on the columns after it only
    j = 5
    rest = Hd[j:, j:]
    assert float(wts[j]) == pytest.approx(1.0 / float(torch.linalg.inv(rest)[0, 0]), rel=1e-10)
    # with act-order the same numbers come from the permuted order, returned unpermuted
    perm = torch.argsort(torch.diag(H), descending=True)
    by_order = rounding_weights(H[perm][:, perm], act_order=False, dampening=0.01)
    torch.testing.assert_close(rounding_weights(H, act_order=True)[perm], by_order)
