"""The quantize step on tiny seeded models: every method, config round-trip, targets/ignore,
errors (did-you-mean, backends that cannot run here), model left unchanged on error."""

from __future__ import annotations

import copy
import logging
import sys
import types

import pytest

torch = pytest.importorskip("torch")

from greenllm.config import ConfigError, parse_config, to_dict  # noqa: E402
from greenllm.errors import GreenLLMError, MissingDependencyError, UnsupportedError  # noqa: E402
from greenllm.evals.perplexity import token_perplexity  # noqa: E402
from greenllm.models import model_size_bytes  # noqa: E402
from greenllm.steps import apply_step, compress  # noqa: E402
from greenllm.steps.quantize import (  # noqa: E402
    QUANT_METHODS,
    QuantizeConfig,
    layer_bits,
    matches,
    quiet_torchao_import,
    select_linears,
    tensor_storage_bytes,
)
from greenllm.testing import tiny_causal_lm  # noqa: E402

N_LINEARS = 14  # 2 layers x (q, k, v, o, gate, up, down); lm_head ignored by default

# method -> max |logit - fp32 logit| allowed on the tiny model (logits are O(0.5))
CPU_METHODS = {
    "int8_weight": 0.03,
    "bf16": 0.02,
    "fp16": 0.005,
    "dynamic_int8": 0.05,
    "torchao_int8_weight": 0.03,
    "torchao_int8_dynamic": 0.05,
    "quanto_int8": 0.03,
    "quanto_int4": 0.3,
    "quanto_float8": 0.1,
    "bnb_int8": 0.05,
    "bnb_nf4": 0.4,
    "bnb_fp4": 0.4,
}
BNB = {"bnb_int8", "bnb_nf4", "bnb_fp4"}


def _has(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def base():
    return tiny_causal_lm(0)


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (2, 12), generator=g)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("method", QUANT_METHODS.names())
def test_config_round_trips(method):
    cfg = parse_config(
        QuantizeConfig,
        {
            "method": method,
            "targets": ["mlp.*"],
            "ignore": ["lm_head", "down_proj"],
            "group_size": 64,
        },
    )
    again = parse_config(QuantizeConfig, to_dict(cfg))
    assert again == cfg
    assert to_dict(again)["targets"] == ["mlp.*"]


def test_default_config_is_the_recommended_int8_and_ignores_lm_head():
    cfg = parse_config(QuantizeConfig, {})
    assert cfg.method == "int8_weight" and cfg.ignore == ["lm_head"]
    assert QUANT_METHODS.get("int8_weight").reloads


def test_unknown_method_suggests_the_close_name():
    with pytest.raises(ConfigError, match=r"did you mean 'int8_weight'"):
        parse_config(QuantizeConfig, {"method": "int8_weigth"}, "quantize")
    with pytest.raises(ConfigError, match=r"did you mean 'quanto_int4'"):
        parse_config(QuantizeConfig, {"method": "quanto_int44"})


@pytest.mark.parametrize(
    "body, field",
    [
        ({"methd": "bf16"}, "methd"),
        ({"group_size": 100}, "group_size"),
        ({"compute_dtype": "int8"}, "compute_dtype"),
        ({"targets": "q_proj"}, "targets"),
        ({"ignore": [""]}, "ignore"),
        ({"per_channel": "yes"}, "per_channel"),
    ],
)
def test_bad_config_names_the_field(body, field):
    with pytest.raises(ConfigError, match=field):
        parse_config(QuantizeConfig, body, "quantize")


def test_validation_needs_no_torch_backend_import():
    # checking a method name must not import the backend modules
    for mod in ("greenllm.steps.quant_bnb", "greenllm.steps.quant_quanto"):
        sys.modules.pop(mod, None)
    parse_config(QuantizeConfig, {"method": "bnb_nf4"})
    parse_config(QuantizeConfig, {"method": "quanto_int8"})
    assert "greenllm.steps.quant_bnb" not in sys.modules
    assert "greenllm.steps.quant_quanto" not in sys.modules


# ------------------------------------------------------------------ selection
@pytest.mark.parametrize(
    "name, pattern, hit",
    [
        ("model.layers.0.mlp.down_proj", "down_proj", True),
        ("model.layers.0.mlp.down_proj", "mlp.*", True),
        ("model.layers.0.mlp.down_proj", "model.layers.1.*", False),
        ("model.layers.11.mlp.up_proj", "model.layers.1[0-9].*", True),
        ("model.layers.1.mlp.up_proj", "model.layers.1[0-9].*", False),
        ("lm_head", "lm_head", True),
        ("model.layers.0.self_attn.q_proj", "proj", False),
    ],
)
def test_patterns(name, pattern, hit):
    assert matches(name, pattern) is hit


