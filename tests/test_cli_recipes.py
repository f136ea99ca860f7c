"""greenllm recipes [list] / recipes copy NAME DIR, through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from greenllm.cli import main
from greenllm.recipe import load_recipe
from greenllm.recipe_files import copy_recipe, find_recipe, list_recipes, recipes_dir


def test_list_names_every_shipped_recipe_with_a_description(capfd):
    assert main(["recipes", "--json"]) == 0
    rows = json.loads(capfd.readouterr().out)
    names = [r["name"] for r in rows]
    on_disk = sorted(
        p.relative_to(recipes_dir()).with_suffix("").as_posix()
        for p in recipes_dir().rglob("*.yaml")
    )
    assert sorted(names) == on_disk
    assert names[0] == "quickstart" and "seeds/slm-energy-edge" in names
    for r in rows:
        assert r["description"] and "\n" not in r["description"], r
        assert len(r["description"]) <= 90 and "(" not in r["description"], r
    quick = rows[0]["description"]
    assert quick.startswith("greenllm quickstart: SmolLM2-135M-Instruct")


@pytest.mark.parametrize("argv", [["recipes"], ["recipes", "list"]])
def test_list_prints_a_table(argv, capfd):
    assert main(argv) == 0
    out = capfd.readouterr().out
    assert "quickstart" in out and "seeds/jetson-inference" in out


def test_copy_writes_the_file_and_it_validates(tmp_path, capfd):
    dest_dir = tmp_path / "mine"
    assert main(["recipes", "copy", "seeds/slm-energy-edge", str(dest_dir)]) == 0
    dest = dest_dir / "slm-energy-edge.yaml"
    assert dest.read_bytes() == (recipes_dir() / "seeds" / "slm-energy-edge.yaml").read_bytes()
    assert str(dest) in capfd.readouterr().out
    assert load_recipe(dest).name == "slm-energy-edge"


def test_copy_refuses_to_overwrite_unless_forced(tmp_path, capfd):
    dest = tmp_path / "quickstart.yaml"
    dest.write_text("# my edits\n")
    assert main(["recipes", "copy", "quickstart", str(tmp_path)]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--force" in err
    assert dest.read_text() == "# my edits\n"
    assert main(["recipes", "copy", "quickstart", str(tmp_path), "--force"]) == 0
    assert dest.read_bytes() == (recipes_dir() / "quickstart.yaml").read_bytes()


@pytest.mark.parametrize(
    "name,suggestion",
    [
        ("quickstrt", "quickstart"),
        ("seeds/slm-energy-edg", "seeds/slm-energy-edge"),
        ("jetson-infrence", "seeds/jetson-inference"),
    ],
)
def test_unknown_name_is_one_did_you_mean_line(name, suggestion, tmp_path, capfd):
    assert main(["recipes", "copy", name, str(tmp_path)]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert f"unknown recipe {name!r}; did you mean {suggestion!r}?" in err
    assert not list(tmp_path.iterdir())


def test_names_accept_yaml_suffix_and_a_bare_seed_name(tmp_path):
    assert find_recipe("quickstart.yaml").name == "quickstart"
    assert find_recipe("slm-energy-edge").name == "seeds/slm-energy-edge"
    assert copy_recipe("jetson-training", tmp_path).name == "jetson-training.yaml"


def test_copy_into_a_file_is_one_clear_error(tmp_path, capfd):
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert main(["recipes", "copy", "quickstart", str(f)]) == 2
    assert "is a file" in capfd.readouterr().err


def test_list_recipes_matches_the_cli_and_imports_no_torch():
    assert list_recipes()[0].name == "quickstart"
    code = (
        "import sys\nfrom greenllm.cli import main\nrc = main(['recipes', '--json'])\n"
        "assert rc == 0\nprint('torch' in sys.modules, file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "False"
