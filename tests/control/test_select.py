"""select_power_cap: one function picks the PowerCap for power_cap_w / power_mode, and the
runner, ``greenllm bench`` and the training search all go through it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from greenllm.control import select
from greenllm.control.jetson import JetsonPowerMode
from greenllm.control.nvml import NvmlPowerCap
from greenllm.control.select import cap_kind, select_power_cap
from greenllm.errors import ConfigError, HardwareControlError
from greenllm.testing import FakeGpu, FakePynvml


def _gpu():
    return FakePynvml(
        gpus=[
            FakeGpu(
                power_limit_mw=300_000,
                min_limit_mw=100_000,
                max_limit_mw=300_000,
                default_limit_mw=300_000,
            )
        ]
    )


def test_cap_kind_names_the_adapter_for_each_setting():
    assert cap_kind(power_cap_w=150.0) == "nvml"
    assert cap_kind(power_mode="MAXN") == "jetson"
    assert cap_kind(power_mode=0) == "jetson"  # mode id 0 is a setting
    assert cap_kind() is None
    assert cap_kind(power_cap_w=[], power_mode=[]) is None  # an empty search list
    assert cap_kind(power_cap_w=[150.0, 200.0]) == "nvml"


def test_both_settings_is_one_config_error_naming_what_the_user_wrote():
    with pytest.raises(ConfigError, match="power_cap_w and power_mode are exclusive"):
        cap_kind(power_cap_w=150.0, power_mode="1")
    with pytest.raises(ConfigError, match="--power-cap-w and --power-mode are exclusive"):
        select_power_cap(150.0, "1", names=("--power-cap-w", "--power-mode"))


def test_select_builds_the_adapter_and_checks_the_value_before_anything_changes():
    nv = _gpu()
    built = []

    def factory(kind, profile):
        built.append((kind, profile))
        return NvmlPowerCap(pynvml=nv)

    assert select_power_cap(factory=factory) == (None, None) and built == []
    cap, value = select_power_cap(power_cap_w="150", factory=factory)
    assert isinstance(cap, NvmlPowerCap) and value == 150.0 and built == [("nvml", None)]
    cap, values = select_power_cap(power_cap_w=[150, 250.0], factory=factory)
    assert values == [150.0, 250.0]
    with pytest.raises(HardwareControlError, match="30 W is outside the allowed range"):
        select_power_cap(power_cap_w=[150, 30], factory=factory)
    assert nv.gpus[0].set_limit_calls == []  # nothing was set


def test_select_builds_the_jetson_adapter_for_a_power_mode_with_the_profile():
    cap, mode = select_power_cap(power_mode="1", profile="jetson-orin-nano-8gb")
    assert isinstance(cap, JetsonPowerMode) and cap.profile.name == "jetson-orin-nano-8gb"
    assert mode == 1
    with pytest.raises(HardwareControlError, match="unknown power mode"):
        select_power_cap(power_mode="warp9", profile="jetson-orin-nano-8gb")


@pytest.fixture
def fake_nvml(monkeypatch):
    """Every caller that selects a cap through control.select gets this fake GPU's cap."""
    nv = _gpu()
    kinds = []

    def build(kind, profile=None):
        kinds.append(kind)
        assert kind == "nvml"
        return NvmlPowerCap(pynvml=nv)

    monkeypatch.setattr(select, "_build", build)
    return nv, kinds


def test_the_runner_selects_through_control_select(fake_nvml, tmp_path):
    from greenllm.runner import _power_setting

    nv, kinds = fake_nvml
    with _power_setting(SimpleNamespace(power_cap_w=150.0, power_mode=None)):
        assert nv.gpus[0].power_limit_mw == 150_000
    assert nv.gpus[0].power_limit_mw == 300_000 and kinds == ["nvml"]
    with pytest.raises(ConfigError, match="power_cap_w and power_mode are exclusive"):
        _power_setting(SimpleNamespace(power_cap_w=150.0, power_mode="1"))


def test_cli_bench_selects_through_control_select(fake_nvml):
    from greenllm.cli.bench import make_cap

    cap, value = make_cap(150.0, None)
    assert isinstance(cap, NvmlPowerCap) and value == 150.0 and fake_nvml[1] == ["nvml"]
    assert make_cap(None, None) == (None, None)


def test_the_training_search_selects_through_control_select(fake_nvml):
    pytest.importorskip("torch")
    from greenllm.training import Profile, energy_aware_train

    nv, kinds = fake_nvml
    seen = []

    def profile(c):
        seen.append(c)
        return Profile(c, samples=8, duration_s=1.0, energy_j=100.0, estimated=False)

    cfg = SimpleNamespace(batch_size=2)
    res, _, _ = energy_aware_train(
        None, None, cfg, batch_sizes=[2], power_caps_w=[150.0], profile_fn=profile, train=False
    )
    assert kinds == ["nvml"] and res.power_control and res.p_max_w == 300.0
    assert {r["power_cap_w"] for r in res.rows} == {150.0, None}
    # every cap of the search is checked before the first candidate is profiled
    seen.clear()
    with pytest.raises(HardwareControlError, match="30 W is outside the allowed range"):
        energy_aware_train(
            None,
            None,
            cfg,
            batch_sizes=[2],
            power_caps_w=[150.0, 30.0],
            profile_fn=profile,
            train=False,
        )
    assert seen == []
    with pytest.raises(ConfigError, match="power_caps_w and power_modes are exclusive"):
        energy_aware_train(
            None,
            None,
            cfg,
            batch_sizes=[2],
            power_caps_w=[150.0],
            power_modes=[0],
            profile_fn=profile,
            train=False,
        )


@pytest.mark.parametrize("option", ["--power-caps-w", "--power-limits-w"])
def test_cli_train_search_selects_through_control_select_before_loading(
    fake_nvml, tmp_path, capsys, option
):
    from greenllm.cli import main

    # the model does not exist: the cap is selected and checked before it would be loaded
    rc = main(
        [
            "train-search",
            str(tmp_path / "no-model"),
            "--data",
            "builtin:wiki-sample",
            "--batch-sizes",
            "2",
            option,
            "150,30",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "30 W is outside the allowed range" in err[0]
    assert fake_nvml[1] == ["nvml"]


def test_cli_train_search_old_option_name_is_hidden_and_not_doubled(capsys):
    from greenllm.cli import main

    rc = main(
        [
            "train-search",
            "m",
            "--data",
            "builtin:wiki-sample",
            "--power-caps-w",
            "150",
            "--power-limits-w",
            "200",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "give it once" in err
    assert main(["train-search", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--power-caps-w" in out and "--power-limits-w" not in out
