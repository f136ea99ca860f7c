"""Text sources (builtin:NAME, a path, a list, a datasets dataset) resolve in one place:
greenllm.builtin_data. Every consumer gives the same answer and the same error."""

from __future__ import annotations

import pytest

from greenllm.bench import load_prompts
from greenllm.builtin_data import DATA_DIR, dataset_text_column, text_source
from greenllm.errors import ConfigError, DataError
from greenllm.recipe import parse_recipe
from greenllm.steps.calibration import load_texts
from greenllm.steps.data import load_source


class FakeDataset:
    """The part of a datasets.Dataset the readers use."""

    def __init__(self, columns: dict):
        self._c = columns
        self.column_names = list(columns)
        self.features = {k: type("F", (), {"dtype": "string"})() for k in columns}

    def __len__(self):
        return len(next(iter(self._c.values())))

    def __getitem__(self, key):
        return self._c[key] if isinstance(key, str) else {k: v[key] for k, v in self._c.items()}

    def select(self, rows):
        return FakeDataset({k: [v[i] for i in rows] for k, v in self._c.items()})


def test_text_source_forms(tmp_path):
    assert text_source("builtin:prompts") == DATA_DIR / "prompts.txt"
    assert text_source(str(tmp_path)) == tmp_path
    assert text_source(["a"]) == ["a"]
    ds = FakeDataset({"content": ["x"]})
    assert text_source(ds) is ds
    assert dataset_text_column(ds) == "content"
    with pytest.raises(DataError, match="expected builtin:NAME"):
        text_source(3)


@pytest.mark.parametrize(
    "read",
    [
        lambda s: load_prompts(s),
        lambda s: load_texts(s),
        lambda s: load_source(s, "lm"),
    ],
)
def test_every_reader_resolves_builtins_the_same_way(read):
    assert read("builtin:wiki-sample")
    with pytest.raises(
        DataError,
        match=r"unknown builtin data 'wiki-smple'; did you mean "
        r"'builtin:wiki-sample'\?",
    ):
        read("builtin:wiki-smple")


def test_datasets_pick_the_same_text_column_for_calibration_and_training():
    ds = FakeDataset({"content": ["one two three", "four five"], "id": [1, 2]})
    ds.features["id"].dtype = "int64"
    assert load_source(ds, "lm") == ["one two three", "four five"]
    assert sorted(load_texts(ds)) == ["four five", "one two three"]


def test_the_recipe_checker_uses_the_same_builtin_names():
    with pytest.raises(ConfigError, match="did you mean 'builtin:wiki-sample'"):
        parse_recipe(
            {"schema_version": 1, "name": "x", "model": "m", "calibration": "builtin:wiki-smple"}
        )
