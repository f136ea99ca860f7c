"""The shared core: registry, strict config parsing, result records, error mapping."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from greenllm.config import ConfigError, parse_config, parse_kv_spec, to_dict
from greenllm.errors import GreenLLMError, MissingDependencyError, UnknownNameError, require
from greenllm.registry import Registry, did_you_mean
from greenllm.results import BenchResult, DomainEnergy, EnergyReport, EvalResult, StepResult

# -- registry -------------------------------------------------------------------------


def test_registry_lazy_target_is_imported_on_first_get():
    reg = Registry("thing", {"join": "os.path:join"})
    import os.path

    assert reg.get("join") is os.path.join
    assert reg.names() == ["join"]


def test_registry_unknown_name_suggests_the_closest():
    reg = Registry("meter", {"nvml": "x:y", "rapl": "x:y", "estimate": "x:y"})
    with pytest.raises(UnknownNameError) as info:
        reg.get("nvm")
    assert "did you mean 'nvml'" in str(info.value)
    assert info.value.suggestion == "nvml"
    with pytest.raises(UnknownNameError):
        reg.check("raple")


def test_registry_decorator_and_duplicate_rejected():
    reg = Registry("step")

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a")() == 1
    with pytest.raises(ValueError):
        reg.register("a", lambda: 2)
    reg.register("a", lambda: 3, replace=True)
    assert reg.get("a")() == 3


def test_did_you_mean_returns_none_for_nonsense():
    assert did_you_mean("zzzzzz", ["wanda", "magnitude"]) is None


# -- config ---------------------------------------------------------------------------


@dataclass
class Calib:
    samples: int = 32
    seq_len: int = 512


@dataclass
class Cfg:
    method: Literal["wanda", "magnitude"]
    sparsity: float = 0.5
    calibration: Calib = field(default_factory=Calib)
    targets: list[str] = field(default_factory=list)
    note: str | None = None
    pattern: str | None = None

    def validate(self):
        if not 0 < self.sparsity < 1:
            raise ConfigError(f"sparsity: must be in (0, 1), got {self.sparsity}")


def test_parse_config_round_trips():
    cfg = parse_config(
        Cfg,
        {"method": "wanda", "sparsity": 0.6, "calibration": {"samples": 8}, "targets": ["q_proj"]},
    )
    assert cfg.calibration == Calib(samples=8, seq_len=512)
    assert parse_config(Cfg, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "mapping, fragment",
    [
        (
            {"method": "wanda", "sparsty": 0.5},
            "prune.sparsty: unknown key; did you mean 'sparsity'?",
        ),
        ({"method": "wandaa"}, "prune.method: 'wandaa' is not one of"),
        ({"method": "wanda", "sparsity": "half"}, "prune.sparsity: expected a number"),
        (
            {"method": "wanda", "calibration": {"samples": 1.5}},
            "prune.calibration.samples: expected an integer",
        ),
        (
            {"method": "wanda", "calibration": {"sample": 3}},
            "prune.calibration.sample: unknown key",
        ),
        ({"method": "wanda", "targets": "q_proj"}, "prune.targets: expected a list"),
        ({}, "missing required key 'method'"),
        ({"method": "wanda", "sparsity": 1.5}, "prune.sparsity: must be in (0, 1)"),
        ("wanda", "expected a mapping"),
    ],
)
def test_parse_config_errors_name_the_field(mapping, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(Cfg, mapping, "prune")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bool_is_not_a_number():
    with pytest.raises(ConfigError):
        parse_config(Cfg, {"method": "wanda", "sparsity": True})


def test_parse_kv_spec():
    key, body = parse_kv_spec(
        "prune:method=wanda,sparsity=0.5,targets=[q_proj,k_proj],calibration.samples=16,pattern=2:4"
    )
    assert key == "prune"
    assert body == {
        "method": "wanda",
        "sparsity": 0.5,
        "targets": ["q_proj", "k_proj"],
        "calibration": {"samples": 16},
        "pattern": "2:4",
    }
    assert parse_kv_spec("quantize") == ("quantize", {})
    with pytest.raises(ConfigError):
        parse_kv_spec("prune:method")
    with pytest.raises(ConfigError):
        parse_kv_spec(":x=1")


# -- results --------------------------------------------------------------------------


def _report():
    d = DomainEnergy(
        meter="rapl",
        domain="package-0",
        energy_j=12.5,
        mean_power_w=6.25,
        samples=20,
        method="counter",
    )
    return EnergyReport(
        duration_s=2.0,
        energy_j=12.5,
        mean_power_w=6.25,
        domains=(d,),
        samples=20,
        sampling_hz=10.0,
        method="counter",
        estimated=False,
        meters=("rapl",),
        flags=("x",),
    )


def test_records_round_trip_through_dicts():
    rep = _report()
    assert EnergyReport.from_dict(rep.to_dict()) == rep
    assert rep.domain("rapl", "package-0").energy_j == 12.5
    step = StepResult(
        step="prune",
        method="wanda",
        config={"sparsity": 0.5},
        duration_s=1.0,
        size_bytes_before=10,
        size_bytes_after=10,
        stats={"sparsity": 0.5},
        energy=rep,
    )
    assert StepResult.from_dict(step.to_dict()) == step
    ev = EvalResult(
        task="hellaswag",
        n=10,
        metrics={"acc": 0.5, "acc_stderr": 0.1},
        duration_s=3.0,
        settings={"shots": 0},
    )
    assert EvalResult.from_json(ev.to_json()) == ev
    assert ev.to_json()["acc"] == 0.5
    b = BenchResult(
        metrics={"ttft_s": 0.1},
        ci95={"ttft_s": 0.01},
        meter="estimate",
        estimated=True,
        repeats=3,
        energy=rep,
    )
    assert BenchResult.from_dict(b.to_dict()) == b
    assert b.to_json()["ttft_s_ci95"] == 0.01 and b.to_json()["estimated"] is True


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _report().energy_j = 0  # type: ignore[misc]


# -- errors and CLI ----------------------------------------------------------------------


def test_require_names_the_extra():
    with pytest.raises(MissingDependencyError) as info:
        require("greenllm_no_such_sdk", "nvml", "GPU energy")
    assert "pip install 'greenllm[nvml]'" in str(info.value)
    assert isinstance(info.value, GreenLLMError)


def test_one_version_source():
    from pathlib import Path

    import tomllib

    import greenllm
    from greenllm import _version

    meta = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "version" in meta["project"]["dynamic"] and "version" not in meta["project"]
    attr = meta["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "greenllm._version.__version__"
    assert greenllm.__version__ == _version.__version__
    assert (
        "## [" + greenllm.__version__ + "]"
        in (Path(__file__).parent.parent / "CHANGELOG.md").read_text()
    )


def test_cli_maps_usage_errors_to_exit_2(capsys):
    from greenllm.cli import main

    assert main(["no-such-command"]) == 2
    assert main(["version"]) == 0
    import greenllm

    assert capsys.readouterr().out.strip() == greenllm.__version__


def test_cli_maps_greenllm_error_to_one_line(capsys):
    import typer

    from greenllm.cli import app, main

    @app.command("_boom", hidden=True)
    def _boom():
        raise GreenLLMError("the field x is wrong; set it to y")

    try:
        assert main(["_boom"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == "greenllm: error: the field x is wrong; set it to y"
        assert "Traceback" not in err
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "_boom"]
    assert isinstance(app, typer.Typer)


def test_parse_scalar_keeps_nm_patterns_as_text():
    from greenllm.config import parse_scalar

    assert parse_scalar("2:4") == "2:4"
    assert parse_scalar("1e-3") == 0.001
    assert parse_scalar("'8'") == "8"
    assert parse_scalar("None") is None


def test_public_functions_survive_submodule_imports():
    """greenllm.measure / greenllm.bench are functions even after their modules are imported."""
    import subprocess
    import sys

    code = (
        "import greenllm.measure, greenllm.bench, greenllm.runner, greenllm.steps.base\n"
        "import greenllm\n"
        "assert callable(greenllm.measure) and greenllm.measure.__name__ == 'measure'\n"
        "assert callable(greenllm.bench) and greenllm.bench.__name__ == 'bench'\n"
        "assert callable(greenllm.compress) and callable(greenllm.evaluate)\n"
        "import sys; assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_first_line_of_an_exception():
    from greenllm.errors import first_line

    assert first_line(RuntimeError("  bad thing\n  Traceback details\n")) == "bad thing"
    assert first_line(ValueError("x" * 50), 10) == "x" * 10
    assert first_line(RuntimeError()) == "RuntimeError"  # no message: the type's name
    assert first_line(OSError("   ")) == "OSError"
