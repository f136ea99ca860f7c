"""Models whose weights are tensor subclasses that refuse ``torch.inference_mode`` (quanto's
int4) evaluate and benchmark: ``no_autograd(model)`` picks ``no_grad`` for them (issue 11)."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")

from greenllm.grad_mode import holds_tensor_subclass, no_autograd
from greenllm.testing import tiny_model_and_tokenizer

needs_quanto = pytest.mark.skipif(
    importlib.util.find_spec("optimum") is None
    or importlib.util.find_spec("optimum.quanto") is None,
    reason="optimum-quanto is not installed (pip install 'greenllm[quanto]')",
)


def test_a_plain_model_runs_under_inference_mode():
    model, _ = tiny_model_and_tokenizer(0)
    assert not holds_tensor_subclass(model)
    with no_autograd(model):
        assert torch.is_inference_mode_enabled()


@pytest.fixture(scope="module")
def quanto_int4():
    from greenllm.steps import compress

    model, tok = tiny_model_and_tokenizer(0)
    q, _ = compress(model, ["quantize:method=quanto_int4"])
    return q, tok


@needs_quanto
def test_quanto_int4_runs_under_no_grad(quanto_int4):
    model, _ = quanto_int4
    assert holds_tensor_subclass(model)
    with no_autograd(model):
        assert not torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference tensor"):
        model(torch.tensor([[1, 2, 3]]))  # what the evaluators ran into before


@needs_quanto
def test_quanto_int4_evaluates_perplexity_choice_and_squad(quanto_int4):
    import math

    from greenllm.evals import evaluate

    model, tok = quanto_int4
    ppl = evaluate(model, tok, "perplexity", limit=1, max_length=64)
    assert math.isfinite(ppl.metrics["perplexity"]) and ppl.metrics["perplexity"] > 1
    ch = evaluate(model, tok, "choice", limit=4)
    assert ch.n == 4 and 0.0 <= ch.metrics["acc"] <= 1.0
    sq = evaluate(model, tok, "squad", limit=2, max_new_tokens=3, batch_size=2)
    assert sq.n == 2


@needs_quanto
def test_quanto_int4_benchmarks(quanto_int4):
    from greenllm.bench import bench
    from greenllm.meters.estimate import EstimateMeter

    model, tok = quanto_int4
    r = bench(
        model,
        tok,
        {
            "prompts": ["Energy is", "The cat"],
            "max_new_tokens": 3,
            "warmup": 0,
            "repeats": 1,
            "min_window_s": 0,
        },
        meters=[EstimateMeter(tdp_w=20.0)],
    )
    assert r.per_repeat[0]["output_tokens"] == r.per_repeat[0]["passes"] * 2 * 3
