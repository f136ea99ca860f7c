"""Embodied carbon: ACT's constants reproduce the numbers ACT's tables give, estimates are
labelled, unknown stays unknown, and the amortised share follows the stated assumptions."""

from __future__ import annotations

import pytest

from greenllm import embodied as E
from greenllm.devices import PROFILES, get_profile
from greenllm.errors import ConfigError


def test_act_logic_constant_at_8nm_is_1_81_kg_per_cm2():
    # (583 g/kWh x 1.52 kWh/cm2 + (240 + 150) / 2 g + 500 g) / 0.875
    assert E.logic_g_per_cm2(8) == pytest.approx((583 * 1.52 + 195 + 500) / 0.875)
    assert E.logic_g_per_cm2(8) / 1000 == pytest.approx(1.81, abs=0.005)
    assert E.logic_g_per_cm2(8, abatement="99") < E.logic_g_per_cm2(8, abatement="95")
    assert E.act_node(12) == 14 and E.act_node(16) == 14 and E.act_node(7) == 7
    assert E.dram_g_per_gb("lpddr4") == pytest.approx(48 / 0.875)
    with pytest.raises(ConfigError, match="lpddr4"):
        E.dram_g_per_gb("hbm9")


def test_orin_nano_estimate_is_labelled_and_adds_up():
    prof = get_profile("jetson-orin-nano-8gb")
    emb = E.embodied_for(prof)
    assert emb.kind == "estimate" and emb.estimated
    assert "ESTIMATE" in emb.source and "facebookresearch/ACT" in emb.source
    b = emb.breakdown
    expected_g = 3.775 * E.logic_g_per_cm2(8) + 8 * 48 / 0.875 + 2 * 150
    assert emb.kg_co2e == pytest.approx(expected_g / 1000)
    assert b["logic_g"] + b["dram_g"] + b["packages_g"] == pytest.approx(expected_g)
    assert "derived, not published" in emb.bom["notes"]
    assert emb.service_life_years == E.DEFAULT_SERVICE_LIFE_YEARS
    assert "assumption" in emb.life_source


def test_unpublished_die_is_unknown_until_the_user_gives_it():
    pi = get_profile("raspberry-pi-5")
    emb = E.embodied_for(pi)
    assert emb.kg_co2e is None and emb.kind == "unknown"
    assert "die_area_mm2" in emb.source
    est = E.embodied_for(pi, die_area_mm2=100.0)
    assert est.kind == "estimate"
    assert est.kg_co2e == pytest.approx(
        (1.0 * E.logic_g_per_cm2(16) + 8 * 48 / 0.875 + 3 * 150) / 1000
    )
    assert "carbon.die_area_mm2" in est.bom["notes"]
    # a vendor figure replaces any estimate
    user = E.embodied_for(get_profile("jetson-orin-nano-8gb"), kg_co2e=12.5, service_life_years=3)
    assert (user.kind, user.kg_co2e, user.service_life_years) == ("user", 12.5, 3.0)


def test_no_gpu_or_cpu_figure_is_invented():
    for name in ("nvidia-gpu", "cpu"):
        emb = E.embodied_for(PROFILES[name])
        assert emb.kg_co2e is None and emb.kind == "unknown"
    assert E.embodied_for(None).kg_co2e is None


def test_amortised_share():
    emb = E.Embodied(10.0, 4.0, 0.5, "user", "test")
    hour = 3600.0
    # 10 kg over 4 years x 50 % busy: per busy hour 10000 g / (4 x 8760 x 0.5)
    assert E.amortised_g(emb, hour) == pytest.approx(10000 / (4 * 8760 * 0.5))
    assert E.amortised_g(E.Embodied(None, 4.0, 1.0, "unknown", "x"), hour) is None
    with pytest.raises(ConfigError, match="utilisation"):
        E.embodied_for(None, kg_co2e=1.0, utilisation=1.5)
