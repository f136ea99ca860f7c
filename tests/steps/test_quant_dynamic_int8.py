"""``dynamic_int8`` (torch.ao dynamic Linear) quantizes activations per tensor, one dynamic
scale per input, and says so (it was described as per-token; issue 11)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from greenllm.steps import apply_step
from greenllm.steps.quantize import QUANT_METHODS
from greenllm.testing import tiny_causal_lm


def test_dynamic_int8_is_described_and_recorded_as_per_tensor_activations():
    summary = QUANT_METHODS.get("dynamic_int8").summary
    assert "per-tensor" in summary and "per-token" not in summary.replace("not per-token", "")
    _, res = apply_step(tiny_causal_lm(0), "quantize", {"method": "dynamic_int8"})
    assert "per-tensor" in res.stats["activations"]
    assert res.stats["weights"] == "int8, per-channel"


def test_dynamic_int8_activation_scale_is_one_per_tensor():
    """With per-token scales a token's output would not depend on the other tokens of the
    input; with one scale per tensor, an outlier token coarsens every other token."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        lin = torch.nn.Sequential(torch.nn.Linear(64, 32))
        x, outlier = torch.randn(1, 64), 1000 * torch.randn(1, 64)
    ref_model = copy.deepcopy(lin)
    q, _ = apply_step(lin, "quantize", {"method": "dynamic_int8", "ignore": []})
    with torch.no_grad():
        ref = ref_model(x)
        alone = q(x)
        with_outlier = q(torch.cat([x, outlier]))[:1]
    err_alone = (alone - ref).abs().max().item()
    err_shared = (with_outlier - ref).abs().max().item()
    assert err_alone < 0.05 * ref.abs().max().item()
    assert err_shared > 20 * err_alone  # the outlier's range set the scale of x as well
