"""Packed 4-bit models saved as compressed-tensors ``pack-quantized`` checkpoints: the packing
equals the compressed-tensors package's bit for bit, plain transformers loads the checkpoint,
and greenllm.load_model restores the packed Int4Linear layers; both give the in-memory
model's logits."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

import greenllm  # noqa: E402
from greenllm.builtin_data import resolve_data  # noqa: E402
from greenllm.config import parse_config  # noqa: E402
from greenllm.steps.int4_linear import Int4Linear, pack_int32, unpack_int32  # noqa: E402
from greenllm.steps.quantize import QuantizeConfig  # noqa: E402
from greenllm.testing import tiny_model_and_tokenizer  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog while the baker kneads the dough. " * 3


def test_int32_packing_round_trips_bit_exactly():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (13, 40), generator=g, dtype=torch.uint8)
    packed = pack_int32(codes)
    assert packed.dtype == torch.int32 and packed.shape == (13, 5)
    assert torch.equal(unpack_int32(packed, 40), codes)
    word = sum(int(codes[0, t]) << (4 * t) for t in range(8))
    assert int(packed[0, 0]) & 0xFFFFFFFF == word


def test_packing_equals_compressed_tensors():
    helpers = pytest.importorskip(
        "compressed_tensors.compressors.pack_quantized.helpers",
        reason="the compressed-tensors package is not installed (extra: compressed-tensors)",
    )
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (20, 64), generator=g, dtype=torch.uint8)
    signed = (codes.to(torch.int16) - 8).to(torch.int8)  # their ints are -8..7
    assert torch.equal(pack_int32(codes), helpers.pack_to_int32(signed, 4))
    # zero points are packed along the output dimension
    assert torch.equal(pack_int32(codes.t()).t(), helpers.pack_to_int32(signed, 4, packed_dim=0))


def _quantized(method: str, **kw):
    model, tok = tiny_model_and_tokenizer(0, hidden_size=128, intermediate_size=256)
    spec = {"method": method, "group_size": 32, **kw}
    if method in ("gptq", "awq"):
        spec["calibration"] = {"samples": 8, "seq_len": 64}
    cfg = parse_config(QuantizeConfig, spec, "quantize")
    calib = str(resolve_data("builtin:wiki-sample", "calibration"))
    model, _ = greenllm.compress(model, [("quantize", cfg)], tokenizer=tok, calibration=calib)
    return model, tok


def _checkpoint(method, kw, tmp_path):
    model, tok = _quantized(method, **kw)
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model(ids).logits
    out = greenllm.save(model, tmp_path / "ckpt", tok)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    (group,) = qc["config_groups"].values()
    assert group["weights"]["symmetric"] == kw["sym"] and group["weights"]["group_size"] == 32
    assert len(group["targets"]) == 14 and "lm_head" in qc["ignore"]
    return model, ids, ref, out


@pytest.mark.parametrize(
    "method,kw",
    [
        ("gptq", {"sym": False}),
        ("gptq", {"sym": True}),
        ("awq", {"sym": False}),
        ("rtn", {"sym": True}),
    ],
)
def test_greenllm_reloads_the_packed_layers(method, kw, tmp_path):
    model, ids, ref, out = _checkpoint(method, kw, tmp_path)
    again, _ = greenllm.load_model(str(out))
    layer = again.model.layers[1].self_attn.v_proj
    assert isinstance(layer, Int4Linear) and layer.sym == kw["sym"]
    with torch.no_grad():
        after = again(ids).logits
    torch.testing.assert_close(after, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sym", [True, False])
def test_the_tensors_are_what_the_compressed_tensors_compressor_writes(sym):
    ct = pytest.importorskip(
        "compressed_tensors",
        reason="the compressed-tensors package is not installed (extra: compressed-tensors)",
    )
    from compressed_tensors.compressors.pack_quantized import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    model, _ = _quantized("rtn", sym=sym)
    mod = model.model.layers[0].mlp.down_proj
    args = QuantizationArgs(num_bits=4, type="int", symmetric=sym, strategy="group", group_size=32)
    state = {"weight": mod.dequantized_weight(), "weight_scale": mod.weight_scale.clone()}
    if not sym:
        state["weight_zero_point"] = (mod.zeros() - 8).to(torch.int8)
    theirs = PackedQuantizationCompressor.compress(
        state, QuantizationScheme(targets=["Linear"], weights=args)
    )
    assert ct is not None and set(theirs) == set(dict(mod.named_buffers())) - {"bias"}
    for name, t in theirs.items():
        assert torch.equal(getattr(mod, name), t), name


@pytest.mark.parametrize("method", ["gptq", "awq", "rtn"])
def test_plain_transformers_loads_a_symmetric_checkpoint(method, tmp_path):
    pytest.importorskip(
        "compressed_tensors",
        reason="the compressed-tensors package is not installed (extra: compressed-tensors)",
    )
    from transformers import AutoModelForCausalLM

    model, ids, ref, out = _checkpoint(method, {"sym": True}, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(str(out))
    hf.eval()
    with torch.no_grad():
        got = hf(ids).logits
    # transformers de-quantizes to float32 weights; the packed layers use bf16 activations
    assert float((got - ref).abs().max()) < 2e-2 * float(ref.abs().max())
    dense = model.model.layers[0].mlp.down_proj.dequantized_weight()
    hf_w = hf.model.layers[0].mlp.down_proj.weight
    torch.testing.assert_close(hf_w.float(), dense, atol=1e-6, rtol=0)
