"""One writer per output directory, with real processes and real signals: a second
`greenllm run` into a directory in use fails at once naming the holder's pid; --fresh checks
the recipe and takes the lock before it touches anything, and moves the old results aside;
a run killed with SIGKILL is marked interrupted by the next run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from greenllm.errors import StoreError
from greenllm.outdir import OutputLock
from greenllm.runner import run
from greenllm.testing import default_signal_dispositions, tiny_model_and_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lock") / "model"
    m, tok = tiny_model_and_tokenizer(0)
    m.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def recipe(tmp_path, model_dir):
    def make(repeats: int = 1, name: str = "r.yaml", model: str | None = None) -> Path:
        return _recipe(tmp_path, model or str(model_dir), repeats, name)

    return make


def _recipe(root: Path, model: str, repeats: int, name: str) -> Path:
    data = {
        "schema_version": 1,
        "name": "lock-me",
        "model": {"id": model},
        "variants": {},
        "workload": {
            "prompts": ["Hello", "The cat"],
            "max_new_tokens": 2,
            "warmup": 0,
            "repeats": repeats,
            "min_window_s": 0,
        },
        "meters": ["estimate"],
        "measure": {"hz": 100, "on_disturbance": "flag"},
        "carbon": {"intensity_g_per_kwh": 450.0},
    }
    path = root / name
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "greenllm", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=default_signal_dispositions,
    )


def _statuses(out: Path) -> list[str]:
    con = sqlite3.connect(out / "greenllm.sqlite")
    try:
        return [r[0] for r in con.execute("SELECT status FROM runs ORDER BY id")]
    finally:
        con.close()


def _wait_for_run_row(proc: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if (out / "greenllm.sqlite").exists() and _statuses(out):
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the runner ended before its run row: {proc.communicate()[1]}")


def test_second_run_fails_at_once_and_a_killed_run_is_marked_interrupted(tmp_path, recipe):
    out = tmp_path / "out"
    first = _cli("run", str(recipe(repeats=500)), "--out", str(out), "--quiet")
    try:
        _wait_for_run_row(first, out)
        t0 = time.monotonic()
        for extra in ([], ["--fresh"]):  # a concurrent --fresh discards nothing
            second = _cli("run", str(recipe(name="r2.yaml")), "--out", str(out), "--quiet", *extra)
            _, err = second.communicate(timeout=120)
            assert second.returncode == 2, err
            assert f"is in use by pid {first.pid}" in err and "Traceback" not in err
            assert len(err.strip().splitlines()) == 1
        assert time.monotonic() - t0 < 60  # no work was done
        assert first.poll() is None  # the holder runs on
        assert (out / "greenllm.sqlite").exists() and _statuses(out) == ["running"]
        assert not list(out.glob("previous-*"))
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert _statuses(out) == ["running"]  # killed mid-run
    summary = run(recipe(), out, progress=False)  # the kernel dropped the lock
    assert summary.status == "finished"
    assert _statuses(out) == ["interrupted", "finished"]


def test_lock_names_the_holder_and_is_released(tmp_path, recipe):
    with OutputLock(tmp_path):
        assert (tmp_path / ".greenllm.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(StoreError, match=f"in use by pid {os.getpid()}"):
            OutputLock(tmp_path).acquire()
        with pytest.raises(StoreError, match="in use"):
            run(recipe(), tmp_path, resume=False, progress=False)
    OutputLock(tmp_path).acquire().release()  # free again


def test_fresh_checks_the_recipe_before_touching_anything(tmp_path, recipe):
    out = tmp_path / "out"
    run(recipe(), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert "report.md" in before and "greenllm.sqlite" in before
    bad = recipe(name="bad.yaml", model=str(tmp_path / "modle"))  # a typo
    proc = _cli("run", str(bad), "--out", str(out), "--fresh", "--quiet")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "model.id" in err and "does not exist" in err, err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".greenllm.lock"} == {
        k: v for k, v in before.items() if k != ".greenllm.lock"
    }
    assert not list(out.glob("previous-*"))


def test_fresh_moves_the_old_results_aside(tmp_path, recipe):
    out = tmp_path / "out"
    run(recipe(), out, progress=False)
    old_report = (out / "report.md").read_text()
    summary = run(recipe(), out, resume=False, progress=False)
    assert summary.done["benches"] == 1  # really started over
    (prev,) = out.glob("previous-*")
    assert (prev / "report.md").read_text() == old_report
    con = sqlite3.connect(prev / "greenllm.sqlite")
    try:
        assert con.execute("SELECT COUNT(*) FROM benches").fetchone()[0] == 1
    finally:
        con.close()
    assert _statuses(out) == ["finished"]
