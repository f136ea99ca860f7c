"""``greenllm eval`` end to end on a tiny model directory; user errors exit 2 with one line."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")


def test_choice_json_keys(tiny_dir, capsys, run_cli):
    rc, out, err = run_cli(
        "eval",
        tiny_dir,
        "--task",
        "choice",
        "--data",
        "builtin:choice-sample",
        "--limit",
        "4",
        "--batch-size",
        "2",
        "--json",
        "--meter",
        "estimate",
    )
    assert rc == 0, err
    rec = json.loads(out)
    assert rec["task"] == "choice" and rec["n"] == 4
    assert {"acc", "acc_norm", "acc_stderr", "duration_s"} <= set(rec)
    assert "perplexity" not in rec and rec["settings"]["batch_size"] == 2
    # metered by default: the evaluation's own energy, per item
    c = rec["cost"]
    assert c["items"] == 4 and c["energy_j"] > 0 and c["tokens_processed"] > 0, c
    assert c["energy_per_item_j"] == c["energy_j"] / 4 and c["meter"]


def test_eval_meter_none_and_unknown_meter(tiny_dir, run_cli):
    rc, out, err = run_cli(
        "eval",
        tiny_dir,
        "--task",
        "choice",
        "--data",
        "builtin:choice-sample",
        "--limit",
        "2",
        "--json",
        "--meter",
        "none",
    )
    assert rc == 0, err
    assert "cost" not in json.loads(out)
    rc, out, err = run_cli(
        "eval",
        tiny_dir,
        "--task",
        "choice",
        "--data",
        "builtin:choice-sample",
        "--meter",
        "rapel",
    )
    assert rc == 2 and "did you mean 'rapl'" in err


def test_perplexity_json_keys(tiny_dir, tmp_path, capsys, run_cli):
    p = tmp_path / "t.txt"
    p.write_text("Some words to score here.\n")
    rc, out, err = run_cli(
        "eval",
        tiny_dir,
        "--task",
        "perplexity",
        "--data",
        str(p),
        "--set",
        "max_length=32",
        "--json",
    )
    assert rc == 0, err
    rec = json.loads(out)
    assert {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"} <= set(rec)
    assert rec["settings"]["window_tokens"] == 32


def test_human_output(tiny_dir, capsys, run_cli):
    rc, out, err = run_cli(
        "eval",
        tiny_dir,
        "--task",
        "squad",
        "--limit",
        "2",
        "--set",
        "max_new_tokens=2",
        "--no-progress",
    )
    assert rc == 0, err
    assert out.startswith("squad  n=2") and "f1" in out and "em" in out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--task", "hellaswg", "--data", "x"], "did you mean 'hellaswag'"),
        (["--task", "hellaswag"], "--data: hellaswag needs its data"),
        (["--task", "choice", "--data", "/nonexistent/file.jsonl"], "does not exist"),
        (["--task", "perplexity", "--shots", "2"], "shots: unknown key"),
        (["--task", "choice", "--set", "limt=3"], "did you mean 'limit'"),
        (["--task", "arc", "--data", "x", "--shots", "1"], "shots"),
    ],
)
def test_user_errors_exit_2_with_one_line(tiny_dir, capsys, argv, needle, run_cli):
    rc, out, err = run_cli("eval", tiny_dir, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_malformed_data_names_file_and_line(tiny_dir, tmp_path, capsys, run_cli):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"context": "a", "choices": ["b", "c"], "label": 0}\nnot json\n')
    rc, _, err = run_cli("eval", tiny_dir, "--task", "choice", "--data", str(p))
    assert rc == 2 and f"{p}:2: malformed JSON" in err and len(err.strip().splitlines()) == 1