def test_select_default_skips_lm_head(base):
    names = [n for n, _ in select_linears(base, [], ["lm_head"])]
    assert len(names) == N_LINEARS and "lm_head" not in names
    assert len(select_linears(base, [], [])) == N_LINEARS + 1


def test_targets_and_ignore(base):
    names = [n for n, _ in select_linears(base, ["mlp.*"], ["down_proj"])]
    assert sorted(n.rsplit(".", 1)[1] for n in names) == [
        "gate_proj",
        "gate_proj",
        "up_proj",
        "up_proj",
    ]


def test_no_match_is_a_config_error_naming_an_example(base):
    with pytest.raises(ConfigError, match=r"no linear layer matched.*model\.layers\.0"):
        select_linears(base, ["attention.*"], [])


# ------------------------------------------------------------------ every method
@pytest.mark.parametrize("method", sorted(CPU_METHODS))
def test_method_on_tiny_model(method, base, ids):
    if method in BNB and not _has("bitsandbytes"):
        pytest.skip("bitsandbytes is not installed (pip install 'greenllm[bnb]')")
    model = copy.deepcopy(base)
    ref = _logits(base, ids)
    model, res = apply_step(model, "quantize", {"method": method})
    out = _logits(model, ids)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    err = (out - ref).abs().max().item()
    assert 0 < err < CPU_METHODS[method], err  # changed, but close to fp32
    assert res.size_bytes_after < res.size_bytes_before
    assert res.stats["quantized_modules"] == N_LINEARS
    assert len(res.stats["modules"]) == N_LINEARS
    assert res.stats["bits"] == QUANT_METHODS.get(method).bits
    assert type(model.lm_head) is torch.nn.Linear  # ignored by default
    assert model._greenllm["steps"][-1]["config"]["method"] == method
    fmts = layer_bits(model)
    assert fmts["lm_head"] == "float32"
    assert fmts["model.layers.0.mlp.down_proj"] != "float32"


def test_targets_limit_what_is_quantized(base, ids):
    model, res = apply_step(
        copy.deepcopy(base), "quantize", {"method": "int8_weight", "targets": ["down_proj"]}
    )
    fmts = layer_bits(model)
    assert res.stats["quantized_modules"] == 2
    assert fmts["model.layers.1.mlp.down_proj"] == "int8_weight"
    assert fmts["model.layers.1.mlp.up_proj"] == "float32"


def test_lm_head_quantized_when_not_ignored(base, ids):
    model, res = apply_step(
        copy.deepcopy(base), "quantize", {"method": "int8_weight", "ignore": []}
    )
    assert res.stats["quantized_modules"] == N_LINEARS + 1
    assert layer_bits(model)["lm_head"] == "int8_weight"


def test_int8_weight_matches_its_dequantized_weights(base):
    from greenllm.steps.quant_native import Int8WeightLinear

    lin = base.model.layers[0].mlp.down_proj
    q = Int8WeightLinear.from_linear(lin, "float32", use_kernel=True)
    w = lin.weight.detach()
    deq = q.dequantized_weight()
    # symmetric rounding: each weight within half a step of its row scale
    assert ((w - deq).abs() <= q.weight_scale[:, None] / 2 + 1e-7).all()
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.abs().max() == 127
    x = torch.randn(3, 5, lin.in_features)
    expect = torch.nn.functional.linear(x, deq)
    assert torch.allclose(q(x), expect, atol=1e-4)  # float32 kernel path
    qb = Int8WeightLinear.from_linear(lin, "bfloat16", use_kernel=True)
    assert torch.allclose(qb(x), expect, atol=0.05)  # bf16 activations
    fallback = Int8WeightLinear.from_linear(lin, "float32", use_kernel=False)
    assert torch.allclose(fallback(x), expect, atol=1e-4)


def test_int8_weight_size_is_one_byte_per_weight_plus_scales(base):
    model, res = apply_step(copy.deepcopy(base), "quantize", {"method": "int8_weight"})
    n = res.stats["quantized_params"]
    rows = sum(m.out_features for _, m in select_linears(base, [], ["lm_head"]))
    assert res.size_bytes_before - res.size_bytes_after == 4 * n - (n + 4 * rows)


def test_dynamic_int8_per_channel_and_per_tensor(base, ids):
    pc, _ = apply_step(copy.deepcopy(base), "quantize", {"method": "dynamic_int8"})
    pt, _ = apply_step(
        copy.deepcopy(base), "quantize", {"method": "dynamic_int8", "per_channel": False}
    )
    w_pc = pc.model.layers[0].mlp.down_proj.weight()
    w_pt = pt.model.layers[0].mlp.down_proj.weight()
    assert w_pc.qscheme() == torch.per_channel_affine
    assert w_pt.qscheme() == torch.per_tensor_affine
    ref = base.model.layers[0].mlp.down_proj.weight
    assert (w_pc.dequantize() - ref).abs().mean() < (w_pt.dequantize() - ref).abs().mean()


