"""Bounded input (issue 17): YAML limits, short excerpts, the one numeric check, safe names,
writable-path checks, preflight of recipe paths and calibration, measure and SIGTERM."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from greenllm.errors import ConfigError, DataError, GreenLLMError
from greenllm.limits import (
    check_number,
    check_safe_name,
    check_writable_dir,
    excerpt,
    load_yaml,
    load_yaml_text,
)
from greenllm.preflight import looks_like_path, preflight
from greenllm.recipe import load_recipe


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_fails_fast_in_bounded_memory(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(_bomb())
    assert p.stat().st_size < 600
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than"):
        load_recipe(p)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 5 and peak < 20 * 1024 * 1024, (elapsed, peak)


def test_aliases_within_the_bound_still_load():
    text = "base: &b {hz: 5}\nmeasure: *b\nother: *b\n"
    assert load_yaml_text(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text", ["[" * 5000 + "]" * 5000, "".join("  " * i + f"k{i}:\n" for i in range(100)) + "x\n"]
)
def test_deep_nesting_is_refused(text):
    with pytest.raises(ConfigError, match="nested deeper than 64"):
        load_yaml_text(text)


def test_depth_through_aliases_is_bounded():
    deep = "[" * 40 + "1" + "]" * 40
    text = f"a: &a {deep}\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    with pytest.raises(ConfigError, match="deeper than 64"):
        load_yaml_text(text)


@pytest.mark.parametrize("text", ["a: &x [*x]\n", "a: &x {k: *x}\n"])
def test_recursive_alias_is_refused(text):
    with pytest.raises(ConfigError, match="refers to itself"):
        load_yaml_text(text)


def test_size_limit_is_checked_before_reading(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("a: " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="byte limit"):
        load_yaml(p)


def test_invalid_utf8_names_the_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(DataError, match="line 2: not UTF-8"):
        load_yaml(p)


def test_error_messages_echo_a_short_excerpt(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("schema_version: 1\nname: n\nmodel: m\nseed: '" + "9" * 500_000 + "'\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(p)
    assert len(str(info.value)) < 200 and "seed: expected an integer" in str(info.value)
    for bad in (
        {"schema_version": 1, "k" * 10**6: 1},
        {"schema_version": 1, "name": "n", "model": {"id": "m", "k" * 10**6: 1}},
    ):
        with pytest.raises(ConfigError, match="unknown key") as info:
            load_recipe(bad)
        assert len(str(info.value)) < 400
    assert len(excerpt("x" * 10**6)) <= 80 and len(excerpt([[1] * 10**5] * 10**3)) <= 80


@pytest.mark.parametrize(
    "value,match",
    [
        (math.nan, "not a finite"),
        (math.inf, "not a finite"),
        (-math.inf, "not a finite"),
        (1e20, "outside"),
        (True, "expected a number"),
        ("5", "expected a number"),
    ],
)
def test_check_number_rejects(value, match):
    with pytest.raises(ConfigError, match=f"^--hz: .*{match}|^--hz: {match}"):
        check_number(value, "--hz", 0.1, 1000)


def test_check_number_accepts_and_integers():
    assert check_number(10, "--hz", 0.1, 1000) == 10
    with pytest.raises(ConfigError, match="expected an integer"):
        check_number(2.5, "--max-new-tokens", 1, 10, integer=True)


@pytest.mark.parametrize(
    "field,value",
    [
        ("measure.hz", ".nan"),
        ("measure.idle_s", ".inf"),
        ("carbon.pue", ".nan"),
        ("workload.max_new_tokens", "100000000000000000000"),
    ],
)
def test_recipe_numbers_are_finite_and_bounded(field, value):
    section, key = field.split(".")
    data = yaml.safe_load(f"{key}: {value}")
    recipe = {
        "schema_version": 1,
        "name": "n",
        "model": "m",
        section: data,
        "carbon": {"region": "KOR"} if section != "carbon" else {"region": "KOR", **data},
    }
    with pytest.raises(ConfigError, match=key):
        load_recipe(recipe)


@pytest.mark.parametrize(
    "name", ["..", ".", "", " ", "a/b", "a\\b", "a\x00b", "tab\there", "x" * 200]
)
def test_unsafe_names_are_rejected(name):
    with pytest.raises(ConfigError):
        check_safe_name(name, "name")
    with pytest.raises(ConfigError, match=r"variants\.|name"):
        load_recipe(
            {
                "schema_version": 1,
                "name": "n",
                "model": "m",
                "carbon": {"region": "KOR"},
                "variants": {name: [{"quantize": {"method": "bf16"}}]},
            }
        )


def test_recipe_named_dotdot_is_rejected():
    with pytest.raises(ConfigError, match="^name: '..'"):
        load_recipe({"schema_version": 1, "name": "..", "model": "m", "carbon": {"region": "KOR"}})


def test_odd_but_safe_names_are_kept():
    r = load_recipe(
        {
            "schema_version": 1,
            "name": "50% #1 & $x$ 🔥",
            "model": "m",
            "carbon": {"region": "KOR"},
            "variants": {"a$b$": [{"quantize": {"method": "bf16"}}]},
        }
    )
    assert list(r.variants) == ["a$b$"]


def test_path_rule():
    assert not looks_like_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not looks_like_path("builtin:wiki-sample") and not looks_like_path("hf://x/y.txt")
    for p in ("./m", "../m", "/abs/m", "~/m", "data/val.jsonl", "model.gguf"):
        assert looks_like_path(p), p


def _recipe(tmp_path, **over):
    base = {
        "schema_version": 1,
        "name": "n",
        "model": {"id": "org/name"},
        "carbon": {"region": "KOR"},
        "calibration": "builtin:wiki-sample",
    }
    base.update(over)
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(base))
    return load_recipe(p)


@pytest.mark.parametrize(
    "over,match",
    [
        ({"model": {"id": "./missing-model"}}, "model.id"),
        ({"calibration": "cal.txt"}, "calibration"),
        (
            {"evals": [{"perplexity": {"data": "data/missing.txt"}}]},
            r"evals\[0\]\.perplexity\.data",
        ),
        ({"workload": {"prompts": "./prompts.txt"}}, "workload.prompts"),
    ],
)
def test_preflight_missing_local_paths(tmp_path, over, match):
    with pytest.raises(DataError, match=match):
        preflight(_recipe(tmp_path, **over))


def test_preflight_resolves_against_the_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "cal.txt").write_text("some text\n")
    monkeypatch.chdir("/")
    preflight(_recipe(tmp_path, calibration="cal.txt"))  # found next to the recipe


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "layers"])
def test_preflight_calibrated_prune_needs_calibration(tmp_path, method):
    r = _recipe(
        tmp_path, calibration=None, variants={"v": [{"prune": {"method": method, "sparsity": 0.5}}]}
    )
    with pytest.raises(ConfigError, match=r"variants\.v\[0\]\.prune: needs calibration"):
        preflight(r)
    preflight(_recipe(tmp_path, variants={"v": [{"prune": {"method": method, "sparsity": 0.5}}]}))


def test_validate_cli_reports_missing_calibration(tmp_path, capsys):
    from greenllm.cli import main

    _recipe(tmp_path, calibration=None, variants={"v": [{"prune": {"method": "wanda"}}]})
    assert main(["validate", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert "needs calibration" in err and len(err.strip().splitlines()) == 1


def test_check_writable_dir(tmp_path):
    assert check_writable_dir(tmp_path / "a" / "b").is_dir()
    assert not [p for p in (tmp_path / "a" / "b").iterdir()]  # the probe is gone
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        check_writable_dir(tmp_path / "f")
    with pytest.raises(DataError, match="cannot be created"):
        check_writable_dir(tmp_path / "f" / "sub")


def test_measure_forwards_sigterm_to_its_command(tmp_path):
    """`greenllm measure -- CMD` killed with SIGTERM used to exit and leave CMD running."""
    pidfile = tmp_path / "child.pid"
    child = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "greenllm",
            "measure",
            "--meter",
            "estimate",
            "--json",
            "--",
            sys.executable,
            "-c",
            child,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.05)
        child_pid = int(pidfile.read_text())
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert '"returncode": -15' in out  # the report covers the window
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)
    assert "Traceback" not in err


def test_measure_api_rejects_nan_hz():
    from greenllm.measure import measure

    with pytest.raises(GreenLLMError, match="hz"):
        measure(meters=["estimate"], hz=math.nan)
