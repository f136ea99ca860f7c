"""greenllm bench / devices / control from the command line (in-process main())."""

from __future__ import annotations

import json

import pytest

from greenllm.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from greenllm.testing import tiny_model_and_tokenizer

    d = tmp_path_factory.mktemp("tiny")
    model, tok = tiny_model_and_tokenizer(0)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _one_line_error(capsys, rc):
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bench_json_keys(tiny_dir, capsys):
    rc = main(
        [
            "bench",
            str(tiny_dir),
            "--max-new-tokens",
            "3",
            "--repeats",
            "2",
            "--min-window-s",
            "0",
            "--warmup",
            "0",
            "--limit",
            "2",
            "--meter",
            "estimate",
            "--hz",
            "50",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for k in (
        "ttft_s",
        "tpot_s",
        "decode_tokens_per_s",
        "energy_per_token_j",
        "tokens_per_wh",
        "edp_js",
        "size_bytes",
        "peak_memory_bytes",
        "roofline_fraction",
    ):
        assert k in out, k
    for k in (
        "ttft_s",
        "tpot_s",
        "decode_tokens_per_s",
        "energy_per_token_j",
        "tokens_per_wh",
        "edp_js",
        "roofline_fraction",
    ):
        assert f"{k}_ci95" in out, k
    assert out["meter"] == "estimate" and out["estimated"] is True and out["repeats"] == 2
    assert out["workload"]["n_prompts"] == 2 and out["workload"]["max_new_tokens"] == 3
    assert out["device"]["bandwidth_source"].startswith(("measured:copy", "profile:"))


def test_bench_table(tiny_dir, capsys, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one prompt\nanother prompt\n")
    rc = main(
        [
            "bench",
            str(tiny_dir),
            "--prompts",
            str(prompts),
            "--max-new-tokens",
            "2",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--batch-size",
            "2",
            "--meter",
            "estimate",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "TTFT" in out and "ESTIMATE" in out and "roofline bandwidth" in out


def test_power_cap_without_nvml_gpu_is_one_line(tiny_dir, capsys):
    rc = main(["bench", str(tiny_dir), "--power-cap-w", "100000", "--meter", "estimate"])
    err = _one_line_error(capsys, rc)
    # on a machine without NVML: "no NVML GPU"; with one, 100 kW is outside every GPU's range
    assert "no NVML GPU" in err or "outside the allowed range" in err


def test_power_mode_off_jetson_is_one_line(tiny_dir, capsys):
    from greenllm.devices import detect_device

    if detect_device().profile.power_modes:
        pytest.skip("this machine is a Jetson board: power modes exist here")
    err = _one_line_error(capsys, main(["bench", str(tiny_dir), "--power-mode", "1"]))
    assert "Jetson" in err


@pytest.mark.parametrize(
    "args,match",
    [
        (["--power-cap-w", "50", "--power-mode", "1"], "exclusive"),
        (["--prompts", "EMPTY"], "no prompts"),
        (["--prompts", "/nonexistent/prompts.txt"], "does not exist"),
        (["--repeats", "0"], "repeats: 0 is outside 1..100000"),
        (["--repeats", "lots"], "--repeats: 'lots' is not a number or auto"),
        (["--meter", "estimat"], "did you mean 'estimate'"),
        (["--profile", "jetson-orin-nan"], "did you mean"),
    ],
)
def test_bench_bad_input_exit_2(tiny_dir, tmp_path, capsys, args, match):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    err = _one_line_error(capsys, main(["bench", str(tiny_dir), *args]))
    assert match in err


def test_bench_missing_model_exit_2(capsys):
    err = _one_line_error(capsys, main(["bench", "/nonexistent/model-dir", "--meter", "estimate"]))
    assert "does not exist" in err


def test_devices_json(capsys):
    assert main(["devices", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = {p["name"] for p in out["profiles"]}
    assert {"jetson-orin-nano-8gb", "raspberry-pi-5", "cpu"} <= names
    assert out["detected"]["profile"] in names
    assert main(["devices"]) == 0
    assert "detected:" in capsys.readouterr().out


def test_control_show_and_restore_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GREENLLM_CONTROL_DIR", str(tmp_path / "control"))
    j = tmp_path / "j.json"
    assert main(["control", "show", "--journal", str(j), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["journal"] is None and set(out) >= {"nvml", "jetson", "device"}
    assert main(["control", "restore", "--journal", str(j)]) == 0
    assert "nothing to restore" in capsys.readouterr().out
    assert main(["control", "restore"]) == 0
    assert "nothing to restore" in capsys.readouterr().out
    j.write_text(
        json.dumps(
            {
                "version": 2,
                "cap": "jetson",
                "device_id": "serial-x",
                "original": 0,
                "requested": 1,
                "pid": 1,
                "boot_id": "b",
                "params": {"profile": "jetson-orin-nano-8gb"},
            }
        )
    )
    j.chmod(0o644)
    assert main(["control", "show", "--journal", str(j)]) == 0
    assert "PENDING" in capsys.readouterr().out
