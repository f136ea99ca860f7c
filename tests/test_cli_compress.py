"""``greenllm compress`` end to end on a tiny model directory."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from greenllm.models import load_model  # noqa: E402


def test_quantize_and_save_json(tiny_dir, tmp_path, capsys, run_cli):
    out_dir = tmp_path / "q8"
    rc, out, err = run_cli(
        "compress",
        tiny_dir,
        "--step",
        "quantize:method=int8_weight",
        "--out",
        str(out_dir),
        "--json",
    )
    assert rc == 0, err
    rec = json.loads(out)
    step = rec["steps"][0]
    assert step["step"] == "quantize" and step["method"] == "int8_weight"
    assert step["size_bytes_after"] < step["size_bytes_before"]
    assert step["duration_s"] >= 0 and step["stats"]["quantized_modules"] == 14
    assert rec["saved_to"] == str(out_dir) and rec["not_saved_reason"] is None
    model, _ = load_model(str(out_dir))
    assert type(model.model.layers[0].mlp.up_proj).__name__ == "Int8WeightLinear"


def test_two_steps_in_order_table_output(tiny_dir, tmp_path, capsys, run_cli):
    rc, out, err = run_cli(
        "compress",
        tiny_dir,
        "--step",
        "quantize:method=bf16,targets=[mlp.*]",
        "--step",
        "quantize:method=int8_weight,targets=[self_attn.*]",
        "--out",
        str(tmp_path / "mixed"),
    )
    assert rc == 0, err
    assert "bf16" in out and "int8_weight" in out and "saved to" in out
    assert "size_bytes" in out
    model, _ = load_model(str(tmp_path / "mixed"))
    layer = model.model.layers[1]
    assert type(layer.mlp.gate_proj).__name__ == "CastLinear"
    assert type(layer.self_attn.q_proj).__name__ == "Int8WeightLinear"


def test_non_reloadable_with_out_refused_before_work(tiny_dir, tmp_path, capsys, run_cli):
    rc, out, err = run_cli(
        "compress",
        tiny_dir,
        "--step",
        "quantize:method=dynamic_int8",
        "--out",
        str(tmp_path / "d8"),
    )
    assert rc == 2
    assert err.count("\n") == 1 and "does not reload" in err and "drop --out" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_non_reloadable_without_out_runs_and_says_why(tiny_dir, capsys, run_cli):
    rc, out, err = run_cli(
        "compress", tiny_dir, "--step", "quantize:method=dynamic_int8,per_channel=false"
    )
    assert rc == 0, err
    assert "not saved" in out and "does not reload" in out and "per_channel=False" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--step", "quantize:method=int8_weigth"], "did you mean 'int8_weight'"),
        (["--step", "quantise:method=bf16"], "did you mean 'quantize'"),
        (["--step", "quantize:method"], "is not key=value"),
        ([], "at least one step"),
        (
            ["--step", "quantize:method=bf16", "--calibration", "/nonexistent/cal.txt"],
            "--calibration",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny_dir, capsys, argv, needle, run_cli):
    rc, out, err = run_cli("compress", tiny_dir, *argv)
    assert rc == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_model_dir_is_exit_2(tmp_path, capsys, run_cli):
    rc, out, err = run_cli("compress", str(tmp_path / "nope"), "--step", "quantize:method=bf16")
    assert rc == 2 and "does not exist" in err


def test_existing_out_needs_overwrite(tiny_dir, tmp_path, capsys, run_cli):
    target = tmp_path / "o"
    target.mkdir()
    (target / "x").write_text("keep")
    rc, out, err = run_cli(
        "compress", tiny_dir, "--step", "quantize:method=bf16", "--out", str(target)
    )
    assert rc == 2 and "--overwrite" in err and (target / "x").exists()
    # --overwrite replaces a saved model, never unrelated files (issue 17)
    rc, out, err = run_cli(
        "compress", tiny_dir, "--step", "quantize:method=bf16", "--out", str(target), "--overwrite"
    )
    assert rc == 2 and "not part of a saved model" in err and "'x'" in err
    assert (target / "x").read_text() == "keep" and len(err.strip().splitlines()) == 1
    (target / "x").unlink()
    for _ in range(2):  # into an empty directory, then over the checkpoint just saved
        rc, out, err = run_cli(
            "compress",
            tiny_dir,
            "--step",
            "quantize:method=bf16",
            "--out",
            str(target),
            "--overwrite",
        )
        assert rc == 0, err
        assert (target / "greenllm.json").exists()
