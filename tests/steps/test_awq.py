"""AWQ: the scale and clipping searches on one layer against a plain reference written here
from the paper, a planted outlier channel, exact folding, and the method on a tiny model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import greenllm  # noqa: E402
from greenllm.config import ConfigError, parse_config  # noqa: E402
from greenllm.steps.awq_core import (  # noqa: E402
    awq_quantize_one,
    search_clip,
    search_scale,
)
from greenllm.steps.gptq_core import rtn_quantize  # noqa: E402
from greenllm.steps.quantize import QuantizeConfig  # noqa: E402


def _layer(seed=0, rows=32, cols=128, n=256, outlier=None):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, cols, generator=g, dtype=torch.float64)
    X *= torch.rand(cols, generator=g, dtype=torch.float64) + 0.5  # uneven channels
    if outlier is not None:
        X[:, outlier] *= 40.0
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.05
    return W, X


def _out_err(X, W, Q):
    return float(((X @ (W - Q).T) ** 2).sum())


def _reference_scale_search(W, X, bits, group_size, sym, grid=20):
    """The paper's search on one linear, literally: for alpha on the grid, s = mean|x|^alpha
    (normalised), quantize W * s, undo the scale, run the layer on X, keep the best MSE."""
    x_mean = X.abs().mean(0)
    best = None
    losses = []
    for k in range(grid):
        alpha = k / grid
        s = x_mean.clamp(min=1e-4).pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        Q = rtn_quantize(W * s, bits=bits, group_size=group_size, sym=sym).weight / s
        loss = float(((X @ W.T - X @ Q.T) ** 2).mean())
        losses.append(loss)
        if best is None or loss < best[0]:
            best = (loss, alpha, s)
    return best[1], best[2], losses


@pytest.mark.parametrize("sym,group_size", [(True, 32), (False, 64), (False, None)])
def test_scale_search_equals_the_reference_on_one_layer(sym, group_size):
    W, X = _layer(1, outlier=5)
    got = search_scale([W], X.abs().mean(0), X.T @ X, bits=4, group_size=group_size, sym=sym)
    alpha, s, losses = _reference_scale_search(W, X, 4, group_size, sym)
    assert got.alpha == alpha
    torch.testing.assert_close(got.scale, s, atol=1e-12, rtol=1e-12)
    # the same loss curve, up to the constant 1 / (tokens * rows) of a mean
    scaled = [e / (X.shape[0] * W.shape[0]) for e in got.errors]
    torch.testing.assert_close(torch.tensor(scaled), torch.tensor(losses), rtol=1e-9, atol=0)


def test_clip_search_equals_a_per_group_reference():
    W, X = _layer(2, rows=8, cols=64)
    gs, grid, shrink = 32, 20, 0.5
    got = search_clip(W, X.T @ X, bits=4, group_size=gs, sym=False, grid=grid, max_shrink=shrink)
    for r in range(W.shape[0]):
        for g in range(W.shape[1] // gs):
            w = W[r, g * gs : (g + 1) * gs]
            x = X[:, g * gs : (g + 1) * gs]
            best = None
            for k in range(int(shrink * grid)):
                m = w.abs().max() * (1 - k / grid)
                q = rtn_quantize(w.clamp(-m, m)[None, :], bits=4, group_size=gs, sym=False).weight
                err = float(((x @ w - x @ q[0]) ** 2).sum())
                if best is None or err < best[0]:
                    best = (err, m)
            assert float(got[r, g]) == pytest.approx(float(best[1]), rel=1e-12)


def test_awq_protects_a_planted_outlier_channel():
    W, X = _layer(3, outlier=7)
    G = X.T @ X
    rtn = rtn_quantize(W, bits=4, group_size=64, sym=True).weight
    q, s = awq_quantize_one(W, X.abs().mean(0), G, bits=4, group_size=64, sym=True)
    eff = q.weight / s
    # the salient channel's weights are scaled up relative to the others
    assert float(s[7]) == float(s.max()) and float(s[7] / s.median()) > 2.0
    # the outlier channel's weights are rounded far more finely, and the output error drops
    assert float((W - eff)[:, 7].abs().mean()) < 0.5 * float((W - rtn)[:, 7].abs().mean())
    assert _out_err(X, W, eff) < 0.7 * _out_err(X, W, rtn)
    # without clipping it is still never worse than RTN on the calibration inputs
    q0, s0 = awq_quantize_one(W, X.abs().mean(0), G, bits=4, group_size=64, sym=True, clip=False)
    assert _out_err(X, W, q0.weight / s0) <= _out_err(X, W, rtn) * (1 + 1e-12)


def _tiny(kv_heads=4):
    from greenllm.testing import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer(
        0, hidden_size=128, intermediate_size=256, num_kv_heads=kv_heads
    )


def test_folding_scales_does_not_change_the_model():
    from greenllm.steps.quant_awq import _parts, fold_groups, fold_scale

    for kv in (4, 2):  # square v/o (folded) and grouped-query attention (v -> o skipped)
        model, tok = _tiny(kv)
        ids = tok("folding must be exact in float arithmetic", return_tensors="pt").input_ids
        model = model.double()
        with torch.no_grad():
            ref = model(ids).logits
        g = torch.Generator().manual_seed(0)
        for i, layer in enumerate(model.model.layers):
            groups = fold_groups(_parts(layer, i))
            assert ("v_proj" in [n for n, _, _ in groups]) == (kv == 4)
            for _, producer, consumers in groups:
                cols = _parts(layer, i)[consumers[0]].in_features
                s = torch.rand(cols, generator=g, dtype=torch.float64) * 3 + 0.2
                fold_scale(producer, [_parts(layer, i)[c] for c in consumers], s)
        with torch.no_grad():
            out = model(ids).logits
        torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
        assert not torch.allclose(
            model.model.layers[0].input_layernorm.weight, torch.ones(128).double()
        )


def _awq(**kw):
    spec = {"method": "awq", "group_size": 32, "calibration": {"samples": 8, "seq_len": 64}, **kw}
    return ("quantize", parse_config(QuantizeConfig, spec, "quantize"))


def test_awq_on_a_tiny_model_packs_the_decoder_linears():
    from greenllm.builtin_data import resolve_data
    from greenllm.steps.int4_linear import Int4Linear

    model, tok = _tiny(4)
    ids = tok("The quick brown fox jumps over the lazy dog. " * 3, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model(ids).logits
    calib = str(resolve_data("builtin:wiki-sample", "calibration"))
    model, steps = greenllm.compress(model, [_awq(sym=False)], tokenizer=tok, calibration=calib)
    packed = [n for n, m in model.named_modules() if isinstance(m, Int4Linear)]
    assert len(packed) == 2 * 7
    st = steps[0].stats
    assert set(st["reconstruction_error"]) == set(packed)
    assert all(0 <= e < 0.1 for e in st["reconstruction_error"].values())
    assert len(st["scale_alpha"]) == 2 * 4 and st["calibration_s"] > 0
    with torch.no_grad():
        out = model(ids).logits
    assert float((out - ref).abs().max()) < 0.25 * float(ref.abs().max())


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"desc_act": True}, "desc_act"),
        ({"rounding": "gptq2"}, "rounding"),
        ({"sparsity": 0.5}, "sparsity"),
        ({"scale_grid": 0}, "scale_grid"),
    ],
)
def test_awq_settings_are_validated(bad, field):
    with pytest.raises(ConfigError, match=field):
        _awq(**bad)


def test_an_unknown_method_suggests_awq():
    with pytest.raises(ConfigError, match="awq"):
        parse_config(QuantizeConfig, {"method": "awk"}, "quantize")


def test_awq_with_gptq_rounding_loses_less_than_round_to_nearest():
    from greenllm.builtin_data import resolve_data

    calib = str(resolve_data("builtin:wiki-sample", "calibration"))
    err = {}
    for rounding in ("rtn", "gptq"):
        model, tok = _tiny(2)
        extra = {"desc_act": True, "static_groups": True} if rounding == "gptq" else {}
        model, steps = greenllm.compress(
            model, [_awq(sym=True, rounding=rounding, **extra)], tokenizer=tok, calibration=calib
        )
        st = steps[0].stats
        assert st["rounding"] == rounding and st["clip"] is True
        err[rounding] = st["reconstruction_error_mean"]
    assert err["gptq"] < err["rtn"]


def test_clip_defaults_per_method():
    assert QuantizeConfig(method="awq").clip_for("awq") is True
    assert QuantizeConfig(method="gptq").clip_for("gptq") is False
    assert QuantizeConfig(method="gptq", clip=True).clip_for("gptq") is True
    with pytest.raises(ConfigError, match="rounding"):
        QuantizeConfig(method="gptq", rounding="gptq")
    for name, value in (("clip", True), ("sequential", False)):
        with pytest.raises(ConfigError, match=f"^{name}: .*int8_weight"):
            QuantizeConfig(method="int8_weight", **{name: value})
    assert QuantizeConfig(method="rtn").clip is None  # defaults stay accepted everywhere


def _clamped_rtn(w, lo, hi, gs):
    q = rtn_quantize(w.clamp(float(lo), float(hi))[None, :], bits=4, group_size=gs, sym=False)
    return q.weight[0]


@pytest.mark.parametrize("weighted", [False, True])
def test_range_search_equals_a_per_group_reference(weighted):
    """Both candidate families (AWQ's symmetric clamp, both ends shrunk together), each group
    scored on its own: its block of the Gram matrix, or a per-column weighted error."""
    from greenllm.steps.awq_core import search_range

    W, X = _layer(3, rows=8, cols=64)
    W[:, 3] += 0.2  # skewed groups: the two families then differ
    gs, grid, shrink = 32, 20, 0.5
    gram = X.T @ X
    cw = torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lo, hi = search_range(
        W,
        gram,
        bits=4,
        group_size=gs,
        sym=False,
        grid=grid,
        max_shrink=shrink,
        col_weights=cw if weighted else None,
    )
    for r in range(W.shape[0]):
        for g in range(W.shape[1] // gs):
            sl = slice(g * gs, (g + 1) * gs)
            w = W[r, sl]
            wmin, wmax = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
            amax = max(-wmin, wmax)
            best = None
            for k in range(int(shrink * grid)):
                p = 1 - k / grid
                cands = [(max(wmin, -p * amax), min(wmax, p * amax))]
                if k:
                    cands.append((p * wmin, p * wmax))
                for c_lo, c_hi in cands:
                    e = w - _clamped_rtn(w, c_lo, c_hi, gs)
                    if weighted:
                        err = float((cw[sl] * e * e).sum())
                    else:
                        err = float(e @ gram[sl, sl] @ e)
                    if best is None or err < best[0] * (1 - 1e-12):
                        best = (err, c_lo, c_hi)
            assert float(lo[r, g]) == pytest.approx(best[1], rel=1e-12, abs=1e-15)
            assert float(hi[r, g]) == pytest.approx(best[2], rel=1e-12, abs=1e-15)


def test_an_asymmetric_range_is_never_worse_than_the_symmetric_clamp():
    from greenllm.steps.awq_core import search_range

    W, X = _layer(4, rows=16, cols=128)
    W[:, :8] += 0.15  # skewed groups
    gram = X.T @ X
    gs = 64
    lo, hi = search_range(W, gram, bits=4, group_size=gs, sym=False)
    bound = search_clip(W, gram, bits=4, group_size=gs, sym=False)
    worse = better = 0
    for r in range(W.shape[0]):
        for g in range(2):
            sl = slice(g * gs, (g + 1) * gs)
            w = W[r, sl]
            m = float(bound[r, g])
            e_clip = w - _clamped_rtn(w, -m, m, gs)
            e_rng = w - _clamped_rtn(w, lo[r, g], hi[r, g], gs)
            a, b = float(e_clip @ gram[sl, sl] @ e_clip), float(e_rng @ gram[sl, sl] @ e_rng)
            worse += b > a * (1 + 1e-12)
            better += b < a * (1 - 1e-9)
    assert worse == 0
    assert better > 0  # the second family is used on skewed groups


def test_clip_cost_defaults_and_validation():
    asym = QuantizeConfig(method="gptq", sym=False, clip=True)
    assert asym.clip_cost_for() == "gptq"
    assert QuantizeConfig(method="gptq", sym=True, clip=True).clip_cost_for() == "output"
    assert QuantizeConfig(method="gptq", clip=True, clip_cost="gptq").clip_cost_for() == "gptq"
    QuantizeConfig(method="awq", rounding="gptq", clip_cost="output")  # awq clips by default
    for kwargs, match in (
        ({"method": "gptq", "clip": True, "clip_cost": "mse"}, "one of gptq, output"),
        ({"method": "gptq", "clip_cost": "gptq"}, "clip search is off"),
        ({"method": "awq", "clip_cost": "gptq"}, "rounding rtn"),
        ({"method": "rtn", "clip_cost": "gptq"}, "method rtn"),
    ):
        with pytest.raises(ConfigError, match=f"^clip_cost: .*{match}"):
            QuantizeConfig(**kwargs)
    # a bad rounding is named as such, not as a clip_cost problem
    with pytest.raises(ConfigError, match="^rounding: 'fast' is not one of rtn, gptq"):
        QuantizeConfig(method="awq", rounding="fast", clip_cost="gptq")


@pytest.mark.parametrize("cost", ["gptq", "output"])
def test_gptq_rounding_uses_the_chosen_clip_cost(cost):
    from greenllm.steps.awq_core import clipped_grid
    from greenllm.steps.gptq_core import gptq_quantize, rounding_weights
    from greenllm.steps.quant_gptq import gptq_round

    W, X = _layer(5, rows=16, cols=128)
    W[:, :8] += 0.15
    H = 2.0 * X.T @ X / X.shape[0]
    cfg = QuantizeConfig(method="gptq", bits=4, group_size=64, sym=False, clip=True, clip_cost=cost)
    got = gptq_round(W, H, cfg, clip=True)
    wts = rounding_weights(H, act_order=False) if cost == "gptq" else None
    grid = clipped_grid(W, H, bits=4, group_size=64, sym=False, col_weights=wts)
    want = gptq_quantize(W, H, bits=4, group_size=64, sym=False, grid=grid)
    assert torch.equal(got.codes, want.codes)
    other = clipped_grid(
        W,
        H,
        bits=4,
        group_size=64,
        sym=False,
        col_weights=None if cost == "gptq" else rounding_weights(H, act_order=False),
    )
    assert not torch.equal(grid[0], other[0])  # the two costs choose different grids here


def test_a_symmetric_clipped_grid_with_the_output_cost_is_awqs_clip():
    """clip_cost: output on a symmetric grid is exactly AWQ's clipping search."""
    from greenllm.steps.awq_core import apply_clip, clipped_grid
    from greenllm.steps.gptq_core import grid_params

    W, X = _layer(6, rows=16, cols=128)
    W[:, :8] += 0.15
    gram = X.T @ X
    s, z = clipped_grid(W, gram, bits=4, group_size=64, sym=True)
    bound = search_clip(W, gram, bits=4, group_size=64, sym=True)
    clipped = apply_clip(W, bound, 64)
    for g in range(2):
        ws, wz = grid_params(clipped[:, g * 64 : (g + 1) * 64], 4, True)
        assert torch.equal(s[:, g], ws) and torch.equal(z[:, g], wz)
    assert bool((bound < W.abs().reshape(16, 2, 64).amax(-1)).any())  # some groups clipped