def test_tensor_storage_bytes_counts_packed_subclasses(base):
    model, _ = apply_step(copy.deepcopy(base), "quantize", {"method": "quanto_int4"})
    w = model.model.layers[0].mlp.up_proj.weight
    n = w.shape[0] * w.shape[1]
    stored = tensor_storage_bytes(w)
    assert n // 2 <= stored < n  # 4 bits per weight plus group scales/shifts
    assert tensor_storage_bytes(torch.zeros(10, dtype=torch.float16)) == 20


# ------------------------------------------------------------------ errors
def test_torchao_int4_on_cpu_is_unsupported_and_model_unchanged(base):
    model = copy.deepcopy(base)
    before = _state(model)
    with pytest.raises(UnsupportedError, match="CUDA"):
        apply_step(model, "quantize", {"method": "torchao_int4_weight"})
    assert _same_state(before, _state(model))
    assert not getattr(model, "_greenllm", {}).get("steps")


def test_bnb_missing_is_a_missing_dependency(base, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if absent
    model = copy.deepcopy(base)
    before = _state(model)
    with pytest.raises(MissingDependencyError, match=r"greenllm\[bnb\]"):
        apply_step(model, "quantize", {"method": "bnb_nf4"})
    assert _same_state(before, _state(model))


def test_bnb_without_cpu_backend_is_unsupported(base, monkeypatch):
    """A bitsandbytes build without a CPU backend fails on the scratch layer, before the
    model is touched; faked at the SDK boundary (module object)."""

    def no_cpu(*args, **kwargs):
        raise RuntimeError("CUDA Setup failed: no GPU found")

    fake = types.ModuleType("bitsandbytes")
    fake.__version__ = "0.42.0"
    fake.nn = types.SimpleNamespace(
        Linear8bitLt=no_cpu, Int8Params=no_cpu, Linear4bit=no_cpu, Params4bit=no_cpu
    )
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    model = copy.deepcopy(base)
    before = _state(model)
    with pytest.raises(UnsupportedError, match=r"bitsandbytes 0\.42\.0 needs CUDA"):
        apply_step(model, "quantize", {"method": "bnb_int8"})
    assert _same_state(before, _state(model))


def test_dynamic_int8_needs_float32_one_line_error(base):
    model = copy.deepcopy(base).to(torch.bfloat16)
    with pytest.raises(UnsupportedError, match="float32 model") as exc:
        apply_step(model, "quantize", {"method": "dynamic_int8"})
    assert "\n" not in str(exc.value)


def test_typo_in_a_later_step_leaves_model_untouched(base):
    model = copy.deepcopy(base)
    before = _state(model)
    with pytest.raises(GreenLLMError, match="did you mean"):
        compress(model, ["quantize:method=bf16", "quantize:method=quanto_int9"])
    assert _same_state(before, _state(model))


def test_quantizing_twice_finds_nothing_left(base):
    model, _ = apply_step(copy.deepcopy(base), "quantize", {"method": "int8_weight"})
    with pytest.raises(ConfigError, match="already quantized"):
        apply_step(model, "quantize", {"method": "int8_weight", "ignore": ["lm_head"]})


def test_size_accounting_matches_model_size_bytes(base):
    model, res = apply_step(copy.deepcopy(base), "quantize", {"method": "torchao_int8_weight"})
    assert res.size_bytes_after == model_size_bytes(model)
    assert type(model.model.layers[0].mlp.up_proj.weight).__name__ != "Parameter"


def test_torchao_so_warning_filter():
    quiet_torchao_import()
    quiet_torchao_import()  # idempotent
    log = logging.getLogger("torchao")
    assert len([f for f in log.filters if type(f).__name__ == "_DropNoise"]) == 1
    rec = logging.LogRecord(
        "torchao", logging.WARNING, __file__, 1, "Failed to load /x/_C_mxfp8.so: nope", None, None
    )
    other = logging.LogRecord("torchao", logging.WARNING, __file__, 1, "real warning", None, None)
    assert not log.filter(rec) and log.filter(other)


# ------------------------------------------------------------------ SmolLM2-135M (slow)
def _wikitext_ids(tok, shared_data, n_tokens):
    path = shared_data / "wikitext" / "wiki.test.raw"
    if not path.exists():
        pytest.skip(f"{path} is absent (WikiText-2 test text)")
    text = path.read_text(encoding="utf-8")[: 12 * n_tokens]
    ids = torch.tensor(tok(text)["input_ids"][:n_tokens])
    assert ids.numel() == n_tokens
    return ids


@pytest.mark.slow
def test_smollm2_int8_weight_perplexity_within_2_percent(smollm2, shared_data):
    model, tok = smollm2
    ids = _wikitext_ids(tok, shared_data, 512)
    ppl_fp32 = token_perplexity(model, ids, 256)
    q, res = apply_step(copy.deepcopy(model), "quantize", {"method": "int8_weight"})
    ppl_q = token_perplexity(q, ids, 256)
    assert 5 < ppl_fp32 < 100  # a real language model on real text
    assert abs(ppl_q / ppl_fp32 - 1) <= 0.02, (ppl_fp32, ppl_q)
    assert res.stats["quantized_modules"] == 30 * 7
    assert res.size_bytes_after < 0.45 * res.size_bytes_before


@pytest.mark.slow
def test_smollm2_int8_weight_save_reload_identical(smollm2, tmp_path):
    from greenllm.models import load_model, save

    model, tok = smollm2
    q, _ = apply_step(copy.deepcopy(model), "quantize", {"method": "int8_weight"})
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.inference_mode():
        ref = q(ids).logits
    out = save(q, tmp_path / "smollm2-int8", tok)
    again, _ = load_model(str(out))
    with torch.inference_mode():
        assert torch.equal(again(ids).logits, ref)
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()
    assert model_size_bytes(again) == model_size_bytes(q)


@pytest.mark.slow
def test_bnb_4bit_bad_roundtrip_is_refused_on_real_weights(smollm2_dir):
    """bitsandbytes 0.50.2 on CPU mis-quantizes SmolLM2's q_proj at block size 128; the guard
    refuses it (model unchanged) while the default block size 64 passes."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    from safetensors import safe_open

    with safe_open(str(smollm2_dir / "model.safetensors"), "pt") as fh:
        w = fh.get_tensor("model.layers.0.self_attn.q_proj.weight")
    model = torch.nn.Sequential(torch.nn.Linear(w.shape[1], w.shape[0], bias=False))
    model[0].weight.data = w.clone()
    _, res = apply_step(copy.deepcopy(model), "quantize", {"method": "bnb_nf4", "ignore": []})
    assert res.stats["blocksize"] == 64 and res.stats["max_roundtrip_error"] < 0.2
    try:
        _, res = apply_step(
            model, "quantize", {"method": "bnb_nf4", "ignore": [], "group_size": 128}
        )
    except UnsupportedError as exc:
        assert "relative error" in str(exc) and type(model[0]) is torch.nn.Linear
    else:  # a bitsandbytes release that fixed the bug
        assert res.stats["max_roundtrip_error"] < 0.3


def test_int8_weight_keeps_a_tied_embedding_as_one_int8_matrix(tmp_path):
    """With lm_head quantized and tied to the input embedding, the embedding reads the head's
    int8 rows: the tied matrix is stored once, as int8, and the model saves and reloads."""
    import torch

    from greenllm.models import load_model, model_size_bytes, save
    from greenllm.steps import compress
    from greenllm.steps.quant_native import Int8Embedding
    from greenllm.testing import tiny_causal_lm, tiny_tokenizer

    model, tok = tiny_causal_lm(3, tie_word_embeddings=True), tiny_tokenizer()
    ids = torch.tensor([tok("tied weights, stored once").input_ids])
    with torch.no_grad():
        ref = model(ids).logits
    emb_rows = model.get_input_embeddings().weight.detach().clone()
    q, (res,) = compress(model, ["quantize:method=int8_weight,ignore=[]"])
    assert res.stats["tied_embedding"] == "lm_head"
    emb = q.get_input_embeddings()
    assert isinstance(emb, Int8Embedding)
    # the embedding rows are the head's de-quantized rows, within int8 rounding of the original
    step = emb_rows.abs().amax(dim=1, keepdim=True) / 127
    assert torch.all((emb.weight - emb_rows).abs() <= step / 2 + 1e-7)
    # stored once: 259x64 int8 + 259 float32 scales, not a second float matrix
    vocab, hidden = emb_rows.shape
    big = [k for k, t in q.state_dict().items() if tuple(t.shape) == (vocab, hidden)]
    assert big == ["lm_head.weight_int8"]
    assert res.size_bytes_after == model_size_bytes(q) < res.size_bytes_before / 3
    with torch.no_grad():
        out = q(ids).logits
    assert torch.allclose(out, ref, atol=0.05 * ref.abs().max().item())
    save(q, tmp_path / "q", tok)
    r, _ = load_model(str(tmp_path / "q"))
    assert isinstance(r.get_input_embeddings(), Int8Embedding)
    with torch.no_grad():
        assert torch.equal(r(ids).logits, out)
    assert model_size_bytes(r) == model_size_bytes(q)
