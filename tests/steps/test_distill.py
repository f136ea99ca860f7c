"""Distillation: the KD loss by hand, layer-dropped students, and the distill step."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from greenllm.config import parse_config, to_dict  # noqa: E402
from greenllm.errors import ConfigError  # noqa: E402
from greenllm.steps import StepContext, apply_step  # noqa: E402
from greenllm.steps.distill import (  # noqa: E402
    DistillConfig,
    StudentConfig,
    drop_layers,
    kd_kl,
    kept_layers,
    make_kd_loss,
    num_layers,
)
from greenllm.steps.train import TrainLoopConfig, evaluate_loss  # noqa: E402
from greenllm.testing import tiny_causal_lm, tiny_tokenizer  # noqa: E402

TEXT = (
    "Small models on edge boards trade accuracy for energy. Distillation teaches a small "
    "student to match the soft predictions of a larger teacher. "
) * 25


def test_kd_kl_matches_hand_computed_value():
    s = torch.tensor([[[1.0, 2.0, 0.5]]])
    t = torch.tensor([[[2.0, 0.0, 1.0]]])
    T = 2.0

    def softmax(v):
        e = [math.exp(x / T) for x in v]
        return [x / sum(e) for x in e]

    p, q = softmax([2.0, 0.0, 1.0]), softmax([1.0, 2.0, 0.5])
    expect = T * T * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    got = kd_kl(s, t, torch.tensor([[True]]), T)
    assert float(got) == pytest.approx(expect, rel=1e-6)
    assert expect > 0.1  # the example is not trivially zero
    # masked positions do not count; identical logits give zero
    s2 = torch.cat([s, torch.full((1, 1, 3), 9.0)], dim=1)
    t2 = torch.cat([t, torch.zeros(1, 1, 3)], dim=1)
    assert float(kd_kl(s2, t2, torch.tensor([[True, False]]), T)) == pytest.approx(expect, rel=1e-6)
    assert float(kd_kl(t, t, torch.tensor([[True]]), T)) == pytest.approx(0.0, abs=1e-7)


def test_layer_dropped_student_structure_and_outputs():
    teacher = tiny_causal_lm(0, num_layers=4)
    keep = kept_layers(4, StudentConfig(keep_every=2))
    assert keep == [0, 2]
    student = drop_layers(teacher, keep)
    assert num_layers(student) == 2 and student.config.num_hidden_layers == 2
    assert num_layers(teacher) == 4  # the teacher is untouched
    assert torch.equal(
        student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight
    )
    assert student.model.layers[1].self_attn.layer_idx == 1
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        out = student(input_ids=ids).logits
        gen = student.generate(ids, max_new_tokens=3, do_sample=False)  # KV cache indices ok
    assert out.shape == (1, 12, 259) and gen.shape == (1, 15)
    with pytest.raises(ConfigError, match="out of range; the teacher has 4 layers"):
        kept_layers(4, StudentConfig(layers=[0, 7]))


def test_distill_step_reduces_kd_loss_of_layer_dropped_student():
    tok = tiny_tokenizer()
    teacher = tiny_causal_lm(0, num_layers=4)
    # make the teacher less random so there is something to learn: train it briefly
    from greenllm.steps.data import build_batches
    from greenllm.steps.train import train_loop

    tb, _ = build_batches(tok, [TEXT], seq_len=32, batch_size=4, max_examples=32)
    train_loop(teacher, tb, cfg=TrainLoopConfig(epochs=2, lr=3e-3))
    cfg = {
        "student": {"keep_every": 2},
        "data": [TEXT],
        "seq_len": 32,
        "batch_size": 4,
        "epochs": 3,
        "lr": 3e-3,
        "temperature": 2.0,
        "alpha_ce": 0.5,
        "alpha_hidden": 0.1,
        "eval_fraction": 0.2,
        "max_examples": 32,
    }
    ctx = StepContext(tokenizer=tok, teacher=teacher)
    student, res = apply_step(teacher, "distill", cfg, ctx)
    st = res.stats
    assert num_layers(student) == 2 and st["student_layers"] == 2 and st["teacher_layers"] == 4
    assert st["hidden_layer_map"] == [[0, 0], [1, 2]]
    assert st["last_loss"] < st["first_loss"] * 0.8
    assert st["epochs"][-1]["eval_loss"] < st["epochs"][0]["eval_loss"]
    assert res.size_bytes_after < res.size_bytes_before
    # the student's own next-token loss got closer to the teacher's
    eb, _ = build_batches(tok, [TEXT], seq_len=32, batch_size=4, max_examples=8)
    fresh = drop_layers(teacher, [0, 2])
    assert evaluate_loss(student, eb, _ce) < evaluate_loss(fresh, eb, _ce)


def _ce(model, batch):
    return model(**batch).loss


def test_kd_loss_is_zero_for_a_student_equal_to_the_teacher():
    teacher = tiny_causal_lm(0)
    student = drop_layers(teacher, [0, 1])  # a full copy
    cfg = parse_config(DistillConfig, {"alpha_hidden": 1.0}, "distill")
    loss_fn = make_kd_loss(teacher, cfg, [[0, 0], [1, 1]])
    ids = torch.randint(0, 256, (2, 10))
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    assert float(loss_fn(student, b).detach()) == pytest.approx(0.0, abs=1e-6)


def test_distill_needs_a_teacher_when_student_is_the_model():
    with pytest.raises(ConfigError, match="distill.teacher"):
        apply_step(
            tiny_causal_lm(0), "distill", {"data": [TEXT]}, StepContext(tokenizer=tiny_tokenizer())
        )


def test_distill_config_round_trips_and_validates():
    raw = {
        "student": {"layers": [0, 3]},
        "temperature": 4.0,
        "alpha_kl": 0.7,
        "alpha_ce": 0.3,
        "alpha_hidden": 0.1,
        "hidden_layer_map": [[0, 0], [1, 3]],
        "data": "wiki.txt",
        "epochs": 1,
        "max_steps": 50,
        "precision": "bf16",
        "early_stopping": None,
    }
    cfg = parse_config(DistillConfig, raw, "distill")
    assert parse_config(DistillConfig, json.loads(json.dumps(to_dict(cfg))), "distill") == cfg
    with pytest.raises(ConfigError, match="distill.student.path: give one of"):
        parse_config(DistillConfig, {"student": {"keep_every": 2, "path": "x"}}, "distill")
    with pytest.raises(ConfigError, match="temperature"):
        parse_config(DistillConfig, {"temperature": 0}, "distill")
    with pytest.raises(ConfigError, match="did you mean 'kd'"):
        parse_config(DistillConfig, {"method": "kdd"}, "distill")
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        parse_config(DistillConfig, {"temprature": 2}, "distill")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hidden_loss_compares_layer_outputs_on_both_sides(arch):
    """A student made of the teacher's first two layers computes exactly the teacher's layer 0
    and 1 outputs, so the hidden-state MSE is exactly 0. HF's hidden_states[-1] is the final
    norm's output, so comparing the student's last entry with the teacher's middle one was not
    0 (post-norm vs pre-norm)."""
    if arch == "llama":
        teacher = tiny_causal_lm(0, num_layers=3)
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        teacher = GPT2LMHeadModel(
            GPT2Config(vocab_size=259, n_embd=32, n_layer=3, n_head=4, n_positions=64)
        ).eval()
    student = drop_layers(teacher, [0, 1])
    cfg = parse_config(DistillConfig, {"alpha_kl": 0.0, "alpha_hidden": 1.0}, "distill")
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(0))
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    for hmap in ([[0, 0], [1, 1]], [[1, 1]]):
        assert float(make_kd_loss(teacher, cfg, hmap)(student, b).detach()) == 0.0
    # a real mismatch is seen: student layer 1 against teacher layer 2
    assert float(make_kd_loss(teacher, cfg, [[1, 2]])(student, b).detach()) > 0.0
    # full copy, every layer mapped to itself
    twin = drop_layers(teacher, [0, 1, 2])
    assert float(make_kd_loss(teacher, cfg, [[i, i] for i in range(3)])(twin, b).detach()) == 0.0


def test_distill_targets_train_only_the_selected_student_modules():
    import copy

    student = tiny_causal_lm(1)
    before = copy.deepcopy(student.state_dict())
    out, res = apply_step(
        student,
        "distill",
        {
            "targets": ["mlp.*"],
            "data": [TEXT],
            "max_steps": 2,
            "lr": 1e-2,
            "seq_len": 32,
            "batch_size": 2,
        },
        StepContext(tokenizer=tiny_tokenizer(), teacher=tiny_causal_lm(0)),
    )
    after = out.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".mlp." in k for k in changed)
    assert all(p.requires_grad for p in out.parameters())  # frozen ones are given back
    with pytest.raises(ConfigError, match="distill.targets: no module matched"):
        apply_step(
            tiny_causal_lm(1),
            "distill",
            {"targets": ["nope"], "data": [TEXT]},
            StepContext(tokenizer=tiny_tokenizer(), teacher=tiny_causal_lm(0)),
        )
