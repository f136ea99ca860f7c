"""greenllm.memory: parameter counts, stored sizes, KV cache, training parts, device fit."""

from __future__ import annotations

import dataclasses

import pytest

from greenllm.devices import get_profile
from greenllm.errors import ConfigError, ModelError, UnsupportedError
from greenllm.memory import (
    GIB,
    RUNTIME_BYTES,
    MemoryEstimate,
    check_fit,
    estimate_inference,
    estimate_step,
    estimate_training,
    usable_memory_bytes,
)
from greenllm.memory_steps import apply_steps, weight_bytes
from greenllm.modeldims import SMOLLM2_135M_CONFIG, matches, model_config, model_dims

# hidden 64, 2 layers, 4 heads of 16, 2 KV heads, FFN 128, vocabulary 100
TINY = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 100,
    "tie_word_embeddings": False,
    "max_position_embeddings": 256,
}
# by hand: q 64x64, k 64x32, v 64x32, o 64x64, gate/up/down 64x128 each
TINY_LAYER_LINEAR = 4096 + 2048 + 2048 + 4096 + 3 * 8192
TINY_PARAMS = 100 * 64 + 2 * (TINY_LAYER_LINEAR + 2 * 64) + 64 + 100 * 64


def test_tiny_config_params_by_hand():
    d = model_dims(TINY)
    assert d.head_dim == 16
    assert d.layer_linear_params == TINY_LAYER_LINEAR == 36864
    assert d.param_parts() == {
        "embeddings": 6400,
        "layer_linears": 2 * 36864,
        "layer_norms": 2 * 128,
        "final_norm": 64,
        "lm_head": 6400,
    }
    assert d.total_params == TINY_PARAMS == 86848


def test_tied_embeddings_counted_once():
    tied = model_dims({**TINY, "tie_word_embeddings": True})
    assert tied.lm_head_params == 0
    assert tied.total_params == TINY_PARAMS - 100 * 64
    # Gemma ties by default: a config that leaves the key out is tied
    gemma = {**TINY, "model_type": "gemma", "head_dim": 16}
    del gemma["tie_word_embeddings"]
    assert model_dims(gemma).tie_word_embeddings is True


def test_kv_cache_by_hand():
    est = estimate_inference(TINY, dtype="float32", batch_size=3, context_tokens=10)
    # 2 (k and v) x 2 layers x 2 kv heads x 16 head_dim x 10 tokens x 3 sequences x 4 bytes
    assert est.parts_bytes["kv_cache"] == 2 * 2 * 2 * 16 * 10 * 3 * 4 == 15360
    half = estimate_inference(TINY, dtype="bfloat16", batch_size=3, context_tokens=10)
    assert half.parts_bytes["kv_cache"] == 15360 // 2
    assert est.parts_bytes["weights"] == TINY_PARAMS * 4
    assert half.parts_bytes["weights"] == TINY_PARAMS * 2
    assert est.parts_bytes["runtime"] == RUNTIME_BYTES["torch"]
    assert est.total_bytes == sum(est.parts_bytes.values())


def test_activations_by_hand():
    est = estimate_inference(TINY, batch_size=2, context_tokens=20, prefill_tokens=8)
    # logits 2 x 8 x 100 x 4, plus one layer's residual, normed input and MLP intermediates
    assert est.parts_bytes["activations"] == 2 * 8 * 100 * 4 + 2 * 8 * (2 * 64 + 3 * 128) * 4
    last = estimate_inference(
        TINY, batch_size=2, context_tokens=20, prefill_tokens=8, logits_tokens=1
    )
    assert last.parts_bytes["activations"] < est.parts_bytes["activations"]


def test_context_defaults_to_the_full_window():
    est = estimate_inference(TINY)
    assert est.parts_bytes["kv_cache"] == 2 * 2 * 2 * 16 * 256 * 4
    assert any("256 tokens" in n for n in est.notes)


