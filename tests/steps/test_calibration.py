"""Calibration data -> token windows: sources, seeding, errors."""

from __future__ import annotations

import pytest

from greenllm.errors import DataError
from greenllm.steps.calibration import calibration_batches, load_texts, tokenize_texts

TEXT = "\n".join(f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(200))


def test_file_source_gives_seeded_windows_of_the_token_stream(tmp_path, tiny):
    _, tok = tiny
    path = tmp_path / "calib.txt"
    path.write_text(TEXT, encoding="utf-8")
    a = calibration_batches(str(path), tok, samples=6, seq_len=40, seed=3)
    b = calibration_batches(path, tok, samples=6, seq_len=40, seed=3)
    c = calibration_batches(path, tok, samples=6, seq_len=40, seed=4)
    assert tuple(a.shape) == (6, 40)
    assert a.equal(b) and not a.equal(c)
    stream = tokenize_texts([TEXT], tok)
    assert stream == tok(TEXT, add_special_tokens=False)["input_ids"]  # chunking is lossless
    joined = ",".join(map(str, stream))
    for row in a.tolist():  # every window is a contiguous slice of the text's tokens
        assert ",".join(map(str, row)) in joined


def test_list_and_dataset_sources(tiny):
    datasets = pytest.importorskip("datasets")
    _, tok = tiny
    docs = [f"document {i} " * 20 for i in range(30)]
    x = calibration_batches(docs, tok, samples=4, seq_len=32, seed=0)
    assert tuple(x.shape) == (4, 32)
    ds = datasets.Dataset.from_dict({"content": docs, "id": list(range(30))})
    y = calibration_batches(ds, tok, samples=4, seq_len=32, seed=0)  # single string column
    assert tuple(y.shape) == (4, 32)
    assert set(load_texts(ds)) <= set(docs)
    ds2 = datasets.Dataset.from_dict({"a": docs, "b": docs})
    with pytest.raises(DataError, match="no 'text' column"):
        calibration_batches(ds2, tok, samples=2, seq_len=8)


def test_errors_name_the_source(tmp_path, tiny):
    _, tok = tiny
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match="nope.txt.*does not exist"):
        calibration_batches(str(missing), tok, samples=1, seq_len=8)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt.*is empty"):
        calibration_batches(empty, tok, samples=1, seq_len=8)
    with pytest.raises(DataError, match="list is empty"):
        calibration_batches(["", " "], tok, samples=1, seq_len=8)
    with pytest.raises(DataError, match="fewer than calibration.seq_len=512"):
        calibration_batches(["short text"], tok, samples=1, seq_len=512)
    with pytest.raises(DataError, match="no calibration data"):
        calibration_batches(None, tok, samples=1, seq_len=8)
    with pytest.raises(DataError, match="tokenizer"):
        calibration_batches(["some text here"], None, samples=1, seq_len=4)
    with pytest.raises(DataError, match="list of strings"):
        calibration_batches("x" * 5000, tok, samples=1, seq_len=4)  # text where a path belongs
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9 " * 10)
    with pytest.raises(DataError, match="latin1.txt.*not UTF-8"):
        calibration_batches(bad, tok, samples=1, seq_len=4)
