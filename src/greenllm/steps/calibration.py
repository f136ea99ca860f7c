"""Calibration data: text in, token windows out.

``ctx.calibration`` (see ``steps.base.StepContext``) is one of

- a path to a UTF-8 text file (``str`` or ``pathlib.Path``),
- a list/tuple of strings (each one a document),
- a ``datasets`` dataset with a ``text`` column (or exactly one string column).

``calibration_batches(source, tokenizer, samples=, seq_len=, seed=)`` tokenizes the text (in
newline-aligned chunks, so no single tokenizer call sees a huge string), concatenates the ids
and draws ``samples`` windows of ``seq_len`` tokens at seeded random offsets, as the Wanda and
SparseGPT papers do with C4. Missing files and empty or too-short data raise ``DataError``
naming the source and the fix. torch is imported inside functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError

CHUNK_CHARS = 4000  # characters per tokenizer call (split at newlines)
CHARS_PER_TOKEN_BUDGET = 8  # rows drawn from a dataset/list: ~8 chars per needed token


def describe_source(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (list, tuple)):
        return f"list of {len(source)} strings"
    return type(source).__name__


def _read_file(path: Path) -> str:
    try:
        exists = path.exists()
    except OSError:  # e.g. a whole text passed where a path belongs: name too long
        raise DataError(
            f"calibration: {str(path)[:40]!r}... is not a readable file path; "
            "to calibrate on text itself pass a list of strings"
        ) from None
    if not exists:
        raise DataError(
            f"calibration file {str(path)!r} does not exist; give a UTF-8 text "
            "file, a list of strings or a datasets dataset"
        )
    if not path.is_file():
        raise DataError(f"calibration file {str(path)!r} is not a regular file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"calibration file {str(path)!r} is not UTF-8 text "
            f"(byte {exc.start}); convert it to UTF-8"
        ) from None


def _dataset_texts(ds: Any, budget_chars: int, seed: int) -> list[str]:
    import random

    from ..builtin_data import dataset_text_column

    col = dataset_text_column(ds, "calibration dataset")
    n = len(ds)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    texts, total = [], 0
    # Take rows in seeded random order until the character budget is met.
    for start in range(0, n, 256):
        rows = sorted(order[start : start + 256])
        for t in ds.select(rows)[col] if hasattr(ds, "select") else [ds[i][col] for i in rows]:
            if isinstance(t, str) and t.strip():
                texts.append(t)
                total += len(t)
        if total >= budget_chars:
            break
    return texts


def load_texts(source: Any, *, budget_chars: int = 1 << 62, seed: int = 0) -> list[str]:
    """The documents of a calibration source (a file is one document)."""
    import random

    if source is None:
        raise DataError(
            "calibration: no calibration data given; pass calibration= a text "
            "file, a list of strings or a datasets dataset (CLI: --calibration FILE)"
        )
    from ..builtin_data import is_dataset, text_source

    if isinstance(source, (str, Path, list, tuple)) or is_dataset(source):
        source = text_source(source, "calibration")
    if isinstance(source, Path):
        text = _read_file(source)
        if not text.strip():
            raise DataError(f"calibration file {str(source)!r} is empty; give a file with text")
        return [text]
    if isinstance(source, (list, tuple)):
        bad = [i for i, t in enumerate(source) if not isinstance(t, str)]
        if bad:
            raise DataError(
                f"calibration list item {bad[0]} is a {type(source[bad[0]]).__name__}, not a string"
            )
        docs = [t for t in source if t.strip()]
        if not docs:
            raise DataError(
                "calibration list is empty (or only blank strings); give at least one text"
            )
        order = list(range(len(docs)))
        random.Random(seed).shuffle(order)
        out, total = [], 0
        for i in order:
            out.append(docs[i])
            total += len(docs[i])
            if total >= budget_chars:
                break
        return out
    if hasattr(source, "column_names") and hasattr(source, "__len__"):
        texts = _dataset_texts(source, budget_chars, seed)
        if not texts:
            raise DataError("calibration dataset is empty (no non-blank text rows)")
        return texts
    raise DataError(
        f"calibration: unsupported source type {type(source).__name__}; give a "
        "text file path, a list of strings or a datasets dataset"
    )


def _chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Split at newlines into pieces of about ``size`` chars; ''.join(pieces) == text."""
    pieces, start, n = [], 0, len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            nl = text.rfind("\n", start, end)
            if nl > start:
                end = nl + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def tokenize_texts(texts: list[str], tokenizer) -> list[int]:
    """Token ids of the documents, joined by the EOS token where the tokenizer has one."""
    if tokenizer is None:
        raise DataError(
            "calibration: a tokenizer is needed to turn calibration text into "
            "tokens; pass tokenizer= to compress()"
        )
    sep = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for d, doc in enumerate(texts):
        if d and sep is not None:
            ids.append(int(sep))
        pieces = _chunks(doc)
        enc = tokenizer(pieces, add_special_tokens=False)["input_ids"]
        for row in enc:
            ids.extend(row)
    return ids


def calibration_batches(source: Any, tokenizer, *, samples: int, seq_len: int, seed: int = 0):
    """``samples`` windows of ``seq_len`` tokens as a LongTensor ``[samples, seq_len]``.

    Windows start at seeded random offsets into the concatenated token stream (they may
    overlap when the text is short). Fewer than ``seq_len`` tokens in total -> DataError.
    """
    import torch

    if samples < 1 or seq_len < 1:
        raise DataError(f"calibration: samples ({samples}) and seq_len ({seq_len}) must be >= 1")
    texts = load_texts(source, budget_chars=CHARS_PER_TOKEN_BUDGET * samples * seq_len, seed=seed)
    ids = tokenize_texts(texts, tokenizer)
    if len(ids) < seq_len:
        raise DataError(
            f"calibration data {describe_source(source)!r} has {len(ids)} tokens, "
            f"fewer than calibration.seq_len={seq_len}; give more text or lower "
            "calibration.seq_len"
        )
    stream = torch.tensor(ids, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, len(ids) - seq_len + 1, (samples,), generator=gen)
    offsets = starts[:, None] + torch.arange(seq_len)[None, :]
    return stream[offsets]
