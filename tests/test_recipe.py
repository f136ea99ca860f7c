"""Recipes: every shipped recipe validates and round-trips; every malformed recipe in
tests/data/bad_recipes fails with one line naming the field path (exit 2, no traceback);
the committed docs/recipes.md matches the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from greenllm.cli import main
from greenllm.errors import ConfigError, DataError
from greenllm.recipe import load_recipe, parse_recipe, schema_markdown
from greenllm.recipe_files import recipes_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(recipes_dir().rglob("*.yaml"))
BAD = sorted((Path(__file__).parent / "data" / "bad_recipes").glob("*.yaml"))


def test_recipe_sets_are_there():
    names = {p.name for p in RECIPES}
    assert {"quickstart.yaml", "slm-energy-edge.yaml", "jetson-inference.yaml"} <= names
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_validates_and_round_trips(path):
    r = load_recipe(path)
    again = parse_recipe(r.to_dict())
    assert again.to_dict() == r.to_dict()
    assert again.variants.keys() == r.variants.keys()
    assert [k for k, _ in again.evals] == [k for k, _ in r.evals]
    assert r.all_variants()[0] == ("baseline", [])


def test_quickstart_shape():
    r = load_recipe(recipes_dir() / "quickstart.yaml")
    assert r.model.id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert list(r.variants) == ["int8", "wanda50", "wanda50-int8"]
    assert [k for k, _ in r.variants["wanda50-int8"]] == ["prune", "quantize"]
    assert r.carbon.region == "KOR" and r.meters == "auto"


def test_design_example_loads():
    """The example of the design notes, key for key (dynamic_int8 is a quantize method)."""
    r = load_recipe(
        {
            "schema_version": 1,
            "name": "smollm2-int8-vs-wanda",
            "model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "dtype": "float32"},
            "variants": {
                "int8": [{"quantize": {"method": "dynamic_int8"}}],
                "wanda50": [
                    {"prune": {"method": "wanda", "sparsity": 0.5, "calibration": {"samples": 32}}}
                ],
                "wanda50-int8": [
                    {"prune": {"method": "wanda", "sparsity": 0.5}},
                    {"quantize": {"method": "dynamic_int8"}},
                ],
            },
            "evals": [
                {"perplexity": {"data": "builtin:wiki-sample"}},
                {
                    "choice": {
                        "task": "hellaswag",
                        "data": "path/to/hellaswag_val.jsonl",
                        "limit": 500,
                    }
                },
            ],
            "workload": {
                "prompts": "builtin:prompts",
                "max_new_tokens": 64,
                "batch_size": 1,
                "warmup": 2,
                "repeats": 5,
            },
            "meters": "auto",
            "carbon": {"region": "KOR", "pue": 1.0},
            "targets": {"max_accuracy_drop_pp": 1.0, "min_energy_saving": 0.2},
        }
    )
    assert r.targets.min_energy_saving == 0.2 and r.workload.repeats == 5


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return first[len("# expect: ") :]


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_recipe_one_line_error(path, capsys):
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("greenllm: error: ")
    assert _expected(path) in lines[0]


def test_bad_recipe_in_a_subprocess():
    """The real console entry: exit 2, one line, no traceback."""
    path = next(p for p in BAD if p.name.startswith("10_"))
    proc = subprocess.run(
        [sys.executable, "-m", "greenllm", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "did you mean 'quantize'" in proc.stderr


def test_missing_recipe_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_only_safe_yaml(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("schema_version: 1\nname: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe(p)


def test_validate_ok_prints_summary(capsys):
    path = recipes_dir() / "quickstart.yaml"
    assert main(["validate", str(path)]) == 0
    assert "ok: quickstart-smollm2" in capsys.readouterr().out


def test_docs_recipes_md_is_generated():
    doc = ROOT / "docs" / "recipes.md"
    assert doc.read_text() == schema_markdown(), (
        'docs/recipes.md is stale; regenerate it with: python -c "import greenllm.recipe as r;'
        " print(r.schema_markdown(), end='')\" > docs/recipes.md"
    )


def test_recipe_module_imports_no_torch():
    code = (
        "import sys, greenllm.recipe, greenllm.store, greenllm.runner, greenllm.report.build,"
        " greenllm.cli.run; from greenllm.recipe import load_recipe;"
        " load_recipe(sys.argv[1]); print('torch' in sys.modules)"
    )
    path = recipes_dir() / "quickstart.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
