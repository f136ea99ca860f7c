"""The gptq quantize method on a tiny model: calibrated, packed, saved and reloaded."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import greenllm  # noqa: E402
from greenllm.builtin_data import resolve_data  # noqa: E402
from greenllm.config import ConfigError, parse_config  # noqa: E402
from greenllm.steps.quantize import QuantizeConfig  # noqa: E402
from greenllm.testing import tiny_model_and_tokenizer  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog while the baker kneads the dough. " * 3


def _setup():
    model, tok = tiny_model_and_tokenizer(0, hidden_size=128, intermediate_size=256)
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model(ids).logits
    return model, tok, ids, ref


def _calib():
    return str(resolve_data("builtin:wiki-sample", "calibration"))


def _gptq(group_size=32, **kw):
    spec = {
        "method": "gptq",
        "group_size": group_size,
        "calibration": {"samples": 8, "seq_len": 64},
        **kw,
    }
    return ("quantize", parse_config(QuantizeConfig, spec, "quantize"))


def test_gptq_packs_every_decoder_linear_and_keeps_the_logits_close():
    from greenllm.models import param_count
    from greenllm.steps.int4_linear import Int4Linear

    model, tok, ids, ref = _setup()
    before = param_count(model)
    model, steps = greenllm.compress(model, [_gptq()], tokenizer=tok, calibration=_calib())
    assert param_count(model) == before  # packed 4-bit counts as the weights it stands for
    packed = [n for n, m in model.named_modules() if isinstance(m, Int4Linear)]
    assert len(packed) == 2 * 7  # q k v o gate up down in each of 2 layers
    assert type(model.lm_head) is torch.nn.Linear  # ignored by default
    st = steps[0].stats
    assert st["bits"] == 4 and st["calibration"]["samples"] == 8
    assert set(st["reconstruction_error"]) == set(packed)
    assert all(0 <= e < 0.1 for e in st["reconstruction_error"].values())
    with torch.no_grad():
        out = model(ids).logits
    assert float((out - ref).abs().max()) < 0.25 * float(ref.abs().max())


def test_gptq_without_calibration_is_one_clear_error():
    model, tok, _, _ = _setup()
    with pytest.raises(greenllm.GreenLLMError, match="calibration"):
        greenllm.compress(model, [_gptq()], tokenizer=tok)


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"bits": 5}, "bits"),
        ({"group_size": 48}, "group_size"),
        ({"desc_act": True}, "static_groups"),
        ({"pattern": "2:3"}, "blocksize"),
        ({"dampening": 0.0}, "dampening"),
    ],
)
def test_gptq_settings_are_validated(bad, field):
    with pytest.raises(ConfigError, match=field):
        _gptq(**bad)


def test_a_gptq_model_saves_packed_and_reloads_with_the_same_logits(tmp_path):
    model, tok, ids, _ = _setup()
    model, _ = greenllm.compress(model, [_gptq(sym=False)], tokenizer=tok, calibration=_calib())
    with torch.no_grad():
        before = model(ids).logits
    out = greenllm.save(model, tmp_path / "ckpt", tok)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        q = f.get_tensor("model.layers.0.mlp.down_proj.weight_packed")
        zp = f.get_tensor("model.layers.0.mlp.down_proj.weight_zero_point")
    assert q.dtype == torch.int32 and q.shape == (128, 32)  # 256 inputs, eight an int32
    assert zp.dtype == torch.int32 and zp.shape == (16, 8)  # 128 rows / 8, 256 / 32 groups
    assert "model.layers.0.mlp.down_proj.weight" not in keys
    again, _ = greenllm.load_model(str(out))
    with torch.no_grad():
        after = again(ids).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_gptq_and_sparsegpt_in_one_pass():
    model, tok, _, _ = _setup()
    model, steps = greenllm.compress(
        model, [_gptq(sparsity=0.5)], tokenizer=tok, calibration=_calib()
    )
    w = model.model.layers[1].mlp.up_proj.dequantized_weight()
    assert abs(float((w == 0).float().mean()) - 0.5) < 0.05
    assert steps[0].stats["sparsity"] == 0.5


def _with_and_without(option: str):
    """``[(model, reconstruction errors)]`` of GPTQ on the tiny model with ``option`` false,
    then true (the stats record each)."""
    runs = []
    for on in (False, True):
        model, tok, _, _ = _setup()
        model, steps = greenllm.compress(
            model, [_gptq(**{option: on})], tokenizer=tok, calibration=_calib()
        )
        assert steps[0].stats[option] is on
        runs.append((model, steps[0].stats["reconstruction_error"]))
    return runs


def test_true_sequential_calibrates_each_stage_on_the_quantized_ones_before_it():
    """q/k/v, then o_proj, then gate/up, then down_proj: with true_sequential the Hessians of
    the later stages come from the quantized earlier ones, so o_proj (whose input is the
    attention output of the quantized q/k/v) gets a different result than without it, while
    layer 0's q/k/v (the first stage, same inputs either way) are identical."""
    from greenllm.steps.quant_gptq import _input_stages
    from greenllm.testing import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(0)
    layer = model.model.layers[0]
    named = [(n, m) for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
    stages, handles = _input_stages(named)
    ids = tok("stages follow the order of the layer's calls", return_tensors="pt").input_ids
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    assert stages == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]
    (plain, e0), (seq, e1) = _with_and_without("true_sequential")
    a0, a1 = plain.model.layers[0].self_attn, seq.model.layers[0].self_attn
    assert torch.equal(a0.q_proj.weight_packed, a1.q_proj.weight_packed)
    assert not torch.equal(a0.o_proj.weight_packed, a1.o_proj.weight_packed)
    assert e0["model.layers.0.self_attn.q_proj"] == e1["model.layers.0.self_attn.q_proj"]
    with pytest.raises(ConfigError, match="true_sequential"):
        parse_config(QuantizeConfig, {"method": "awq", "true_sequential": True}, "quantize")


def test_without_sequential_every_layer_is_calibrated_on_the_float_models_activations():
    (flat, _), (seq, _) = _with_and_without("sequential")
    l0 = [m.model.layers[0].mlp.down_proj.weight_packed for m in (seq, flat)]
    l1 = [m.model.layers[1].self_attn.q_proj.weight_packed for m in (seq, flat)]
    assert torch.equal(*l0)  # layer 0 sees the same inputs either way
    assert not torch.equal(*l1)  # layer 1: quantized layer 0's outputs, or the float ones
