"""greenllm measure / analyze tegrastats / detect, through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from greenllm.cli import main

DATA = Path(__file__).resolve().parent / "data" / "tegrastats"


def test_measure_runs_the_command_and_passes_its_exit_code(capfd):
    rc = main(
        [
            "measure",
            "--json",
            "--",
            sys.executable,
            "-c",
            "import sys; print('child says hi'); sys.exit(3)",
        ]
    )
    out, err = capfd.readouterr()
    assert rc == 3
    assert "child says hi" in out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["returncode"] == 3 and report["command"][0] == sys.executable
    assert report["duration_s"] > 0 and report["energy_j"] >= 0 and report["meters"]
    if report["meters"] == ["estimate"]:
        assert report["estimated"] is True and report["method"] == "estimate"


def test_measure_human_report_labels_the_estimate(capfd, tmp_path):
    trace = tmp_path / "t.csv"
    rc = main(
        [
            "measure",
            "--hz",
            "50",
            "--trace",
            str(trace),
            "--",
            sys.executable,
            "-c",
            "sum(range(100000))",
        ]
    )
    out, err = capfd.readouterr()
    assert rc == 0
    assert "greenllm measure" in err and "energy_j" in err
    if "estimate" in err:
        assert "ESTIMATE" in err
    assert trace.exists() and trace.read_text().startswith("t_s,phase,meter")


def test_measure_with_named_meter(capfd):
    rc = main(["measure", "--meter", "estimate", "--json", "--", "true"])
    out, _ = capfd.readouterr()
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["meters"] == ["estimate"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["measure"], "no command given"),
        (["measure", "--"], "no command given"),
        (["measure", "--", "surely-not-a-command-xyz"], "command not found"),
        (["measure", "--meter", "nvm", "--", "true"], "did you mean 'nvml'"),
        (["measure", "--hz", "0", "--", "true"], "--hz"),
    ],
)
def test_measure_user_errors_are_one_line_exit_2(capfd, argv, needle):
    rc = main(argv)
    out, err = capfd.readouterr()
    assert rc == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_analyze_tegrastats_json_keys_and_values(capfd):
    rc = main(
        ["analyze", "tegrastats", str(DATA / "nano_r32.log"), "--interval-ms", "1000", "--json"]
    )
    out, _ = capfd.readouterr()
    assert rc == 0
    res = json.loads(out)
    assert set(res) == {
        "samples",
        "skipped_lines",
        "duration_s",
        "energy_j",
        "mean_power_w",
        "total_rails",
        "rails",
        "gpu_util_mean_pct",
        "truncated_lines",
    }
    assert res["samples"] == 2 and res["skipped_lines"] == 1
    assert res["total_rails"] == ["POM_5V_IN"]
    assert res["energy_j"] == pytest.approx((2.746 + 2.980) / 2)
    assert set(res["rails"]["POM_5V_CPU"]) == {"mean_power_w", "energy_j"}


def test_analyze_tegrastats_table(capfd):
    rc = main(["analyze", "tegrastats", str(DATA / "agx_orin_r36.log")])
    out, _ = capfd.readouterr()
    assert rc == 0 and "VIN_SYS_5V0" in out and "VDD_GPU_SOC" in out


def test_analyze_tegrastats_bad_files_exit_2(capfd, tmp_path):
    junk = tmp_path / "junk.log"
    junk.write_text("not tegrastats\n")
    for path in (junk, tmp_path / "missing.log"):
        rc = main(["analyze", "tegrastats", str(path)])
        _, err = capfd.readouterr()
        assert rc == 2 and len(err.strip().splitlines()) == 1 and str(path) in err


def test_detect_json_lists_every_meter(capfd):
    rc = main(["detect", "--json"])
    out, _ = capfd.readouterr()
    assert rc == 0
    data = json.loads(out)
    assert [r["meter"] for r in data["meters"]] == [
        "nvml",
        "rapl",
        "jetson",
        "tegrastats",
        "jtop",
        "estimate",
        "replay",
    ]
    assert data["chosen"] and all(r["detail"] for r in data["meters"])


def test_console_script_exit_code_passthrough():
    """The installed entry point, in a subprocess (what users and scripts run)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "greenllm",
            "measure",
            "--",
            sys.executable,
            "-c",
            "raise SystemExit(5)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 5, out.stderr
