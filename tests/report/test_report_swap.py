"""Report files are replaced as a set: `greenllm report` (a real subprocess) killed with
SIGKILL at random points always leaves either the entire old set or the entire new set.
Two stores with different numbers alternate; every file of each set is compared byte for byte
with a reference report of that store (SOURCE_DATE_EPOCH makes the PDFs reproducible;
emissions.csv is compared without its time-of-writing column)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from greenllm.report.build import REPORT_FILES, STAGE_PREFIX, SWAP_MARKER, finish_swap, write_report

ENV = dict(os.environ, SOURCE_DATE_EPOCH="1700000000", PYTHONUNBUFFERED="1", MPLBACKEND="Agg")


def _make_b(store_a: Path, store_b: Path) -> None:
    """Store B: store A with every energy 10 % higher and a second run (new run id)."""
    shutil.copy(store_a, store_b)
    con = sqlite3.connect(store_b)
    try:
        for key, js in con.execute("SELECT bench_key, result_json FROM benches").fetchall():
            d = json.loads(js)
            for k in ("energy_per_token_j", "energy_per_request_j", "edp_js"):
                if d["metrics"].get(k) is not None:
                    d["metrics"][k] *= 1.1
            d["energy"]["energy_j"] *= 1.1
            con.execute("UPDATE benches SET result_json=? WHERE bench_key=?", (json.dumps(d), key))
        con.execute(
            "INSERT INTO runs (recipe_name, recipe_json, plan_json, started_at_unix_s, "
            "status) SELECT recipe_name, recipe_json, plan_json, 1.0, 'finished' FROM "
            "runs ORDER BY id DESC LIMIT 1"
        )
        con.execute(
            "INSERT INTO environment SELECT 2, hardware_json, software_json, "
            "meters_json, sampling_hz, idle_s FROM environment WHERE run_id=1"
        )
        con.commit()
    finally:
        con.close()


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name == "emissions.csv":  # its timestamp column is the time of writing
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        data = json.dumps(
            [{k: v for k, v in r.items() if k != "timestamp"} for r in rows], sort_keys=True
        ).encode()
    return data


def _snapshot(d: Path) -> dict[str, str]:
    return {
        n: hashlib.sha256(_content(d / n)).hexdigest() for n in REPORT_FILES if (d / n).exists()
    }


def _put_store(src: Path, out: Path) -> None:
    for suffix in ("-wal", "-shm"):
        (out / ("greenllm.sqlite" + suffix)).unlink(missing_ok=True)
    shutil.copy(src, out / "greenllm.sqlite")


def test_killed_report_leaves_the_old_or_the_new_set(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", ENV["SOURCE_DATE_EPOCH"])
    stores = {"A": tmp_path / "a.sqlite", "B": tmp_path / "b.sqlite"}
    shutil.copy(run_dir / "greenllm.sqlite", stores["A"])
    _make_b(stores["A"], stores["B"])
    out = tmp_path / "out"
    out.mkdir()
    refs = {}
    for name, src in stores.items():  # reference sets, written in `out` itself
        _put_store(src, out)
        write_report(out)
        refs[name] = _snapshot(out)
    assert refs["A"].keys() == refs["B"].keys() and len(refs["A"]) >= 6
    assert all(refs["A"][n] != refs["B"][n] for n in refs["A"])  # every file tells them apart
    current = "B"
    rng = random.Random(17)
    killed_while_writing = 0
    for i in range(10):
        target = "A" if current == "B" else "B"
        _put_store(stores[target], out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "greenllm", "report", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        if i % 2:  # anywhere in the process's life
            time.sleep(rng.uniform(0.0, 3.0))
        else:  # once it has started writing files
            deadline = time.monotonic() + 60
            while (
                proc.poll() is None
                and time.monotonic() < deadline
                and not list(out.glob(STAGE_PREFIX + "*"))
            ):
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.4))
        writing = proc.poll() is None and bool(list(out.glob(STAGE_PREFIX + "*")))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        killed_while_writing += writing and proc.returncode == -signal.SIGKILL
        seen = _snapshot(out)
        if (out / SWAP_MARKER).exists():
            # killed inside the rename phase: the whole new set is staged and the next
            # greenllm command completes the swap before anything else
            assert finish_swap(out)
            seen = _snapshot(out)
        assert seen in (refs[current], refs[target]), (
            f"round {i}: a mix of old and new files: "
            + str(
                {n: [k for k in (current, target) if refs[k].get(n) == h] for n, h in seen.items()}
            )
            + str(sorted(p.name for p in out.iterdir()))
        )
        assert not list(out.glob(STAGE_PREFIX + "*")) or not (out / SWAP_MARKER).exists()
        current = target if seen == refs[target] else current
    assert killed_while_writing >= 3  # the kills did hit the writing phase
    write_report(out)  # and the next report cleans up
    assert not list(out.glob(STAGE_PREFIX + "*")) and not (out / SWAP_MARKER).exists()
