"""Unstructured pruning on tiny in-code models: exact sparsity, N:M, Wanda's score, SparseGPT's
reconstruction, masks through an optimizer step, config round-trips and errors."""

from __future__ import annotations

import pytest
import torch

import greenllm
from greenllm.config import ConfigError, parse_config, to_dict
from greenllm.errors import DataError, GreenLLMError
from greenllm.evals.perplexity import token_perplexity
from greenllm.steps import compress
from greenllm.steps.prune import PRUNE_METHODS, PruneConfig, masks, reapply_masks, target_linears
from greenllm.steps.prune_unstructured import (
    magnitude_mask,
    sparsegpt_prune,
    wanda_mask,
    wanda_score,
)
from greenllm.testing import tiny_model_and_tokenizer

CAL = {"samples": 4, "seq_len": 64}
TEXT = [" ".join(f"word{i % 97} and text {i}." for i in range(j, j + 400)) for j in range(6)]


def _linears(model):
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layers." in n
    ]


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"method": "wanda", "sparsity": 0.6, "calibration": {"samples": 8, "seq_len": 128}},
        {
            "method": "sparsegpt",
            "pattern": "2:4",
            "dampening": 0.05,
            "blocksize": 64,
            "targets": ["*mlp*"],
            "ignore": ["*down_proj"],
            "sequential": False,
        },
        {"method": "magnitude", "scope": "global", "sparsity": 0.3},
        {"method": "heads", "sparsity": 0.34, "head_unit": "kv_group"},
        {"method": "layers", "sparsity": 0.2, "calibration": {"batch_size": 2}},
    ],
)
def test_config_round_trips(body):
    cfg = parse_config(PruneConfig, body, "prune")
    again = parse_config(PruneConfig, to_dict(cfg), "prune")
    assert again == cfg and to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize(
    "body, match",
    [
        ({"method": "wnda"}, "did you mean 'wanda'"),
        ({"sparsity": 0.0}, "strictly between 0 and 1"),
        ({"sparsity": 1.0}, "strictly between 0 and 1"),
        ({"sparsity": -0.2}, "strictly between 0 and 1"),
        ({"pattern": "4:2"}, "0 < N < M"),
        ({"pattern": "two:four"}, "expected 'N:M'"),
        ({"pattern": "2:4", "sparsity": 0.7}, "conflicts with pattern"),
        ({"method": "wanda", "scope": "global"}, "only for method 'magnitude'"),
        ({"method": "neurons", "pattern": "2:4"}, "unstructured"),
        ({"calibration": {"samples": 0}}, "calibration.samples"),
        ({"calibraton": {}}, "did you mean 'calibration'"),
        ({"dampening": 0}, "dampening"),
        (
            {"method": "sparsegpt", "pattern": "2:4", "blocksize": 6},
            r"blocksize: .*'2:4'.* multiple of M=4.* got 6; use e\.g\. blocksize: 4",
        ),
        ({"method": "sparsegpt", "pattern": "4:8", "blocksize": 20}, r"blocksize: .*M=8.*got 20"),
    ],
)
def test_config_errors(body, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(PruneConfig, body, "prune")


def test_registry_lists_every_method():
    assert PRUNE_METHODS.names() == sorted(
        ["magnitude", "wanda", "sparsegpt", "heads", "neurons", "layers"]
    )


# ----------------------------------------------------------------------------- magnitude


def test_magnitude_layer_scope_is_exact_and_drops_the_smallest(tiny):
    model, _ = tiny
    before = {n: m.weight.detach().clone() for n, m in _linears(model)}
    model, (res,) = compress(model, greenllm.Prune(method="magnitude", sparsity=0.3))
    for name, mod in _linears(model):
        w0, w = before[name], mod.weight.detach()
        zero = w == 0
        assert int(zero.sum()) == round(0.3 * w.numel())
        assert w0[zero].abs().max() <= w0[~zero].abs().min()  # smallest |w| went
        assert torch.equal(w[~zero], w0[~zero])  # the rest untouched
        assert res.stats["layers"][name] == pytest.approx(int(zero.sum()) / w.numel(), abs=1e-6)
    assert res.stats["sparsity"] == pytest.approx(0.3, abs=1e-3)
    assert "lm_head" not in str(res.stats["layers"]) and "embed" not in str(res.stats["layers"])
    assert model.lm_head.weight.ne(0).all()
    assert int((model.model.embed_tokens.weight == 0).sum()) == 64  # only the padding row


def test_magnitude_global_uses_one_threshold(tiny):
    model, _ = tiny
    with torch.no_grad():  # give one layer much larger weights: global leaves it dense-ish
        model.model.layers[1].mlp.up_proj.weight.mul_(10)
    before = {n: m.weight.detach().clone() for n, m in _linears(model)}
    model, (res,) = compress(model, "prune:method=magnitude,scope=global,sparsity=0.5")
    total = sum(w.numel() for w in before.values())
    zeros = sum(int((m.weight == 0).sum()) for _, m in _linears(model))
    assert zeros == round(0.5 * total)
    pruned = torch.cat([before[n][m.weight == 0].abs() for n, m in _linears(model)])
    kept = torch.cat([before[n][m.weight != 0].abs() for n, m in _linears(model)])
    assert pruned.max() <= kept.min()
    assert res.stats["layers"]["model.layers.1.mlp.up_proj"] < 0.1
    assert max(res.stats["layers"].values()) > 0.5


# ----------------------------------------------------------------------------- N:M


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_pattern_holds_in_every_group(method, pattern):
    model, tok = tiny_model_and_tokenizer(1)
    n, m = map(int, pattern.split(":"))
    model, (res,) = compress(
        model,
        greenllm.Prune(method=method, pattern=pattern, calibration=CAL, blocksize=16),
        tokenizer=tok,
        calibration=TEXT,
    )
    for name, mod in _linears(model):
        groups = (mod.weight != 0).reshape(mod.out_features, -1, m).sum(-1)
        assert int(groups.max()) == n and int(groups.min()) == n, name
    assert res.stats["sparsity"] == pytest.approx(1 - n / m)
    assert res.stats["pattern"] == pattern


def test_sparsegpt_nm_with_a_blocksize_that_does_not_divide_the_width():
    """blocksize 12 with 2:4 on 64/128-wide Linears: the last block is shorter, every group of
    4 still lies in one block and keeps exactly 2 weights."""
    model, tok = tiny_model_and_tokenizer(1)
    model, (res,) = compress(
        model,
        {"prune": {"method": "sparsegpt", "pattern": "2:4", "calibration": CAL, "blocksize": 12}},
        tokenizer=tok,
        calibration=TEXT,
    )
    for name, mod in _linears(model):
        groups = (mod.weight != 0).reshape(mod.out_features, -1, 4).sum(-1)
        assert int(groups.max()) == int(groups.min()) == 2, name
    assert res.stats["blocksize"] == 12
    with pytest.raises(ValueError, match="blocksize 6 is not a multiple of M=4"):
        sparsegpt_prune(torch.ones(4, 8), torch.eye(8), 0.5, (2, 4), blocksize=6)


def test_nm_that_does_not_divide_a_layer_names_it_and_changes_nothing():
    model, tok = tiny_model_and_tokenizer(0, intermediate_size=100)  # 100 % 8 != 0
    state = _state(model)
    with pytest.raises(ConfigError, match=r"model\.layers\.0\.mlp\.down_proj.*100 inputs"):
        compress(model, "prune:method=wanda,pattern=4:8", tokenizer=tok, calibration=TEXT)
    assert _same(state, _state(model)) and not masks(model)
    # ignoring the offending layers makes it valid
    model, _ = compress(
        model, greenllm.Prune(method="magnitude", pattern="4:8", ignore=["*down_proj"])
    )
    assert model.model.layers[0].mlp.down_proj.weight.ne(0).all()


# ----------------------------------------------------------------------------- wanda


def test_wanda_score_matches_a_hand_computed_example():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    x = torch.tensor(
        [
            [4.0, 1.0, 1.0, 1.0],  # ||X_j||_2 over the two tokens:
            [0.0, 0.0, 0.0, 0.0],
        ]
    )  # [4, 1, 1, 1]
    lin = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    sq = (x**2).sum(0)
    # |W| * ||X||: row 0 = [4, 2, 3, 4], row 1 = [16, 3, 2, 1]
    assert torch.equal(wanda_score(lin.weight, sq), torch.tensor([[4.0, 2, 3, 4], [16.0, 3, 2, 1]]))
    keep = wanda_mask(lin.weight, sq, 0.5)
    assert keep.tolist() == [[True, False, False, True], [True, True, False, False]]
    # plain magnitude would have kept columns 2 and 3 of row 0 instead
    assert magnitude_mask(lin.weight, 0.5).tolist()[0] == [False, False, True, True]


def test_wanda_on_a_model_uses_the_real_layer_inputs(tiny):
    model, tok = tiny
    import copy

    ref = copy.deepcopy(model)
    seen = {}
    q = ref.model.layers[0].self_attn.q_proj
    h = q.register_forward_pre_hook(lambda mod, inp: seen.setdefault("x", inp[0].detach()))
    from greenllm.steps.calibration import calibration_batches

    ids = calibration_batches(TEXT, tok, samples=4, seq_len=64, seed=0)
    with torch.no_grad():
        ref(input_ids=ids)
    h.remove()
    sq = seen["x"].reshape(-1, q.in_features).pow(2).sum(0)
    expected = wanda_mask(q.weight, sq, 0.5)
    model, (res,) = compress(
        model, greenllm.Prune(method="wanda", calibration=CAL), tokenizer=tok, calibration=TEXT
    )
    got = model.model.layers[0].self_attn.q_proj.weight != 0
    assert torch.equal(got, expected)
    per_row = got.sum(1)
    assert int(per_row.min()) == int(per_row.max()) == q.in_features // 2
    assert res.stats["calibration"] == {
        "samples": 4,
        "seq_len": 64,
        "tokens": 256,
        "sequential": True,
    }


def test_wanda_batched_and_non_sequential_modes_both_prune_exactly():
    for extra in ({"calibration": {**CAL, "batch_size": 2}}, {"sequential": False}):
        m, t = tiny_model_and_tokenizer(0)
        m, (res,) = compress(
            m,
            greenllm.Prune(**{"method": "wanda", "sparsity": 0.4, "calibration": CAL, **extra}),
            tokenizer=t,
            calibration=TEXT,
        )
        for name, mod in _linears(m):
            rows = (mod.weight == 0).sum(1)
            assert int(rows.min()) == int(rows.max()) == round(0.4 * mod.in_features), name


# ----------------------------------------------------------------------------- sparsegpt


def _recon_error(w_new, w, x):
    return float(((x @ w.t() - x @ w_new.t()) ** 2).sum())


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda(nm):
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(32, 32, generator=g)
    x = torch.randn(512, 32, generator=g) @ mix  # correlated inputs
    x[:, :4] *= 5.0  # a few loud features
    w = torch.randn(48, 32, generator=g)
    h = 2.0 / x.shape[0] * x.t() @ x
    w_sgpt, keep = sparsegpt_prune(w, h, 0.5, nm, blocksize=8, dampening=0.01)
    assert torch.equal(w_sgpt != 0, keep)
    assert int((~keep).sum()) == w.numel() // 2
    w_mag = w * magnitude_mask(w, 0.5, nm)
    w_wanda = w * wanda_mask(w, (x**2).sum(0), 0.5, nm)
    e_sgpt, e_mag, e_wanda = (_recon_error(v, w, x) for v in (w_sgpt, w_mag, w_wanda))
    assert e_sgpt < 0.7 * min(e_wanda, e_mag)


def test_sparsegpt_on_a_model_is_exact_and_records_settings(tiny):
    model, tok = tiny
    model, (res,) = compress(
        model,
        greenllm.Prune(method="sparsegpt", sparsity=0.5, calibration=CAL, blocksize=32),
        tokenizer=tok,
        calibration=TEXT,
    )
    assert res.stats["sparsity"] == pytest.approx(0.5)
    assert res.stats["blocksize"] == 32 and res.stats["dampening"] == 0.01
    assert all(v == pytest.approx(0.5) for v in res.stats["layers"].values())
    assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


# ----------------------------------------------------------------------------- masks


def test_masks_survive_an_optimizer_step_when_reapplied(tiny):
    model, tok = tiny
    model, _ = compress(
        model, greenllm.Prune(method="wanda", calibration=CAL), tokenizer=tok, calibration=TEXT
    )
    kept = {n: m.clone() for n, m in masks(model).items()}
    assert len(kept) == 14
    before = {n: mod.weight.detach().clone() for n, mod in _linears(model)}
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 256, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    name = "model.layers.0.mlp.up_proj"
    w = dict(_linears(model))[name].weight
    assert (w[~kept[name]] != 0).any()  # training alone revives pruned weights
    assert reapply_masks(model) == 14
    for n, mod in _linears(model):
        assert torch.equal(mod.weight != 0, kept[n]), n
        assert not torch.equal(mod.weight, before[n])  # the update to kept weights remains
    assert reapply_masks(torch.nn.Linear(2, 2)) == 0


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_calibrated_methods_without_data_fail_and_change_nothing(tiny, method):
    model, tok = tiny
    state = _state(model)
    with pytest.raises(DataError, match=f"{method}.*needs calibration data"):
        compress(model, f"prune:method={method},sparsity=0.5", tokenizer=tok)
    with pytest.raises(DataError, match="tokenizer"):
        compress(model, f"prune:method={method}", calibration=TEXT)
    with pytest.raises(DataError, match="does not exist"):
        compress(model, f"prune:method={method}", tokenizer=tok, calibration="/no/such.txt")
    assert _same(state, _state(model)) and not masks(model)


def test_bad_sparsity_and_unknown_method_leave_the_model_unchanged(tiny):
    model, tok = tiny
    state = _state(model)
    for spec in (
        "prune:method=magnitude,sparsity=1.5",
        "prune:method=magnitude,sparsity=0",
        "prune:method=magnitud",
        "prune:targets=[nothing*]",
    ):
        with pytest.raises(GreenLLMError):
            compress(model, spec, tokenizer=tok, calibration=TEXT)
    assert _same(state, _state(model))
    with pytest.raises(ConfigError, match="no Linear layer"):
        target_linears(model, PruneConfig(targets=["nothing*"]))


def test_targets_and_ignore_select_layers(tiny):
    model, _ = tiny
    model, (res,) = compress(model, greenllm.Prune(targets=["*mlp*"], ignore=["*gate_proj"]))
    assert sorted(res.stats["layers"]) == sorted(
        f"model.layers.{i}.mlp.{p}" for i in range(2) for p in ("up_proj", "down_proj")
    )
    assert model.model.layers[0].self_attn.q_proj.weight.ne(0).all()
    assert model.model.layers[0].mlp.gate_proj.weight.ne(0).all()


# ----------------------------------------------------------------------------- SmolLM2


@pytest.mark.slow
def test_smollm2_wanda_is_far_better_than_magnitude_at_50_percent(smollm2, shared_data):
    import copy

    base, tok = smollm2
    text = (shared_data / "wikitext" / "wiki.test.raw").read_text(encoding="utf-8")
    half = len(text) // 2
    ids = tok(text[:20000], add_special_tokens=False, return_tensors="pt").input_ids[:, :768]
    calibration = [text[half : half + 200000]]  # disjoint from the evaluated tokens
    dense = token_perplexity(base, ids, 256)
    mag, _ = compress(copy.deepcopy(base), "prune:method=magnitude,sparsity=0.5")
    mag_ppl = token_perplexity(mag, ids, 256)
    del mag
    wanda, (res,) = compress(
        copy.deepcopy(base),
        {
            "prune": {
                "method": "wanda",
                "sparsity": 0.5,
                "calibration": {"samples": 8, "seq_len": 256},
            }
        },
        tokenizer=tok,
        calibration=calibration,
    )
    wanda_ppl = token_perplexity(wanda, ids, 256)
    assert res.stats["sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert len(res.stats["layers"]) == 30 * 7
    assert dense < wanda_ppl < mag_ppl
    assert (mag_ppl - dense) > 4 * (wanda_ppl - dense), (dense, wanda_ppl, mag_ppl)


# ----------------------------------------------------------------------------- layer walk


def _tiny_gemma3(seed=0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        query_pre_attn_scalar=8,
        sliding_window=8,
        max_position_embeddings=256,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        attn_implementation="eager",
    )
    return Gemma3ForCausalLM(cfg).eval()


def _full_forward_layer_io(model, ids):
    from greenllm.steps.prune import decoder_layers

    ins, outs, handles = {}, {}, []
    for i, layer in enumerate(decoder_layers(model)):
        handles.append(
            layer.register_forward_pre_hook(
                lambda m, a, kw, i=i: ins.__setitem__(
                    i, (a[0] if a else kw["hidden_states"]).detach().clone()
                ),
                with_kwargs=True,
            )
        )
        handles.append(
            layer.register_forward_hook(
                lambda m, a, o, i=i: outs.__setitem__(
                    i, (o[0] if isinstance(o, tuple) else o).detach().clone()
                )
            )
        )
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    return ins, outs


@pytest.mark.parametrize("batch_size", [None, 2])
def test_layer_walk_gives_every_layer_its_own_mask_and_rotary_embedding(batch_size):
    """Gemma-3 mixes sliding-window and full attention layers (different masks and rotary
    bases): replaying layer 0's arguments into layer 1 gives it the wrong activations."""
    from greenllm.steps.prune import layerwise

    model = _tiny_gemma3()
    ids = torch.randint(0, 128, (4, 24), generator=torch.Generator().manual_seed(1))
    ins, outs = _full_forward_layer_io(model, ids)
    seen_in, seen_out = {}, {}

    def visit(i, _layer, forward):
        got = forward()
        seen_in[i] = torch.cat(forward.inputs)
        seen_out[i] = torch.cat(got)
        return got, True

    layerwise(model, ids, visit, batch_size=batch_size)
    assert sorted(seen_in) == [0, 1, 2, 3]
    for i in range(4):
        assert (seen_in[i] - ins[i]).abs().max() < 1e-5, i
        assert (seen_out[i] - outs[i]).abs().max() < 1e-5, i


def test_layer_walk_restores_the_layers_and_handles_positional_layer_arguments():
    """GPT-2 passes the mask to its blocks positionally; the walk must replay it too, and
    leave no passthrough forward or hook behind."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from greenllm.steps.prune import layerwise

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=128, n_embd=32, n_layer=3, n_head=4, n_positions=64)
    ).eval()
    ids = torch.randint(0, 128, (3, 20), generator=torch.Generator().manual_seed(2))
    _, outs = _full_forward_layer_io(model, ids)
    seen_out = {}

    def visit(i, _layer, forward):
        got = forward()
        seen_out[i] = torch.cat(got)
        return got, True

    layerwise(model, ids, visit)
    for i in range(3):
        assert (seen_out[i] - outs[i]).abs().max() < 1e-5, i
    for block in model.transformer.h:
        assert "forward" not in block.__dict__ and not block._forward_pre_hooks
    with torch.no_grad():
        again = model(input_ids=ids).logits
    assert torch.isfinite(again).all()


def test_wanda_on_gemma3_uses_each_layers_real_inputs(monkeypatch):
    """The Wanda mask of a full-attention layer's q_proj comes from the inputs the real
    forward gives it (the windows are longer than the sliding window)."""
    import copy

    import greenllm.steps.prune_unstructured as pu
    from greenllm.steps.base import StepContext

    model = _tiny_gemma3()
    ids = torch.randint(0, 128, (4, 24), generator=torch.Generator().manual_seed(3))
    ref = copy.deepcopy(model)
    seen = {}
    q = ref.model.layers[2].self_attn.q_proj
    h = q.register_forward_pre_hook(lambda mod, inp: seen.setdefault("x", inp[0].detach()))
    with torch.no_grad():
        ref(input_ids=ids, use_cache=False)
    h.remove()
    expected = wanda_mask(q.weight, seen["x"].reshape(-1, q.in_features).pow(2).sum(0), 0.5)
    monkeypatch.setattr(pu, "require_calibration", lambda *a, **k: ids)
    pu.prune_wanda(
        model, PruneConfig(method="wanda", targets=["*layers.2.self_attn.q_proj"]), StepContext()
    )
    assert torch.equal(model.model.layers[2].self_attn.q_proj.weight != 0, expected)


def _reference_prune(model, ids, method, sparsity=0.5, blocksize=128, dampening=0.01):
    """Reference Wanda/SparseGPT, written plainly: for each decoder layer in turn, one full
    forward of the model (earlier layers already pruned, this one still dense) gives the
    inputs of all the layer's Linears; then all of them are pruned."""
    keep = {}
    for i, layer in enumerate(model.model.layers):
        named = [
            (f"model.layers.{i}.{n}", m)
            for n, m in layer.named_modules()
            if isinstance(m, torch.nn.Linear)
        ]
        xs, handles = {}, []
        for name, mod in named:
            handles.append(
                mod.register_forward_pre_hook(
                    lambda m, inp, name=name, xs=xs: xs.__setitem__(
                        name, inp[0].detach().reshape(-1, m.in_features).float()
                    )
                )
            )
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
        for h in handles:
            h.remove()
        for name, mod in named:
            x = xs[name]
            with torch.no_grad():
                if method == "wanda":
                    k = wanda_mask(mod.weight, x.pow(2).sum(0), sparsity)
                else:
                    w, k = sparsegpt_prune(
                        mod.weight,
                        2.0 / x.shape[0] * x.t() @ x,
                        sparsity,
                        blocksize=blocksize,
                        dampening=dampening,
                    )
                    mod.weight.copy_(w)
                mod.weight.mul_(k)
            keep[name] = k
    return keep


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_default_one_batch_calibration_is_the_reference_algorithm(method):
    """batch_size: null (all windows in one pass) gives the masks of batch_size 1 and of the
    reference algorithm: statistics of all Linears of a layer from its unpruned forward."""
    from greenllm.steps.calibration import calibration_batches

    _, tok = tiny_model_and_tokenizer(0)
    ids = calibration_batches(TEXT, tok, samples=4, seq_len=64, seed=0)
    ref = _reference_prune(tiny_model_and_tokenizer(0)[0], ids, method)
    got = {}
    for bs in (None, 1):
        m, t = tiny_model_and_tokenizer(0)
        m, _ = compress(
            m,
            {
                "prune": {
                    "method": method,
                    "sparsity": 0.5,
                    "calibration": {**CAL, "batch_size": bs},
                }
            },
            tokenizer=t,
            calibration=TEXT,
        )
        got[bs] = masks(m)
    assert got[None].keys() == got[1].keys() == ref.keys()
    for name in ref:
        assert torch.equal(got[None][name], ref[name]), name
        assert torch.equal(got[1][name], ref[name]), name


def test_capturing_the_layer_arguments_does_not_compute_the_layers():
    """The per-layer masks and rotary embeddings are recorded in one forward whose decoder
    layers pass their input through (no attention or MLP is computed)."""
    from greenllm.steps.prune import capture_layer_inputs, decoder_layers

    for model in (tiny_model_and_tokenizer(0)[0], _tiny_gemma3()):
        layers = decoder_layers(model)
        calls = []
        hooks = [
            layer.mlp.register_forward_pre_hook(lambda m, a, calls=calls: calls.append(1))
            for layer in layers
        ]
        ids = torch.randint(0, 128, (4, 24), generator=torch.Generator().manual_seed(0))
        batches = capture_layer_inputs(model, layers, ids, 2)
        for h in hooks:
            h.remove()
        assert calls == [] and len(batches) == 2
        assert all(len(per_layer) == len(layers) for _, per_layer in batches)
        assert all("forward" not in layer.__dict__ for layer in layers)