def test_int8_and_4bit_shrink_the_linear_weights():
    d = model_dims(SMOLLM2_135M_CONFIG)
    dense = estimate_inference(d, context_tokens=64).parts_bytes["weights"]
    lin = d.linears(head=False)
    rows = sum(x.out_features for x in lin)
    n = sum(x.in_features * x.out_features for x in lin)
    others = dense - 4 * n  # embedding (tied head) and norms stay float32
    int8 = estimate_inference(d, context_tokens=64, steps=[("quantize", {"method": "int8_weight"})])
    assert int8.parts_bytes["weights"] == others + n + 4 * rows  # 1 byte + a float32 scale/row
    notes: list[str] = []
    state = apply_steps(d, [("quantize", {"method": "rtn"})], notes)
    stored, kernel = weight_bytes(state, 4, notes)
    groups = sum(x.out_features * (x.in_features // 64) for x in lin)
    assert stored == others + n // 2 + 4 * groups + 16 * len(lin)  # codes, scales, shapes
    assert kernel == n // 2 + 4 * groups  # the CPU int4 kernel's layout
    # 0.5 byte per weight + a float32 scale per 64: 4 / (0.5 + 4 / 64) = 7.1x below float32
    assert 7.0 < 4 * n / (stored - others) < 7.2
    # the tied head quantized with int8_weight serves as the embedding: the matrix once, int8
    tied = estimate_inference(
        d, context_tokens=64, steps=[("quantize", {"method": "int8_weight", "ignore": []})]
    )
    vh = d.vocab_size * d.hidden_size
    assert tied.parts_bytes["weights"] == int8.parts_bytes["weights"] - 4 * vh + vh + 4 * 49152


def test_storage_matches_the_quantized_tiny_model():
    from greenllm import Quantize, compress
    from greenllm.models import model_size_bytes
    from greenllm.testing import tiny_causal_lm

    for tie in (False, True):
        for q in (
            Quantize(method="int8_weight"),
            Quantize(method="int8_weight", ignore=[]),
            Quantize(method="rtn"),
            Quantize(method="rtn", sym=False, group_size=32),
            Quantize(method="bf16"),
            Quantize(method="dynamic_int8"),
        ):
            model = tiny_causal_lm(0, tie_word_embeddings=tie)
            config = model.config.to_dict()
            model, _ = compress(model, [q])
            state = apply_steps(model_dims(config), [("quantize", q)], [])
            stored, _ = weight_bytes(state, 4, [])
            assert stored == model_size_bytes(model), (tie, q.method, q.ignore)


def test_unstructured_pruning_keeps_dense_storage_structured_shrinks():
    base = estimate_inference(TINY, context_tokens=16)
    wanda = estimate_inference(
        TINY, context_tokens=16, steps=[("prune", {"method": "wanda", "sparsity": 0.5})]
    )
    assert wanda.parts_bytes == base.parts_bytes
    notes: list[str] = []
    neurons = apply_steps(
        model_dims(TINY), [("prune", {"method": "neurons", "sparsity": 0.25})], []
    )
    assert neurons.dims.intermediate_size == 96
    layers = apply_steps(model_dims(TINY), [("prune", {"method": "layers", "sparsity": 0.5})], [])
    assert layers.dims.num_layers == 1
    kv = apply_steps(
        model_dims(TINY),
        [("prune", {"method": "heads", "sparsity": 0.5, "head_unit": "kv_group"})],
        notes,
    )
    assert (kv.dims.num_heads, kv.dims.num_kv_heads) == (2, 1)
    small = estimate_inference(kv.dims, context_tokens=16)
    assert small.parts_bytes["kv_cache"] == base.parts_bytes["kv_cache"] // 2


def test_structured_prune_matches_the_real_step():
    from greenllm import Prune, compress
    from greenllm.testing import tiny_causal_lm

    for cfg in (
        Prune(method="neurons", sparsity=0.25),
        Prune(method="heads", sparsity=0.5, head_unit="kv_group"),
        Prune(method="heads", sparsity=0.5),
    ):
        model = tiny_causal_lm(0)
        dims = model_dims(model.config.to_dict())
        model, _ = compress(model, [cfg])
        got = apply_steps(dims, [("prune", cfg)], []).dims
        assert got.total_params == sum(p.numel() for p in model.parameters()), cfg


def test_distill_student_and_unknown_steps():
    notes: list[str] = []
    student = apply_steps(
        model_dims(SMOLLM2_135M_CONFIG), [("distill", {"student": {"keep_every": 2}})], notes
    )
    assert student.dims.num_layers == 15
    same = apply_steps(model_dims(TINY), [("mystery", {"x": 1})], notes)
    assert same.dims == model_dims(TINY)
    assert any("mystery" in n and "unchanged" in n for n in notes)


def test_steps_as_parsed_by_the_recipe():
    from greenllm.recipe import load_recipe

    recipe = load_recipe("recipes/quickstart.yaml")
    est = {
        name: estimate_inference(SMOLLM2_135M_CONFIG, steps=steps, context_tokens=64)
        for name, steps in recipe.variants.items()
    }
    base = estimate_inference(SMOLLM2_135M_CONFIG, context_tokens=64).parts_bytes["weights"]
    assert est["wanda50"].parts_bytes["weights"] == base
    assert est["int8"].parts_bytes["weights"] == est["wanda50-int8"].parts_bytes["weights"]
    assert 3.5 < base / est["int8"].parts_bytes["weights"] < 4.0  # 538 MB -> ~135 MB


def test_checkpointing_lowers_training_activations():
    kw = dict(dtype="float32", batch_size=4, seq_len=256)
    plain = estimate_training(SMOLLM2_135M_CONFIG, **kw)
    ckpt = estimate_training(SMOLLM2_135M_CONFIG, gradient_checkpointing=True, **kw)
    assert ckpt.parts_bytes["activations"] < plain.parts_bytes["activations"] / 2
    n = model_dims(SMOLLM2_135M_CONFIG).total_params
    assert plain.parts_bytes["weights"] == plain.parts_bytes["gradients"] == 4 * n
    assert plain.parts_bytes["optimizer"] == 8 * n  # AdamW: exp_avg + exp_avg_sq
    sgd = estimate_training(SMOLLM2_135M_CONFIG, optimizer="sgd", **kw)
    assert sgd.parts_bytes["optimizer"] == 0
    momentum = estimate_training(SMOLLM2_135M_CONFIG, optimizer="sgd_momentum", **kw)
    assert momentum.parts_bytes["optimizer"] == 4 * n


def test_layer_activations_by_hand():
    from greenllm.memory import layer_activation_bytes

    d = model_dims(TINY)
    # 3 per norm x 2 norms x 64 + q, out 2x64 + k, v 2x32 + 4 x 128; + 4-byte lse per head
    per_token = 4 * (6 * 64 + 2 * 64 + 2 * 32 + 4 * 128) + 4 * 4
    assert layer_activation_bytes(d, 10, 4) == 10 * per_token


def test_lora_trains_few_parameters():
    est = estimate_training(SMOLLM2_135M_CONFIG, batch_size=2, seq_len=128, lora_rank=8)
    # peft's default llama targets: q_proj (576 -> 576) and v_proj (576 -> 192) in 30 layers
    n = 30 * 8 * ((576 + 576) + (576 + 192))
    assert est.parts_bytes["gradients"] == 4 * n
    assert est.parts_bytes["optimizer"] == 8 * n
    with pytest.raises(ConfigError, match="lora.targets"):
        estimate_training({**TINY, "model_type": "phi3"}, batch_size=1, seq_len=8, lora_rank=4)


def test_estimate_step_reads_the_step_configs():
    from greenllm.steps.distill import DistillConfig, StudentConfig
    from greenllm.steps.lora import LoraConfig
    from greenllm.steps.train import TrainConfig

    c = SMOLLM2_135M_CONFIG
    train = estimate_step(c, "float32", "train", TrainConfig(batch_size=2, seq_len=64))
    direct = estimate_training(c, dtype="float32", batch_size=2, seq_len=64)
    assert train is not None and train.parts_bytes == direct.parts_bytes
    ckpt = estimate_step(
        c, "float32", "train", TrainConfig(batch_size=2, seq_len=64, gradient_checkpointing=True)
    )
    assert ckpt is not None and ckpt.total_bytes < train.total_bytes
    bf16 = estimate_step(c, "float32", "train", TrainConfig(precision_schedule="bf16:0.5,fp32"))
    assert bf16 is not None
    lora = estimate_step(c, "float32", "lora", LoraConfig(r=4, batch_size=2, seq_len=64))
    assert lora is not None and lora.parts_bytes["gradients"] < train.parts_bytes["gradients"]
    distill = estimate_step(
        c,
        "float32",
        "distill",
        DistillConfig(student=StudentConfig(keep_every=2), batch_size=2, seq_len=64),
    )
    assert distill is not None
    n = model_dims(c).total_params
    assert distill.parts_bytes["teacher"] == 4 * n
    assert distill.parts_bytes["weights"] < 4 * n  # 15 of 30 layers
    assert estimate_step(c, "float32", "quantize", {"method": "int8_weight"}) is None


def test_missing_and_bad_keys_are_named():
    bad = dict(TINY)
    del bad["intermediate_size"]
    with pytest.raises(ModelError, match="missing key 'intermediate_size'"):
        model_dims(bad)
    with pytest.raises(ModelError, match="'hidden_size' / 'n_embd' is 'big'"):
        model_dims({**TINY, "hidden_size": "big"})
    with pytest.raises(ModelError, match="model_type"):
        model_dims({k: v for k, v in TINY.items() if k != "model_type"})
    with pytest.raises(UnsupportedError, match="'mamba'"):
        model_dims({**TINY, "model_type": "mamba"})


def test_gpt2_style_keys():
    d = model_dims(
        {
            "model_type": "gpt2",
            "n_embd": 64,
            "n_layer": 2,
            "n_head": 4,
            "vocab_size": 100,
            "n_positions": 128,
        }
    )
    assert (d.hidden_size, d.num_layers, d.intermediate_size, d.tie_word_embeddings) == (
        64,
        2,
        256,
        True,
    )
    assert d.embedding_params == 100 * 64 + 128 * 64  # token + learned position embeddings


_SMALL = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=101,
    max_position_embeddings=128,
    pad_token_id=0,
)


@pytest.mark.parametrize(
    "model_type,extra",
    [
        ("llama", {}),
        ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}),
        ("mistral", {}),
        ("qwen2", {}),
        ("qwen3", {"head_dim": 32}),
        ("gemma", {"head_dim": 32}),
        ("gemma2", {"head_dim": 32}),
        ("gemma3_text", {"head_dim": 32}),
        ("phi3", {}),
        ("gpt2", None),
    ],
)
def test_param_count_equals_transformers(model_type, extra):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if extra is None:
        kw = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=101, n_positions=128)
    else:
        kw = {**_SMALL, **extra}
    cfg = AutoConfig.for_model(model_type, **kw)
    model = AutoModelForCausalLM.from_config(cfg)
    for config in (cfg.to_dict(), cfg.to_diff_dict()):  # config.json holds the diff form
        d = model_dims(config)
        assert d.total_params == sum(p.numel() for p in model.parameters())
    real = {
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"
    }
    assert {x.name for x in d.linears()} == real


