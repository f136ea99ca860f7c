"""``greenllm eval`` end to end on a tiny model directory; user errors exit 2 with one line."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from greenllm.cli import main  # noqa: E402
from greenllm.models import save  # noqa: E402
from greenllm.testing import tiny_model_and_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model, tok = tiny_model_and_tokenizer(0)
    return str(save(model, tmp_path_factory.mktemp("tiny") / "model", tok))


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_choice_json_keys(tiny_dir, capsys):
    rc, out, err = _run(capsys, "eval", tiny_dir, "--task", "choice", "--data",
                        "builtin:choice-sample", "--limit", "4", "--batch-size", "2", "--json")
    assert rc == 0, err
    rec = json.loads(out)
    assert rec["task"] == "choice" and rec["n"] == 4
    assert {"acc", "acc_norm", "acc_stderr", "duration_s"} <= set(rec)
    assert "perplexity" not in rec and rec["settings"]["batch_size"] == 2


def test_perplexity_json_keys(tiny_dir, tmp_path, capsys):
    p = tmp_path / "t.txt"
    p.write_text("Some words to score here.\n")
    rc, out, err = _run(capsys, "eval", tiny_dir, "--task", "perplexity", "--data", str(p),
                        "--set", "max_length=32", "--json")
    assert rc == 0, err
    rec = json.loads(out)
    assert {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"} <= set(rec)
    assert rec["settings"]["window_tokens"] == 32


def test_human_output(tiny_dir, capsys):
    rc, out, err = _run(capsys, "eval", tiny_dir, "--task", "squad", "--limit", "2",
                        "--set", "max_new_tokens=2", "--no-progress")
    assert rc == 0, err
    assert out.startswith("squad  n=2") and "f1" in out and "em" in out


@pytest.mark.parametrize("argv,needle", [
    (["--task", "hellaswg", "--data", "x"], "did you mean 'hellaswag'"),
    (["--task", "hellaswag"], "--data: hellaswag needs its data"),
    (["--task", "choice", "--data", "/nonexistent/file.jsonl"], "does not exist"),
    (["--task", "perplexity", "--shots", "2"], "shots: unknown key"),
    (["--task", "choice", "--set", "limt=3"], "did you mean 'limit'"),
    (["--task", "arc", "--data", "x", "--shots", "1"], "shots"),
])
def test_user_errors_exit_2_with_one_line(tiny_dir, capsys, argv, needle):
    rc, out, err = _run(capsys, "eval", tiny_dir, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_malformed_data_names_file_and_line(tiny_dir, tmp_path, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"context": "a", "choices": ["b", "c"], "label": 0}\nnot json\n')
    rc, _, err = _run(capsys, "eval", tiny_dir, "--task", "choice", "--data", str(p))
    assert rc == 2 and f"{p}:2: malformed JSON" in err and len(err.strip().splitlines()) == 1
