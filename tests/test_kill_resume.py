"""Interrupted runs: kill -9 after the first finished result loses nothing and resumes with
no duplicate rows; SIGINT through the CLI stops cleanly (exit 130, run marked interrupted)
and resumes. The runner is a real subprocess (`python -m greenllm run`)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from greenllm.runner import run
from greenllm.testing import default_signal_dispositions, tiny_model_and_tokenizer

TABLES = ("runs", "variants", "steps", "evals", "benches")


def _recipe(root: Path) -> Path:
    model, tok = tiny_model_and_tokenizer(0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    (root / "text.txt").write_text("A small text to score with a tiny model. " * 10)
    data = {
        "schema_version": 1,
        "name": "kill-me",
        "model": {"id": str(root / "model")},
        "variants": {
            f"mag{i}": [{"prune": {"method": "magnitude", "sparsity": i / 100}}] for i in (20, 40)
        },
        "evals": [{"perplexity": {"data": "text.txt", "max_length": 64}}],
        "workload": {
            "prompts": ["Hello", "The cat"],
            "max_new_tokens": 3,
            "warmup": 0,
            "repeats": 2,
            "min_window_s": 0,
        },
        "meters": ["estimate"],
        "measure": {"hz": 100, "on_disturbance": "flag"},
        "carbon": {"intensity_g_per_kwh": 450.0},
    }
    path = root / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _query(out: Path, sql: str):
    con = sqlite3.connect(out / "greenllm.sqlite")
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # polled while the schema is being created
        return None
    finally:
        con.close()


def _start_and_wait(recipe: Path, out: Path, table: str) -> subprocess.Popen:
    """Start the CLI runner; return once ``table`` has a committed row (the process still
    running). Polls the store; nothing here times the work."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenllm", "run", str(recipe), "--out", str(out), "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=default_signal_dispositions,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "greenllm.sqlite").exists():
            rows = _query(out, f"SELECT COUNT(*) FROM {table}")
            if rows and rows[0][0] >= 1:
                return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"runner ended before its first {table} row: {proc.stderr.read()}")


def _rows(out: Path) -> dict:
    return {
        "steps": dict(
            ((k, i), r)
            for k, i, r in _query(out, "SELECT variant_key, idx, result_json FROM steps")
        ),
        "evals": dict(_query(out, "SELECT eval_key, result_json FROM evals")),
        "benches": dict(_query(out, "SELECT bench_key, result_json FROM benches")),
    }


def test_kill_9_loses_nothing_and_resumes_without_duplicates(tmp_path):
    recipe, out = _recipe(tmp_path), tmp_path / "out"
    proc = _start_and_wait(recipe, out, "evals")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = _rows(out)
    assert len(before["evals"]) >= 1  # the finished result survived
    assert _query(out, "SELECT status FROM runs") == [("running",)]  # killed mid-run

    summary = run(recipe, out, progress=False)
    assert summary.status == "finished"
    after = _rows(out)
    for table in ("steps", "evals", "benches"):  # nothing finished was redone
        for key, row in before[table].items():
            assert after[table][key] == row
    assert summary.done["evals"] == 3 - len(before["evals"])
    assert summary.done["benches"] == 3 - len(before["benches"])
    counts = {t: _query(out, f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}
    assert counts == {"runs": 2, "variants": 3, "steps": 2, "evals": 3, "benches": 3}
    doc = json.loads((out / "results.json").read_text())
    assert [v["name"] for v in doc["variants"]] == ["baseline", "mag20", "mag40"]
    assert all(v["complete"] for v in doc["variants"])
    # same results: the perplexity stored before the kill is the one reported
    first_key, first_row = next(iter(before["evals"].items()))
    reported = [e for v in doc["variants"] for e in v["evals"]]
    assert json.loads(first_row)["metrics"]["perplexity"] in [e["perplexity"] for e in reported]


def test_sigint_stops_cleanly_and_resumes(tmp_path):
    recipe, out = _recipe(tmp_path), tmp_path / "out"
    proc = _start_and_wait(recipe, out, "windows")  # the rounds have begun
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert _query(out, "SELECT status FROM runs") == [("interrupted",)]
    kept = _query(out, "SELECT round, variant_key, row_json FROM windows")
    assert kept  # every window measured before the signal is in the store
    by_round: dict = {}
    for r, k, row in kept:
        by_round.setdefault(r, {})[k] = row
    finished = {r: rows for r, rows in by_round.items() if len(rows) == 3}
    summary = run(recipe, out, progress=False)
    assert summary.status == "finished"
    assert summary.skipped["windows"] == 3 * len(finished)  # finished rounds are not redone
    after = _query(out, "SELECT round, variant_key, row_json FROM windows")
    for r, k, row in after:
        if r in finished:
            assert finished[r][k] == row
    assert sorted(r for r, _, _ in after) == [1, 1, 1, 2, 2, 2]
    assert _query(out, "SELECT COUNT(*) FROM benches")[0][0] == 3
