"""LoRA recovery through peft on the tiny in-code Llama."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import greenllm  # noqa: E402
from greenllm.config import parse_config, to_dict  # noqa: E402
from greenllm.errors import ConfigError  # noqa: E402
from greenllm.steps import StepContext, apply_step, compress  # noqa: E402
from greenllm.steps.lora import LoraConfig, lora_module_count  # noqa: E402
from greenllm.testing import tiny_causal_lm, tiny_tokenizer  # noqa: E402

TEXT = "LoRA adds a low-rank update to frozen weights. Merging folds it back in. " * 30


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_trains_merges_and_changes_outputs():
    tok = tiny_tokenizer()
    model = tiny_causal_lm(0)
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(1))
    before = _logits(model, ids)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = {
        "r": 4,
        "alpha": 8,
        "dropout": 0.0,
        "targets": ["q_proj", "v_proj", "up_proj"],
        "data": [TEXT],
        "seq_len": 32,
        "batch_size": 4,
        "epochs": 3,
        "lr": 5e-3,
    }
    out, res = apply_step(model, "lora", cfg, StepContext(tokenizer=tok))
    st = res.stats
    assert st["merged"] and st["adapted_modules"] == 3 * 2  # 3 targets x 2 layers
    assert 0 < st["trainable_fraction"] < 0.2
    assert st["last_loss"] < st["first_loss"]
    assert lora_module_count(out) == 0
    assert not any("lora" in n for n, _ in out.named_modules())
    assert type(out).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in out.parameters()) == n_params
    assert all(p.requires_grad for p in out.parameters())
    after = _logits(out, ids)
    assert not torch.allclose(before, after, atol=1e-4)
    # only the adapted projections changed; k_proj and the embeddings did not
    fresh = tiny_causal_lm(0)
    assert torch.equal(
        out.model.layers[0].self_attn.k_proj.weight, fresh.model.layers[0].self_attn.k_proj.weight
    )
    assert not torch.equal(
        out.model.layers[0].self_attn.q_proj.weight, fresh.model.layers[0].self_attn.q_proj.weight
    )


def test_lora_without_merge_keeps_adapters():
    out, res = apply_step(
        tiny_causal_lm(0),
        "lora",
        {"merge": False, "r": 2, "data": [TEXT], "seq_len": 32, "max_steps": 2},
        StepContext(tokenizer=tiny_tokenizer()),
    )
    assert lora_module_count(out) > 0 and not res.stats["merged"]


def test_lora_merge_keeps_pruning_masks():
    tok = tiny_tokenizer()
    model, _ = compress(tiny_causal_lm(0), [greenllm.Prune(method="magnitude", sparsity=0.5)])
    w = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    zeros = w == 0
    assert zeros.float().mean() > 0.4
    out, res = apply_step(
        model,
        "lora",
        {"targets": ["q_proj"], "data": [TEXT], "seq_len": 32, "max_steps": 3, "lr": 1e-2},
        StepContext(tokenizer=tok),
    )
    w2 = out.model.layers[0].self_attn.q_proj.weight
    assert res.stats["masks_reapplied"] > 0
    assert bool((w2[zeros] == 0).all())
    assert not torch.equal(w2, w)  # the unpruned weights did move


@pytest.mark.parametrize("eval_fraction", [0.0, 0.25])
def test_lora_on_a_pruned_model_reports_the_loss_of_the_returned_model(eval_fraction):
    """The merge re-masks the dense adapter update, so the loss in the stats must be measured
    on the re-pruned model that is returned, not on the model with adapters in place."""
    from greenllm.steps.data import build_batches
    from greenllm.steps.train import causal_lm_loss, evaluate_loss

    tok = tiny_tokenizer()
    model, _ = compress(tiny_causal_lm(0), [{"prune": {"method": "magnitude", "sparsity": 0.5}}])
    body = {
        "targets": ["q_proj", "v_proj", "up_proj"],
        "data": [TEXT],
        "seq_len": 32,
        "batch_size": 4,
        "max_steps": 4,
        "lr": 2e-2,
        "dropout": 0.0,
        "eval_fraction": eval_fraction,
    }
    out, res = apply_step(model, "lora", body, StepContext(tokenizer=tok))
    st = res.stats
    train_b, eval_b = build_batches(
        tok, [TEXT], seq_len=32, batch_size=4, eval_fraction=eval_fraction, seed=0
    )
    again = evaluate_loss(out, eval_b or train_b, causal_lm_loss)
    assert st["final_loss"] == pytest.approx(again, abs=1e-6)
    assert st["final_loss_data"] == ("eval" if eval_fraction else "train")
    assert st["remasked_after_merge"] is True and st["masks_reapplied"] > 0
    # re-masking really changed the model: the adapter-in-place loss differs
    assert abs(st["loss_before_remask"] - st["final_loss"]) > 1e-6
    assert bool(
        (
            out.model.layers[0].self_attn.q_proj.weight[
                ~out.model.layers[0].self_attn.q_proj._greenllm_prune_mask
            ]
            == 0
        ).all()
    )


def test_lora_without_masks_reports_the_loss_of_the_returned_model():
    from greenllm.steps.data import build_batches
    from greenllm.steps.train import causal_lm_loss, evaluate_loss

    tok = tiny_tokenizer()
    for merge in (True, False):
        out, res = apply_step(
            tiny_causal_lm(0),
            "lora",
            {
                "merge": merge,
                "r": 2,
                "data": [TEXT],
                "seq_len": 32,
                "batch_size": 4,
                "max_steps": 2,
                "dropout": 0.0,
            },
            StepContext(tokenizer=tok),
        )
        train_b, _ = build_batches(tok, [TEXT], seq_len=32, batch_size=4, seed=0)
        assert res.stats["final_loss"] == pytest.approx(
            evaluate_loss(out, train_b, causal_lm_loss), abs=1e-6
        )
        assert res.stats["remasked_after_merge"] is False
        assert "loss_before_remask" not in res.stats


def test_qlora_needs_a_4bit_model_and_no_merge():
    with pytest.raises(ConfigError, match="merge: merging adapters into 4-bit"):
        parse_config(LoraConfig, {"method": "qlora"}, "lora")
    with pytest.raises(ConfigError, match="bnb_nf4"):
        apply_step(
            tiny_causal_lm(0),
            "lora",
            {"method": "qlora", "merge": False, "data": [TEXT]},
            StepContext(tokenizer=tiny_tokenizer()),
        )


def test_unknown_target_module_is_config_error():
    with pytest.raises(ConfigError, match="targets"):
        apply_step(
            tiny_causal_lm(0),
            "lora",
            {"targets": ["nope_proj"], "data": [TEXT], "seq_len": 32},
            StepContext(tokenizer=tiny_tokenizer()),
        )


def test_lora_config_round_trips():
    raw = {
        "method": "lora",
        "r": 16,
        "alpha": 32.0,
        "dropout": 0.1,
        "targets": ["q_proj", "v_proj"],
        "merge": True,
        "data": "train.jsonl",
        "task": "instruct",
        "epochs": 2,
        "grad_accum": 4,
        "precision": "bf16",
        "gradient_checkpointing": True,
    }
    cfg = parse_config(LoraConfig, raw, "lora")
    assert parse_config(LoraConfig, json.loads(json.dumps(to_dict(cfg))), "lora") == cfg
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        parse_config(LoraConfig, {"alpah": 3}, "lora")
    with pytest.raises(ConfigError, match="r: 0"):
        parse_config(LoraConfig, {"r": 0}, "lora")


@pytest.mark.slow
def test_lora_on_smollm2_reduces_loss(smollm2_fresh):
    """A few LoRA steps on SmolLM2-135M lower its loss on the training text (merged back)."""
    from greenllm.steps.data import build_batches
    from greenllm.steps.train import causal_lm_loss, evaluate_loss

    model, tok = smollm2_fresh
    batches, _ = build_batches(tok, "builtin:wiki-sample", seq_len=64, batch_size=2, max_examples=4)
    before = evaluate_loss(model, batches, causal_lm_loss)
    out, res = apply_step(
        model,
        "lora",
        {
            "data": "builtin:wiki-sample",
            "seq_len": 64,
            "batch_size": 2,
            "max_examples": 4,
            "epochs": 3,
            "lr": 2e-3,
            "r": 8,
            "targets": ["q_proj", "v_proj"],
        },
        StepContext(tokenizer=tok),
    )
    after = evaluate_loss(out, batches, causal_lm_loss)
    assert res.stats["steps"] == 6 and lora_module_count(out) == 0
    assert after < before - 0.05, (before, after)


def test_lora_with_gradient_checkpointing_and_bf16_trains():
    out, res = apply_step(
        tiny_causal_lm(0),
        "lora",
        {
            "data": [TEXT],
            "seq_len": 32,
            "epochs": 2,
            "lr": 5e-3,
            "gradient_checkpointing": True,
            "precision": "bf16",
            "targets": ["q_proj", "v_proj"],
        },
        StepContext(tokenizer=tiny_tokenizer()),
    )
    assert res.stats["last_loss"] < res.stats["first_loss"]
    assert not out.is_activation_checkpointing and lora_module_count(out) == 0
