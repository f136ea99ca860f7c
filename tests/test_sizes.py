"""``represented_param_count``: a quantized model counts the parameters it stands for, so
per-billion-parameter metrics (EDP/B, Wh/B) do not blow up after quantization (issue 11:
``param_count`` gave EDP/B 3,828x too high for int8_weight with the head quantized)."""

from __future__ import annotations

import copy
import importlib.util

import pytest

torch = pytest.importorskip("torch")

from greenllm.models import param_count
from greenllm.sizes import represented_param_count
from greenllm.steps import compress
from greenllm.testing import tiny_causal_lm


def _has(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def untied():
    return tiny_causal_lm(0)


@pytest.fixture(scope="module")
def tied():
    return tiny_causal_lm(0, tie_word_embeddings=True)


def _after(model, spec):
    q, _ = compress(copy.deepcopy(model), [spec])
    return q


def test_a_float_model_counts_its_parameters_once(untied, tied):
    assert represented_param_count(untied) == param_count(untied)
    assert represented_param_count(tied) == param_count(tied)
    vocab, hidden = tied.get_input_embeddings().weight.shape
    assert param_count(untied) - param_count(tied) == vocab * hidden  # tied: one matrix


@pytest.mark.parametrize("ignore", ["[]", "[lm_head]"])
def test_int8_weight_counts_its_int8_buffers(untied, tied, ignore):
    for model in (untied, tied):
        q = _after(model, f"quantize:method=int8_weight,ignore={ignore}")
        assert represented_param_count(q) == param_count(model)
    # param_count is the represented count: the head's int8 matrix (a buffer) counts
    q = _after(tied, "quantize:method=int8_weight,ignore=[]")
    assert param_count(q) == param_count(tied)
    assert sum(p.numel() for p in q.parameters()) < param_count(tied) / 100


@pytest.mark.parametrize("ignore", ["[]", "[lm_head]"])
def test_dynamic_int8_counts_its_packed_weights(untied, ignore):
    q = _after(untied, f"quantize:method=dynamic_int8,ignore={ignore}")
    assert sum(p.numel() for p in q.parameters()) < param_count(untied)
    assert represented_param_count(q) == param_count(untied) == param_count(q)


def test_tied_head_kept_in_float_counts_once(tied):
    q = _after(tied, "quantize:method=dynamic_int8")
    assert represented_param_count(q) == param_count(tied)


@pytest.mark.skipif(not _has("bitsandbytes"), reason="bitsandbytes is not installed")
@pytest.mark.parametrize("method", ["bnb_nf4", "bnb_fp4", "bnb_int8"])
def test_bitsandbytes_counts_packed_4bit_at_their_original_shape(untied, method):
    q = _after(untied, f"quantize:method={method},ignore=[]")
    if method != "bnb_int8":
        assert sum(p.numel() for p in q.parameters()) < param_count(untied)  # 2 codes a byte
    assert represented_param_count(q) == param_count(untied)


@pytest.mark.skipif(not _has("optimum.quanto"), reason="optimum-quanto is not installed")
def test_quanto_int4_counts_logical_weights(untied):
    q = _after(untied, "quantize:method=quanto_int4,ignore=[]")
    assert represented_param_count(q) == param_count(untied)


@pytest.mark.skipif(not _has("torchao"), reason="torchao is not installed")
def test_torchao_int8_counts_logical_weights(untied):
    q = _after(untied, "quantize:method=torchao_int8_weight,ignore=[]")
    assert represented_param_count(q) == param_count(untied)


def test_rotary_tables_and_scales_are_not_parameters(untied):
    q = _after(untied, "quantize:method=int8_weight,ignore=[]")
    n_buffers = sum(b.numel() for b in q.buffers())
    assert n_buffers > represented_param_count(q) - param_count(q)  # scales, inv_freq
    assert represented_param_count(q) == param_count(untied)
