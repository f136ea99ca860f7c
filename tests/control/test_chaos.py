"""Power-control chaos: two runs (processes) capping one fake GPU, one SIGKILLed at a random
point, 20 rounds. Every round the device ends at its true original (after `control restore`
where a kill left a journal), every run recorded the true original, and every observation a
run made inside its window was the value it asked for.

The device is the file-backed FakePynvml (the limit lives in a JSON file), so both runs, the
test and the restore command see one GPU."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from greenllm.cli import main

ORIGINAL_MW = 300_000
RUN = r"""
import json, os, sys, time
from greenllm.control.base import capped
from greenllm.control.nvml import NvmlPowerCap

requested, log_path, go = float(sys.argv[1]), sys.argv[2], sys.argv[3]
while not os.path.exists(go):       # both runs start together
    time.sleep(0.002)
log = open(log_path, "a", buffering=1)
cap = NvmlPowerCap()
with capped(cap, requested, wait_s=30) as original:
    log.write(json.dumps({"recorded": original, "requested": requested}) + "\n")
    for _ in range(8):              # the run's "energy window"
        log.write(json.dumps({"observed": cap.get()}) + "\n")
        time.sleep(0.01)
log.write(json.dumps({"done": True}) + "\n")
"""


def _read_log(path):
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except ValueError:  # a line cut by SIGKILL
            pass
    return out


def test_two_runs_and_a_sigkill_never_leave_the_device_capped(
    tmp_path, control_dir, children, file_nvml, monkeypatch
):
    _, state = file_nvml.make(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    script = tmp_path / "run.py"
    script.write_text(RUN)
    # the in-process restore sees the same file-backed device
    sys.path.insert(0, str(tmp_path))
    monkeypatch.setattr(sys, "path", sys.path)
    sys.modules.pop("pynvml", None)
    import pynvml  # noqa: F401  (the fake generated above)

    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    rng = random.Random(1717)
    t_start = time.monotonic()
    restores = kills_mid_window = stale_fixed = 0
    for rnd in range(20):
        go = tmp_path / f"go-{rnd}"
        logs = [tmp_path / f"r{rnd}-{i}.log" for i in (0, 1)]
        errs = [open(lg.with_suffix(".err"), "w") for lg in logs]
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(w), str(lg), str(go)], env=env, stderr=e
            )
            for w, lg, e in zip((150.0, 200.0), logs, errs)
        ]
        children.extend(procs)
        time.sleep(0.35)  # both have imported greenllm and wait for "go"
        go.write_text("go")
        if rnd < 2:
            # two rounds hit a window for sure: round 0 kills the holder and the waiting run
            # (the journal stays: `control restore`), round 1 only the holder (the waiting
            # run finds the stale journal and restores it first)
            deadline = time.monotonic() + 60
            while not any("recorded" in lg.read_text() for lg in logs if lg.exists()):
                assert time.monotonic() < deadline
                time.sleep(0.005)
            victim = next(
                i for i, lg in enumerate(logs) if lg.exists() and "recorded" in lg.read_text()
            )
            both = rnd == 0
            if both:
                os.kill(procs[1 - victim].pid, signal.SIGKILL)
            os.kill(procs[victim].pid, signal.SIGKILL)
        else:
            time.sleep(rng.uniform(0.0, 0.35))
            victim = rng.randrange(2)
            os.kill(procs[victim].pid, signal.SIGKILL)
            both = rng.random() < 0.3  # sometimes the other run is killed too
            if both:
                time.sleep(rng.uniform(0.0, 0.3))
                os.kill(procs[1 - victim].pid, signal.SIGKILL)
        for p, e in zip(procs, errs):
            p.wait(timeout=60)
            e.close()
        assert procs[victim].returncode in (0, -signal.SIGKILL)  # it may have finished
        if not both:
            assert procs[1 - victim].returncode == 0, f"round {rnd}: the surviving run failed"
        stale_fixed += sum(
            "restored its original 300.0 first" in lg.with_suffix(".err").read_text() for lg in logs
        )
        if list(control_dir.glob("*.json")):
            assert main(["control", "restore"]) == 0
            restores += 1
        assert file_nvml.limit(state) == ORIGINAL_MW, f"round {rnd}: device left capped"
        assert not list(control_dir.glob("*.json"))
        for i, lg in enumerate(logs):
            rec = _read_log(lg)
            head = [r for r in rec if "recorded" in r]
            if not head:
                continue  # killed before its window began
            assert head[0]["recorded"] == ORIGINAL_MW / 1000, f"round {rnd}: wrong original"
            seen = [r["observed"] for r in rec if "observed" in r]
            assert all(v == head[0]["requested"] for v in seen), (rnd, i, seen)
            if i == victim and not any("done" in r for r in rec):
                kills_mid_window += 1
    assert time.monotonic() - t_start < 60
    # the random points covered kills inside a window, stale journals put right by the next
    # run ("restored its original first") and by `control restore`
    assert kills_mid_window >= 1 and stale_fixed >= 1 and restores >= 1
