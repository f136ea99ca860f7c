"""Structured pruning really shrinks the model: heads (GQA-consistent), FFN neurons, decoder
layers; the config follows, generate() works, save/reload gives the same outputs."""

from __future__ import annotations

import pytest
import torch

import greenllm
from greenllm.config import ConfigError
from greenllm.errors import DataError
from greenllm.models import param_count
from greenllm.steps import compress
from greenllm.testing import tiny_model_and_tokenizer

CAL = {"samples": 4, "seq_len": 64}
TEXT = [" ".join(f"word{i % 89} then {i}." for i in range(j, j + 300)) for j in range(4)]
PROMPT = torch.tensor([[256, 72, 101, 108, 108, 111]])


def _model(**kw):
    # 4 query heads sharing 2 KV heads (GQA, 2 per group), 3 layers
    return tiny_model_and_tokenizer(0, num_layers=3, num_heads=4, num_kv_heads=2, **kw)


def _check_runs_and_reloads(model, tmp_path):
    from transformers import AutoModelForCausalLM

    out = model.generate(PROMPT, max_new_tokens=6, do_sample=False)
    assert out.shape == (1, PROMPT.shape[1] + 6)
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert param_count(again) == param_count(model)
    with torch.no_grad():
        assert torch.allclose(again(PROMPT).logits, model(PROMPT).logits, atol=1e-5)


@pytest.mark.parametrize("with_data", [False, True])
def test_neurons_shrink_the_ffn(tmp_path, with_data):
    model, tok = _model()
    n0 = param_count(model)
    cal = dict(tokenizer=tok, calibration=TEXT) if with_data else {}
    model, (res,) = compress(
        model, greenllm.Prune(method="neurons", sparsity=0.25, calibration=CAL), **cal
    )
    assert model.config.intermediate_size == 96
    for layer in model.model.layers:
        assert layer.mlp.gate_proj.weight.shape == (96, 64)
        assert layer.mlp.down_proj.weight.shape == (64, 96)
    assert n0 - param_count(model) == 3 * 3 * 32 * 64
    assert res.stats["importance"] == ("activation" if with_data else "weight")
    assert res.size_bytes_after < res.size_bytes_before
    _check_runs_and_reloads(model, tmp_path)


def test_neurons_drop_the_one_that_contributes_nothing():
    model, tok = _model()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight[:, 7] = 0  # neuron 7 writes nothing
            layer.mlp.down_proj.weight[:, 8] *= 100  # neuron 8 matters a lot
    keep_cols = {}
    for i, layer in enumerate(model.model.layers):
        keep_cols[i] = layer.mlp.down_proj.weight[:, 8].clone()
    model, _ = compress(
        model,
        greenllm.Prune(method="neurons", sparsity=1 / 128, calibration=CAL),
        tokenizer=tok,
        calibration=TEXT,
    )
    for i, layer in enumerate(model.model.layers):
        w = layer.mlp.down_proj.weight
        assert w.shape[1] == 127
        assert (w.abs().sum(0) == 0).sum() == 0  # the dead neuron went
        assert (w == keep_cols[i][:, None]).all(0).any()  # the loud one stayed


@pytest.mark.parametrize("unit, heads, kv", [("query", 2, 2), ("kv_group", 2, 1)])
def test_heads_respect_gqa(tmp_path, unit, heads, kv):
    model, tok = _model()
    n0 = param_count(model)
    model, (res,) = compress(
        model,
        greenllm.Prune(method="heads", sparsity=0.5, head_unit=unit, calibration=CAL),
        tokenizer=tok,
        calibration=TEXT,
    )
    c = model.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (heads, kv, 16)
    for layer in model.model.layers:
        a = layer.self_attn
        assert a.q_proj.out_features == heads * 16 and a.o_proj.in_features == heads * 16
        assert a.k_proj.out_features == kv * 16 and a.num_key_value_groups == heads // kv
    assert param_count(model) < n0
    if unit == "query":  # one query head kept per KV group, so each group still has one
        for info in res.stats["layers"].values():
            assert sorted(h // 2 for h in info["kept_query_heads"]) == [0, 1]
    _check_runs_and_reloads(model, tmp_path)


def test_heads_drop_the_head_whose_output_is_zeroed():
    model, tok = _model()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:, 48:64] = 0  # query head 3 (group 1) is silent
    model, (res,) = compress(
        model,
        greenllm.Prune(method="heads", sparsity=0.5, calibration=CAL),
        tokenizer=tok,
        calibration=TEXT,
    )
    for info in res.stats["layers"].values():
        assert 3 not in info["kept_query_heads"] and 2 in info["kept_query_heads"]


def test_layers_removes_the_identity_like_layer(tmp_path):
    model, tok = _model()
    with torch.no_grad():  # layer 1 adds nothing to the residual stream: block influence 0
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    keep_last = model.model.layers[2]
    model, (res,) = compress(
        model,
        greenllm.Prune(method="layers", sparsity=0.34, calibration=CAL),
        tokenizer=tok,
        calibration=TEXT,
    )
    assert res.stats["removed_layers"] == [1]
    assert res.stats["layers"]["layer.1"] == pytest.approx(0.0, abs=1e-6)
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    assert model.model.layers[1] is keep_last and keep_last.self_attn.layer_idx == 1
    _check_runs_and_reloads(model, tmp_path)


def test_structured_errors_leave_the_model_unchanged():
    model, tok = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataError, match="'layers' needs calibration"):
        compress(model, "prune:method=layers,sparsity=0.34", tokenizer=tok)
    with pytest.raises(ConfigError, match="removes 0"):
        compress(model, "prune:method=layers,sparsity=0.1", tokenizer=tok, calibration=TEXT)
    with pytest.raises(ConfigError, match="KV groups per layer removes 2"):
        compress(model, "prune:method=heads,sparsity=0.9,head_unit=kv_group")
    with pytest.raises(ConfigError, match="unstructured"):
        compress(model, "prune:method=heads,pattern=2:4")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.config.num_hidden_layers == 3 and model.config.num_attention_heads == 4


def test_heads_on_plain_multi_head_attention_remove_whole_heads():
    model, tok = tiny_model_and_tokenizer(0, num_heads=4, num_kv_heads=4)
    model, (res,) = compress(
        model,
        greenllm.Prune(method="heads", sparsity=0.25, calibration=CAL),
        tokenizer=tok,
        calibration=TEXT,
    )
    assert res.stats["unit"] == "kv_group"
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (3, 3)
    assert model.generate(PROMPT, max_new_tokens=3, do_sample=False).shape[1] == 9


@pytest.mark.slow
def test_smollm2_layer_pruning_keeps_a_working_model(smollm2, shared_data):
    import copy

    base, tok = smollm2
    text = (shared_data / "wikitext" / "wiki.test.raw").read_text(encoding="utf-8")
    model, (res,) = compress(
        copy.deepcopy(base),
        {
            "prune": {
                "method": "layers",
                "sparsity": 0.1,
                "calibration": {"samples": 4, "seq_len": 256},
            }
        },
        tokenizer=tok,
        calibration=[text[len(text) // 2 :][:100000]],
    )
    assert model.config.num_hidden_layers == 27 and len(res.stats["removed_layers"]) == 3
    assert 0 not in res.stats["removed_layers"]  # the first layer changes its input most
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 8
    assert res.size_bytes_after < res.size_bytes_before * 0.95
