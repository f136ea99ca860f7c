"""The steps column names only the settings that apply to a step: a stored definition holds
every field of the step's config, defaults included."""

from __future__ import annotations

import pytest

from greenllm.config import ConfigError, to_dict
from greenllm.report.tables import BITS_SETTING_METHODS, step_summary


def test_a_fixed_width_quantize_method_shows_no_bits_and_no_zero_sparsity():
    from greenllm.steps.quantize import QuantizeConfig

    int8 = {"quantize": to_dict(QuantizeConfig(method="int8_weight", ignore=[]))}
    gptq = {"quantize": to_dict(QuantizeConfig(method="gptq", bits=3, sparsity=0.5))}
    assert step_summary([int8]) == "quantize(int8_weight)"
    assert step_summary([int8, gptq]) == (
        "quantize(int8_weight) → quantize(gptq, sparsity=0.5, bits=3)"
    )


def test_the_bits_methods_are_the_ones_whose_config_checks_bits():
    from greenllm.steps.quantize import QUANT_METHODS, QuantizeConfig

    checked = set()
    for name in QUANT_METHODS.names():
        try:
            QuantizeConfig(method=name, bits=5)
        except ConfigError as exc:
            if "bits" in str(exc):
                checked.add(name)
    assert checked == set(BITS_SETTING_METHODS)


@pytest.mark.parametrize(
    "sparsity,shown", [(0.3, "prune(wanda, sparsity=0.3)"), (None, "prune(wanda)")]
)
def test_prune_sparsity_is_shown_when_set(sparsity, shown):
    assert step_summary([{"prune": {"method": "wanda", "sparsity": sparsity}}]) == shown
