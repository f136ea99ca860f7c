"""The shared training loop and the ``train`` step, on the tiny in-code Llama."""

from __future__ import annotations

import copy
import json
import math

import pytest

torch = pytest.importorskip("torch")

import greenllm  # noqa: E402
from greenllm.config import parse_config, to_dict  # noqa: E402
from greenllm.errors import ConfigError, DataError, GreenLLMError, UnsupportedError  # noqa: E402
from greenllm.steps import apply_step, compress  # noqa: E402
from greenllm.steps.data import build_batches, load_source  # noqa: E402
from greenllm.steps.train import (  # noqa: E402
    EarlyStopping,
    TrainConfig,
    TrainLoopConfig,
    causal_lm_loss,
    lr_at,
    train_loop,
)
from greenllm.testing import tiny_causal_lm, tiny_tokenizer  # noqa: E402

TEXT = (
    "Energy is measured in joules and power in watts. A model that runs faster at the same "
    "power uses less energy. "
) * 30


def _blocks(n=8, seq=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, seq), generator=g)
    return x


def _batch(x):
    return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_lr_schedule_cosine_with_warmup_values():
    total, warm, base = 10, 2, 1.0
    lrs = [lr_at(s, total, warm, base) for s in range(total)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    # cosine over the 8 remaining steps (0..7 of 7 intervals), ending at the floor
    for s in range(2, 10):
        p = (s - 2) / 7
        assert lrs[s] == pytest.approx(0.5 * (1 + math.cos(math.pi * p)))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lr_at(9, 10, 2, 1.0, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_loop_records_lr_from_schedule():
    model = tiny_causal_lm(0)
    x = _blocks(8)
    batches = [_batch(x[i : i + 2]) for i in range(0, 8, 2)]
    cfg = TrainLoopConfig(epochs=2, lr=1e-3, warmup_ratio=0.25, log_every_steps=1, shuffle=False)
    rep = train_loop(model, batches, cfg=cfg)
    assert rep.steps == 8
    assert [e["lr"] for e in rep.log] == pytest.approx([lr_at(s, 8, 2, 1e-3) for s in range(8)])
    assert rep.tokens == 2 * 8 * 15  # 2 epochs of 8 rows, 15 predicted tokens each
    assert len(rep.epochs) == 2 and all(e["duration_s"] >= 0 for e in rep.epochs)


def test_grad_accumulation_equals_large_batch():
    x = _blocks(8)
    m1, m2 = tiny_causal_lm(0), tiny_causal_lm(0)
    # SGD: the update is lr * gradient, so equal weights mean equal gradients
    kw = dict(max_steps=1, lr=1.0, shuffle=False, max_grad_norm=None, optimizer="sgd")
    cfg_big = TrainLoopConfig(**kw)
    cfg_acc = TrainLoopConfig(grad_accum=4, **kw)
    train_loop(m1, [_batch(x)], cfg=cfg_big)
    train_loop(m2, [_batch(x[i : i + 2]) for i in range(0, 8, 2)], cfg=cfg_acc)
    for (n, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), n
    # and the update really moved the weights, differently from one micro-batch alone
    m0, m3 = tiny_causal_lm(0), tiny_causal_lm(0)
    assert not torch.allclose(m0.lm_head.weight, m1.lm_head.weight, atol=1e-4)
    train_loop(m3, [_batch(x[:2])], cfg=cfg_big)
    assert not torch.allclose(m3.lm_head.weight, m1.lm_head.weight, atol=1e-4)


def test_grad_accumulation_is_token_weighted_with_padding():
    """Micro-batches with different numbers of target tokens still give the big-batch step."""
    x = _blocks(4)
    labels = x.clone()
    labels[0, 5:] = -100  # row 0 has few target tokens
    big = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": labels}
    small = [{k: v[i : i + 1] for k, v in big.items()} for i in range(4)]
    m1, m2 = tiny_causal_lm(1), tiny_causal_lm(1)
    kw = dict(max_steps=1, lr=1.0, shuffle=False, max_grad_norm=None, optimizer="sgd")
    train_loop(m1, [big], cfg=TrainLoopConfig(**kw))
    train_loop(m2, small, cfg=TrainLoopConfig(grad_accum=4, **kw))
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradient_checkpointing_gives_same_gradients():
    x = _blocks(4)
    b = _batch(x)
    grads = []
    for ckpt in (False, True):
        model = tiny_causal_lm(0)
        model.train()
        if ckpt:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
            assert model.is_activation_checkpointing
        causal_lm_loss(model, b).backward()
        grads.append(_grads(model))
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n
    # and through the loop: same weights after a step, checkpointing switched off afterwards
    m1, m2 = tiny_causal_lm(0), tiny_causal_lm(0)
    kw = dict(max_steps=1, lr=1.0, optimizer="sgd")
    train_loop(m1, [b], cfg=TrainLoopConfig(**kw))
    train_loop(m2, [b], cfg=TrainLoopConfig(gradient_checkpointing=True, **kw))
    assert not m2.is_activation_checkpointing
    for a, c in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(a, c, atol=1e-6)


def test_seeded_runs_are_reproducible_and_seed_matters():
    x = _blocks(12)
    batches = [_batch(x[i : i + 2]) for i in range(0, 12, 2)]

    def run(seed):
        m = tiny_causal_lm(0)
        rep = train_loop(m, batches, cfg=TrainLoopConfig(epochs=2, lr=5e-3, seed=seed))
        return m, rep

    a, ra = run(3)
    b, rb = run(3)
    c, _ = run(4)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert ra.last_loss == rb.last_loss
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_early_stopping_stops_after_patience():
    x = _blocks(8)
    train_b = [_batch(x[:4]), _batch(x[4:6])]
    eval_b = [_batch(x[6:])]
    # min_delta so large that no evaluation after the first counts as an improvement
    cfg = TrainLoopConfig(
        epochs=10, lr=1e-3, early_stopping=EarlyStopping(patience=2, min_delta=1e6)
    )
    rep = train_loop(tiny_causal_lm(0), train_b, cfg=cfg, eval_batches=eval_b)
    assert rep.stopped_early and rep.epochs_run == 3 and rep.steps == 6
    assert [e["improved"] for e in rep.evals] == [True, False, False]


def test_early_stopping_on_real_overfitting():
    """Memorising one random sequence at a high lr makes held-out loss rise: the loop stops."""
    g = torch.Generator().manual_seed(0)
    train_x = torch.randint(0, 256, (2, 32), generator=g)
    eval_x = torch.randint(0, 256, (4, 32), generator=g)
    cfg = TrainLoopConfig(epochs=40, lr=3e-2, early_stopping=EarlyStopping(patience=2))
    rep = train_loop(tiny_causal_lm(0), [_batch(train_x)], cfg=cfg, eval_batches=[_batch(eval_x)])
    assert rep.stopped_early and rep.epochs_run < 40
    assert rep.last_loss < rep.first_loss


def test_eval_every_steps_evaluates_on_cadence():
    x = _blocks(8)
    batches = [_batch(x[i : i + 2]) for i in range(0, 6, 2)]
    rep = train_loop(
        tiny_causal_lm(0),
        batches,
        eval_batches=[_batch(x[6:])],
        cfg=TrainLoopConfig(epochs=2, eval_every_steps=2),
    )
    assert [e["step"] for e in rep.evals] == [2, 4, 6]


def test_early_stopping_without_held_out_data_is_a_config_error():
    with pytest.raises(ConfigError, match="early_stopping: needs held-out data"):
        train_loop(
            tiny_causal_lm(0),
            [_batch(_blocks(2))],
            cfg=TrainLoopConfig(early_stopping=EarlyStopping()),
        )
    with pytest.raises(ConfigError, match="eval_fraction"):
        parse_config(TrainConfig, {"early_stopping": {"patience": 2}}, "train")


def test_bf16_autocast_on_cpu_trains():
    x = _blocks(8)
    model = tiny_causal_lm(0)
    rep = train_loop(model, [_batch(x)], cfg=TrainLoopConfig(epochs=5, lr=1e-2, precision="bf16"))
    assert rep.precision == "bf16" and rep.last_loss < rep.first_loss
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_fp16_on_cpu_is_unsupported_and_model_untouched():
    model = tiny_causal_lm(0)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedError, match="fp16 autocast training needs a CUDA GPU"):
        train_loop(model, [_batch(_blocks(2))], cfg=TrainLoopConfig(precision="fp16"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_hooks_receive_records_and_can_add_fields():
    seen = []

    class Hook:
        def on_step_end(self, step, record):
            seen.append(("step", step, record["loss"]))

        def on_epoch_end(self, epoch, record):
            seen.append(("epoch", epoch, record["tokens"]))
            return {"energy_j": 10.0 * (epoch + 1)}

    x = _blocks(4)
    rep = train_loop(
        tiny_causal_lm(0),
        [_batch(x[:2]), _batch(x[2:])],
        cfg=TrainLoopConfig(epochs=2),
        hooks=[Hook()],
    )
    assert [s[0] for s in seen] == ["step", "step", "epoch", "step", "step", "epoch"]
    assert [e["energy_j"] for e in rep.epochs] == [10.0, 20.0]


def test_rss_budget_exceeded_is_one_line_error():
    with pytest.raises(UnsupportedError, match="batch_size: .*max_rss_bytes=1"):
        train_loop(tiny_causal_lm(0), [_batch(_blocks(2))], cfg=TrainLoopConfig(max_rss_bytes=1))


def test_oom_during_training_becomes_batch_size_error():
    def oom_loss(model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(UnsupportedError, match="batch_size: the batch does not fit"):
        train_loop(tiny_causal_lm(0), [_batch(_blocks(2))], oom_loss)


def test_no_trainable_parameters_is_config_error():
    model = tiny_causal_lm(0)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        train_loop(model, [_batch(_blocks(2))])


def test_config_round_trips_and_rejects_typos():
    raw = {
        "data": "train.txt",
        "task": "qa",
        "epochs": 2,
        "max_steps": 100,
        "batch_size": 4,
        "grad_accum": 2,
        "lr": 1e-4,
        "warmup_ratio": 0.1,
        "precision": "bf16",
        "gradient_checkpointing": True,
        "early_stopping": {"patience": 3, "min_delta": 0.01},
        "eval_fraction": 0.1,
        "seq_len": 128,
        "seed": 7,
        "power_cap_w": 150.0,
        "power_mode": None,
    }
    cfg = parse_config(TrainConfig, raw, "train")
    again = parse_config(TrainConfig, json.loads(json.dumps(to_dict(cfg))), "train")
    assert again == cfg and to_dict(again) == to_dict(cfg)
    assert isinstance(cfg.early_stopping, EarlyStopping)
    with pytest.raises(ConfigError, match="did you mean 'grad_accum'"):
        parse_config(TrainConfig, {"grad_acum": 2}, "train")
    with pytest.raises(ConfigError, match="precision"):
        parse_config(TrainConfig, {"precision": "fp8"}, "train")
    with pytest.raises(ConfigError, match="power_cap_w"):
        parse_config(TrainConfig, {"power_cap_w": -5}, "train")


def test_train_step_lm_via_compress(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text(TEXT)
    model, tok = tiny_causal_lm(0), tiny_tokenizer()
    model, results = compress(
        model,
        [
            greenllm.Train(
                data=str(p),
                epochs=2,
                lr=3e-3,
                batch_size=4,
                seq_len=32,
                max_examples=30,
                eval_fraction=0.2,
            )
        ],
        tokenizer=tok,
    )
    st = results[0].stats
    assert results[0].step == "train" and st["steps"] > 0
    assert st["epochs"][1]["eval_loss"] < st["epochs"][0]["eval_loss"]
    assert st["last_loss"] < st["first_loss"]
    json.dumps(results[0].to_dict())  # stats are plain JSON


def test_train_step_qa_masks_prompt_tokens(tmp_path):
    squad = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "The Orin Nano has 1024 CUDA cores.",
                        "qas": [
                            {
                                "id": "1",
                                "question": "How many CUDA cores?",
                                "answers": [{"text": "1024", "answer_start": 18}],
                            },
                            {
                                "id": "2",
                                "question": "Which board?",
                                "answers": [{"text": "Orin Nano", "answer_start": 4}],
                            },
                        ],
                    }
                ],
            }
        ]
    }
    p = tmp_path / "squad.json"
    p.write_text(json.dumps(squad))
    tok = tiny_tokenizer()
    train_b, _ = build_batches(tok, str(p), task="qa", seq_len=128, batch_size=2)
    b = train_b[0]
    # labels cover " 1024</s>" / " Orin Nano</s>" only
    n_target = int((b["labels"] != -100).sum())
    assert n_target == len(" 1024") + 1 + len(" Orin Nano") + 1
    model, res = apply_step(
        tiny_causal_lm(0),
        "train",
        {"data": str(p), "task": "qa", "epochs": 3, "lr": 1e-2, "batch_size": 2},
        _ctx(tok),
    )
    assert res.stats["last_loss"] < res.stats["first_loss"]


