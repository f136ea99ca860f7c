"""Progressive precision in the shared training loop: the schedule parser, the precision each
step runs at (seen from inside the forward pass), the phases in the report, and the checks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from greenllm.errors import ConfigError, UnsupportedError  # noqa: E402
from greenllm.steps.train import (  # noqa: E402
    TrainLoopConfig,
    causal_lm_loss,
    parse_precision_schedule,
    precision_at,
    train_loop,
)
from greenllm.testing import tiny_causal_lm  # noqa: E402


def _batches(n=8, seq=16):
    x = torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(0))
    return [
        {
            "input_ids": x[i : i + 2],
            "attention_mask": torch.ones_like(x[i : i + 2]),
            "labels": x[i : i + 2].clone(),
        }
        for i in range(0, n, 2)
    ]


def test_schedule_parsing_and_lookup():
    assert parse_precision_schedule("bf16:0.5,fp32") == [("bf16", 0.5), ("fp32", 1.0)]
    ph = parse_precision_schedule("bf16:0.25,fp16:0.5,fp32")
    assert [precision_at(s, 8, ph) for s in range(8)] == ["bf16"] * 2 + ["fp16"] * 2 + ["fp32"] * 4
    for bad in ("bf8:0.5,fp32", "bf16,fp32", "bf16:0.7,fp16:0.5,fp32", "bf16:0.5,fp32:0.9", ""):
        with pytest.raises(ConfigError, match="precision_schedule"):
            parse_precision_schedule(bad)
    with pytest.raises(ConfigError, match="leave precision at fp32"):
        TrainLoopConfig(precision="bf16", precision_schedule="bf16:0.5,fp32")


def test_bf16_then_fp32_on_cpu():
    seen = []

    def loss_fn(model, batch):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return causal_lm_loss(model, batch)

    model = tiny_causal_lm(0)
    cfg = TrainLoopConfig(
        epochs=2, lr=1e-3, precision_schedule="bf16:0.5,fp32", shuffle=False, log_every_steps=1
    )
    rep = train_loop(model, _batches(), loss_fn, cfg)
    assert rep.steps == 8 and rep.precision == "bf16:0.5,fp32"
    assert seen == [torch.bfloat16] * 4 + [False] * 4
    assert rep.phases == [
        {"precision": "bf16", "from_step": 0, "to_step": 4},
        {"precision": "fp32", "from_step": 4, "to_step": 8},
    ]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert rep.last_loss < rep.first_loss


def test_fp16_phase_needs_cuda_and_fails_before_training():
    model = tiny_causal_lm(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedError, match="fp16 autocast training needs a CUDA GPU"):
        train_loop(model, _batches(), None, TrainLoopConfig(precision_schedule="fp16:0.5,fp32"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.gpu
def test_fp16_then_fp32_with_loss_scaling_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    seen = []

    def loss_fn(model, batch):
        seen.append(torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda"))
        return causal_lm_loss(model, batch)

    model = tiny_causal_lm(0).cuda()
    rep = train_loop(
        model,
        _batches(),
        loss_fn,
        TrainLoopConfig(epochs=2, lr=1e-3, precision_schedule="fp16:0.5,fp32", shuffle=False),
    )
    assert seen == [torch.float16] * 4 + [False] * 4
    assert [p["precision"] for p in rep.phases] == ["fp16", "fp32"]
    assert rep.last_loss < rep.first_loss
