"""Contract tests for every config class: typed, frozen, validated on construction,
round-tripping, and the same object from every spelling (typed, mapping, string spec)."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

import greenllm
from greenllm.config import Config, parse_config, to_dict
from greenllm.errors import ConfigError
from greenllm.evals import EVALS
from greenllm.steps import STEPS
from greenllm.steps.base import parse_step
from greenllm.steps.distill import StudentConfig
from greenllm.steps.prune import CalibrationConfig
from greenllm.steps.train import EarlyStopping

SHORT = {
    "quantize": "Quantize",
    "prune": "Prune",
    "distill": "Distill",
    "lora": "Lora",
    "train": "Train",
    "export": "Export",
}
NESTED = [CalibrationConfig, StudentConfig, EarlyStopping]
STEP_CLASSES = [STEPS.get(k).config_cls for k in STEPS.names()]
ALL_CLASSES = STEP_CLASSES + NESTED


def _ids(classes):
    return [c.__name__ for c in classes]


def test_every_step_has_a_short_public_name():
    assert sorted(SHORT) == STEPS.names()
    for key, short in SHORT.items():
        assert getattr(greenllm, short) is STEPS.get(key).config_cls
        assert short in greenllm.__all__
    assert greenllm.Calibration is CalibrationConfig
    assert greenllm.Student is StudentConfig


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=_ids(ALL_CLASSES))
def test_config_is_frozen_and_validates_itself(cls):
    assert issubclass(cls, Config)
    assert cls.__dataclass_params__.frozen
    cfg = cls()
    field = dataclasses.fields(cls)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, field.name, getattr(cfg, field.name))


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=_ids(ALL_CLASSES))
def test_config_round_trips(cls):
    cfg = cls()
    again = parse_config(cls, json.loads(json.dumps(to_dict(cfg))), "step")
    assert again == cfg
    assert cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}) == cfg


def _typed_fields(cls):
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if hints[f.name] is not typing.Any]


@pytest.mark.parametrize(
    "cls, name",
    [(c, n) for c in ALL_CLASSES for n in _typed_fields(c)],
    ids=[f"{c.__name__}.{n}" for c in ALL_CLASSES for n in _typed_fields(c)],
)
def test_a_wrongly_typed_field_fails_at_construction_naming_it(cls, name):
    with pytest.raises(ConfigError) as info:
        cls(**{name: object()})
    assert str(info.value).startswith(name), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (
            lambda: greenllm.Prune(method="wandaa"),
            "method: unknown prune method 'wandaa'; did you mean 'wanda'?",
        ),
        (lambda: greenllm.Prune(method="wanda", sparsity=2.0), "sparsity: must be strictly"),
        (lambda: greenllm.Prune(targets=[""]), "targets[0]: empty pattern"),
        (lambda: greenllm.Prune(calibration={"samples": 0}), "calibration.samples: must be >= 1"),
        (lambda: greenllm.Prune(calibration={"sample": 3}), "calibration.sample: unknown key"),
        (lambda: greenllm.Quantize(method="int8_weigth"), "did you mean 'int8_weight'?"),
        (lambda: greenllm.Quantize(group_size=7), "group_size: 7 is not one of"),
        (lambda: greenllm.Quantize(ignore="lm_head"), "ignore: expected a list"),
        (lambda: greenllm.Distill(method="kdd"), "did you mean 'kd'?"),
        (lambda: greenllm.Distill(student={"keep_every": 0}), "student.keep_every: 0 must be"),
        (lambda: greenllm.Lora(method="qlor"), "method: 'qlor' is not one of"),
        (lambda: greenllm.Lora(r=0), "r: 0 must be >= 1"),
        (lambda: greenllm.Train(method="ful"), "did you mean 'full'?"),
        (lambda: greenllm.Train(lr=0), "lr: 0.0 must be > 0"),
        (lambda: greenllm.Export(format="ggu"), "format: 'ggu' is not one of"),
        (
            lambda: greenllm.Export(type="q4_k_m"),
            "type: 'q4_k_m' is not among the gguf export types",
        ),
        (lambda: greenllm.Export(format="onnx", type="q8_0"), "not among the onnx export types"),
        (
            lambda: greenllm.Train(early_stopping={"patience": 0}, eval_fraction=0.1),
            "early_stopping.patience: 0 must be >= 1",
        ),
    ],
)
def test_bad_values_fail_at_construction(make, fragment):
    with pytest.raises(ConfigError) as info:
        make()
    assert fragment in str(info.value)


def test_the_issue_example_is_rejected_before_compress_sees_it():
    with pytest.raises(ConfigError, match="did you mean 'wanda'"):
        greenllm.compress(None, [("prune", greenllm.Prune(method="wandaa", sparsity=2.0))])


def test_fields_are_coerced_and_copied():
    targets = ["q_proj"]
    cfg = greenllm.Prune(
        method="wanda", sparsity=1 / 2, targets=targets, calibration={"samples": 8}
    )
    assert cfg.calibration == greenllm.Calibration(samples=8)
    targets.append("k_proj")
    assert cfg.targets == ["q_proj"]
    assert isinstance(greenllm.Train(lr=1).lr, float)


@pytest.mark.parametrize(
    "typed, mapping, spec",
    [
        (
            greenllm.Prune(
                method="wanda", sparsity=0.5, calibration=greenllm.Calibration(samples=8)
            ),
            {"prune": {"method": "wanda", "sparsity": 0.5, "calibration": {"samples": 8}}},
            "prune:method=wanda,sparsity=0.5,calibration.samples=8",
        ),
        (
            greenllm.Quantize(method="int8_weight", ignore=[]),
            {"quantize": {"method": "int8_weight", "ignore": []}},
            "quantize:method=int8_weight,ignore=[]",
        ),
        (
            greenllm.Lora(r=4, targets=["q_proj", "v_proj"]),
            {"lora": {"r": 4, "targets": ["q_proj", "v_proj"]}},
            "lora:r=4,targets=[q_proj,v_proj]",
        ),
        (
            greenllm.Distill(student=greenllm.Student(keep_every=2)),
            {"distill": {"student": {"keep_every": 2}}},
            "distill:student.keep_every=2",
        ),
        (greenllm.Train(max_steps=3), {"train": {"max_steps": 3}}, "train:max_steps=3"),
        (
            greenllm.Export(format="gguf", type="q8_0"),
            {"export": {"format": "gguf", "type": "q8_0"}},
            "export:format=gguf,type=q8_0",
        ),
    ],
)
def test_every_spelling_builds_the_same_object(typed, mapping, spec):
    key = parse_step(typed)[0]
    assert parse_step(mapping) == (key, typed)
    assert parse_step(spec) == (key, typed)
    assert parse_step((key, to_dict(typed))) == (key, typed)


def test_a_config_under_the_wrong_key_is_an_error():
    with pytest.raises(ConfigError, match="config of step 'quantize'"):
        parse_step(("prune", greenllm.Quantize()))


@pytest.mark.parametrize("key", EVALS.names() + STEPS.names())
def test_progress_is_not_a_hashed_config_field(key):
    registry = EVALS if key in EVALS else STEPS
    names = {f.name for f in dataclasses.fields(registry.get(key).config_cls)}
    assert "progress" not in names
