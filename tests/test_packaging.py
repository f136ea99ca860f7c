"""The wheel ships every package and the recipes: pyproject.toml lists the packages
explicitly (it maps the top-level recipes/ folder into greenllm/recipes/), so a package added
under src/greenllm must be added there too. One test builds the wheel and looks inside."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_conf() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _recipe_files() -> set[str]:
    return {
        p.relative_to(ROOT / "recipes").as_posix()
        for p in (ROOT / "recipes").rglob("*")
        if p.is_file()
    }


def test_every_package_under_src_is_listed():
    src = ROOT / "src"
    found = {
        p.parent.relative_to(src).as_posix().replace("/", ".")
        for p in (src / "greenllm").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    listed = set(_setuptools_conf()["packages"])
    missing = sorted(found - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_the_recipes_folder_is_mapped_into_the_package():
    conf = _setuptools_conf()
    assert conf["package-dir"]["greenllm.recipes"] == "recipes"
    folders = {f.rpartition("/")[0] for f in _recipe_files()}
    for folder in folders:
        pkg = "greenllm.recipes" + ("." + folder.replace("/", ".") if folder else "")
        assert pkg in conf["packages"], pkg
        assert conf["package-data"].get(pkg) == ["*.yaml"], pkg
    assert all(f.endswith(".yaml") for f in _recipe_files())


def test_recipes_dir_is_the_repository_folder_in_a_checkout():
    from greenllm.recipe_files import recipes_dir

    assert recipes_dir() == ROOT / "recipes"


def test_the_wheel_contains_the_recipes_and_data(tmp_path):
    pytest.importorskip("setuptools")
    # the build leaves build/ and src/greenllm.egg-info behind: remove what it created
    leftovers = [p for p in (ROOT / "build", ROOT / "src" / "greenllm.egg-info") if not p.exists()]
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(tmp_path),
                str(ROOT),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            check=False,
        )
    finally:
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("greenllm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in _recipe_files():
        assert f"greenllm/recipes/{f}" in names, f
    assert "greenllm/data/wiki-sample.txt" in names
    assert "greenllm/recipe_files.py" in names and "greenllm/cli/__init__.py" in names