def test_instruction_jsonl_and_bad_rows(tmp_path):
    p = tmp_path / "inst.jsonl"
    p.write_text(
        json.dumps({"instruction": "Say hi", "output": "hi"})
        + "\n"
        + json.dumps({"prompt": "Add 1+1", "response": "2"})
        + "\n"
    )
    ex = load_source(str(p), "instruct")
    assert ex[0].prompt.startswith("Instruction: Say hi") and ex[0].target == " hi"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1: an instruction row needs"):
        load_source(str(bad), "instruct")
    with pytest.raises(DataError, match="does not exist"):
        load_source(str(tmp_path / "missing.txt"))


def test_train_step_errors_are_one_line(tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(GreenLLMError) as ei:
        apply_step(tiny_causal_lm(0), "train", {"data": ["short"], "seq_len": 64}, _ctx(tok))
    assert "\n" not in str(ei.value) and "seq_len" in str(ei.value)
    with pytest.raises(UnsupportedError):
        apply_step(tiny_causal_lm(0), "train", {"data": [TEXT], "precision": "fp16"}, _ctx(tok))


def _ctx(tok):
    from greenllm.steps import StepContext

    return StepContext(tokenizer=tok)


@pytest.mark.parametrize(
    "name",
    [
        "jetson-training.yaml",
        "jetson-training-distilgpt2.yaml",
        "jetson-training-gpt2.yaml",
        "gpu-power-training.yaml",
    ],
)
def test_training_recipes_validate_and_their_train_steps_run_on_a_tiny_model(name):
    """The seed recipes need the hub and a GPU/Jetson; their step logic runs here on the
    tiny model with the shipped SQuAD sample instead of the dev file."""
    import dataclasses

    from greenllm.recipe import load_recipe
    from greenllm.recipe_files import recipes_dir

    path = recipes_dir() / "seeds" / name
    recipe = load_recipe(path)
    steps = [(k, c) for _, v in recipe.variants.items() for k, c in v]
    assert steps and all(k == "train" for k, _ in steps)
    key, cfg = steps[-1]
    small = dataclasses.replace(
        cfg,
        data="builtin:squad-sample",
        max_examples=12,
        seq_len=96,
        epochs=1,
        batch_size=4,
        power_cap_w=None,
        power_mode=None,
    )
    _, res = apply_step(tiny_causal_lm(0), key, small, _ctx(tiny_tokenizer()))
    assert res.stats["steps"] >= 1 and res.stats["task"] == cfg.task == "qa"
