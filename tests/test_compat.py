"""The transformers KV-cache compatibility layer (greenllm._compat), and that greenllm's own
calls raise no deprecation warning on the locked transformers."""

from __future__ import annotations

import types
import warnings

import pytest

from greenllm._compat import cache_arg, cache_kwargs, output_cache, takes_cache_position


def _old_forward(input_ids=None, past_key_values=None, cache_position=None, use_cache=None):
    return None


def _new_forward(input_ids=None, cache=None, use_cache=None, **kwargs):
    return None


def _no_cache_forward(input_ids=None):
    return None


def test_the_cache_argument_is_named_as_each_forward_takes_it():
    assert cache_arg(_old_forward) == "past_key_values"
    assert cache_arg(_new_forward) == "cache"
    assert cache_arg(_no_cache_forward) is None
    assert cache_kwargs(_old_forward, "C") == {"past_key_values": "C"}
    assert cache_kwargs(_new_forward, "C") == {"cache": "C"}
    assert cache_kwargs(_new_forward, None) == {}
    assert takes_cache_position(_old_forward) and not takes_cache_position(_new_forward)


def test_a_module_object_is_read_through_its_forward():
    mod = types.SimpleNamespace(forward=_old_forward)
    assert cache_arg(mod) == "past_key_values"


def test_the_returned_cache_is_found_under_either_name():
    assert output_cache(types.SimpleNamespace(cache="new")) == "new"
    assert output_cache(types.SimpleNamespace(past_key_values="old")) == "old"
    assert output_cache(types.SimpleNamespace(cache=None, past_key_values="old")) == "old"
    assert output_cache(types.SimpleNamespace(logits=1)) is None


def _deprecations(caught):
    return [
        w
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
        and ("past_key_values" in str(w.message) or "cache_position" in str(w.message))
    ]


def test_eager_decode_and_prefix_scoring_warn_about_no_deprecated_cache_argument():
    torch = pytest.importorskip("torch")
    from greenllm.decode import run_request
    from greenllm.evals.loglik import Request, score
    from greenllm.testing import tiny_causal_lm

    model = tiny_causal_lm(0)
    ids = torch.tensor([[256, 72, 101, 108, 108, 111]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    shared = list(range(60, 80))
    reqs = [Request(i, tuple(shared + [i + 1]), (100 + i,)) for i in range(4)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            out = run_request(model, batch, 4, torch.device("cpu"), {"position_ids"})
            scores = score(model, reqs, batch_size=4)
    assert out["new_tokens"] == 4
    assert len(scores) == 4
    assert _deprecations(caught) == []


def test_the_cache_a_model_returns_is_read_and_passed_back():
    torch = pytest.importorskip("torch")
    from greenllm.testing import tiny_causal_lm

    model = tiny_causal_lm(1)
    ids = torch.tensor([[256, 1, 2, 3, 4]])
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        first = model(input_ids=ids[:, :-1], use_cache=True)
        cache = output_cache(first)
        assert cache is not None
        step = model(input_ids=ids[:, -1:], use_cache=True, **cache_kwargs(model, cache))
    torch.testing.assert_close(step.logits[:, -1], full, atol=1e-5, rtol=1e-5)