def test_matches_agrees_with_the_steps_rule():
    from greenllm.steps.select import matches as step_matches

    names = ["model.layers.0.mlp.down_proj", "model.layers.12.self_attn.q_proj", "lm_head"]
    pats = ["down_proj", "mlp.*", "*.self_attn.*", "model.layers.1[0-9].*", "lm_head", "q_*"]
    for name in names:
        for pat in pats:
            assert matches(name, pat) == step_matches(name, pat), (name, pat)


def test_describe_and_to_dict():
    est = MemoryEstimate(
        {"weights": GIB // 2, "kv_cache": GIB // 50, "activations": GIB // 10, "runtime": 0}
    )
    assert (
        est.describe() == "~0.62 GiB (weights 0.50, KV cache 0.02, activations 0.10, runtime 0.00)"
    )
    assert est.to_dict()["total_bytes"] == est.total_bytes
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.notes = []  # type: ignore[misc]


def test_check_fit_message():
    est = MemoryEstimate({"weights": 3 * GIB, "runtime": GIB // 2})
    assert check_fit(est, 4 * GIB, "orin") is None
    assert check_fit(est, None, "cpu") is None  # unknown memory: no verdict
    assert check_fit(est, 3 * GIB, "orin") == "does not fit: needs ~3.50 GiB, orin has 3.00 GiB"


def test_usable_memory_reserve_on_jetson():
    orin, why = usable_memory_bytes(get_profile("jetson-orin-nano-8gb"))
    assert orin == 8 * GIB - 3 * GIB // 2
    assert "shared by CPU and GPU" in why and "1.5 GiB" in why
    nano, _ = usable_memory_bytes(get_profile("jetson-nano-4gb"))
    assert nano == 3 * GIB
    agx, _ = usable_memory_bytes(get_profile("jetson-agx-orin-64gb"))
    assert agx == 62 * GIB
    assert usable_memory_bytes(get_profile("jetson-nano-4gb"), override_bytes=2 * GIB)[0] == (
        2 * GIB
    )


def test_usable_memory_without_a_fixed_size():
    import psutil

    got, why = usable_memory_bytes(get_profile("cpu"))
    assert got is None and "unknown" in why
    got, why = usable_memory_bytes(get_profile("cpu"), local=True)
    assert got == psutil.virtual_memory().total - GIB and "psutil" in why
    got, _ = usable_memory_bytes(get_profile("nvidia-gpu"), local=True, nvml=_FakeNvml())
    assert got == 80 * GIB


class _FakeNvml:
    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Mem", (), {"total": 80 * GIB})()


def test_model_config_reads_a_greenllm_checkpoint(tmp_path):
    from greenllm import Quantize, compress
    from greenllm.models import save
    from greenllm.testing import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(0)
    n = sum(p.numel() for p in model.parameters())
    model, _ = compress(model, [Quantize(method="int8_weight")])
    out = save(model, tmp_path / "ckpt", tok)
    assert (out / "greenllm.json").exists()
    config = model_config(str(out))
    assert config is not None and config["hidden_size"] == 64
    assert model_dims(config).total_params == n
    assert model_config(str(out / "config.json")) == config
    assert model_config(str(tmp_path / "absent")) is None
    assert model_config("nobody/never-downloaded-model-xyz") is None


def test_model_config_of_the_offline_alias():
    config = model_config("smollm2-135m")
    assert config is not None and model_dims(config) == model_dims(SMOLLM2_135M_CONFIG)


def test_smollm2_param_count_is_exact(smollm2_dir, smollm2):
    model, _ = smollm2
    config = model_config(str(smollm2_dir))
    assert config is not None
    assert model_dims(config).total_params == sum(p.numel() for p in model.parameters())
    assert model_dims(SMOLLM2_135M_CONFIG).total_params == model_dims(config).total_params
