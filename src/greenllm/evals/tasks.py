"""Multiple-choice task adapters: read files as their projects publish them and turn each
document into the (context, continuation) requests lm-eval v0.4.x builds for it.

* ``hellaswag``: the official JSONL (``activity_label``, ``ctx_a``, ``ctx_b``, ``endings``,
  ``label``) with lm-eval's ``preprocess``; or the derived 6-lines-per-item text format
  (llama.cpp's ``hellaswag_val_full.txt``: query, gold label, four endings), used as it is.
* ``mmlu``: the released CSV folders (``dev/``, ``val/``, ``test/``, ``<subject>_<split>.csv``,
  no header) or one CSV; lm-eval's prompt; k-shot from ``dev`` (first k rows). Cells are kept
  as text, so the answer "None" stays the string "None".
* ``winogrande``: JSONL (+ ``<stem>-labels.lst``); partial scoring: one context per option
  (sentence up to the blank with the option), the same continuation (text after the blank).
* ``arc``: the ARC JSONL (``question.stem``/``question.choices``) or the flat HF layout.
* ``jsonl``: generic ``{"context", "choices", "label"}``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class ChoiceDoc:
    """One question: ``contexts[i]`` + ``continuations[i]`` is choice i's request;
    ``norm_texts[i]`` is what lm-eval measures for acc_norm (len in characters)."""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    label: int
    norm_texts: tuple[str, ...]
    source: str = ""


def _doc(contexts, continuations, label, norm_texts, where: str) -> ChoiceDoc:
    n = len(continuations)
    if n < 2:
        raise DataError(f"{where}: an item needs at least 2 choices, got {n}")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < n:
        raise DataError(
            f"{where}: label {label!r} is out of range for {n} choices "
            f"(expected an integer 0..{n - 1})"
        )
    return ChoiceDoc(tuple(contexts), tuple(continuations), label, tuple(norm_texts), where)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; DataError names file and line."""
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: malformed JSON ({exc.msg}); each line must be "
                    f"one JSON object"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def _field(obj: dict, name: str, where: str, kind=str):
    if name not in obj:
        raise DataError(f"{where}: missing field {name!r}")
    value = obj[name]
    if kind is not None and not isinstance(value, kind):
        raise DataError(
            f"{where}: field {name!r} must be a {kind.__name__}, got {type(value).__name__}"
        )
    return value


# --- hellaswag ----------------------------------------------------------------------------


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag ``preprocess`` (WikiHow bracket artefacts removed)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def load_hellaswag(path: Path) -> Iterator[ChoiceDoc]:
    with open(path, encoding="utf-8") as fh:
        head = fh.read(1).lstrip()
    if head == "{" or path.suffix == ".jsonl":
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            endings = _field(obj, "endings", where, list)
            ctx = _field(obj, "ctx_a", where) + " " + _field(obj, "ctx_b", where).capitalize()
            query = hellaswag_preprocess(_field(obj, "activity_label", where) + ": " + ctx)
            choices = [hellaswag_preprocess(str(e)) for e in endings]
            label = obj.get("label")
            try:
                label = int(label)
            except (TypeError, ValueError):
                raise DataError(
                    f"{where}: label {label!r} is not an integer (the test split "
                    f"has no labels; use the validation file)"
                ) from None
            yield _doc([query] * len(choices), [" " + c for c in choices], label, choices, where)
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) % 6:
        raise DataError(
            f"{path}: the hellaswag text format has 6 lines per item (query, label, "
            f"4 endings); {len(lines)} lines is not a multiple of 6"
        )
    for i in range(0, len(lines), 6):
        where = f"{path}:{i + 2}"
        try:
            label = int(lines[i + 1].strip())
        except ValueError:
            raise DataError(f"{where}: expected the gold label 0-3, got {lines[i + 1]!r}") from None
        choices = lines[i + 2 : i + 6]
        yield _doc([lines[i]] * 4, [" " + c for c in choices], label, choices, f"{path}:{i + 1}")


# --- mmlu ---------------------------------------------------------------------------------


def _read_mmlu_csv(path: Path) -> list[tuple[int, list[str]]]:
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row:
                continue
            if len(row) != 6:
                raise DataError(
                    f"{path}:{lineno}: expected 6 columns (question, A, B, C, D, "
                    f"answer), got {len(row)}"
                )
            if row[5].strip() not in LETTERS:
                raise DataError(
                    f"{path}:{lineno}: answer {row[5]!r} is out of range; expected "
                    f"one of A, B, C, D"
                )
            rows.append((lineno, row))
    return rows


def mmlu_subject(path: Path) -> str:
    stem = path.stem
    for split in ("_test", "_val", "_dev"):
        if stem.endswith(split):
            return stem[: -len(split)]
    return stem


def mmlu_question(row: list[str]) -> str:
    """lm-eval's doc_to_text: question.strip(), lettered choices, "Answer:"."""
    return row[0].strip() + "".join(f"\n{L}. {c}" for L, c in zip(LETTERS, row[1:5])) + "\nAnswer:"


def load_mmlu(
    path: Path, split: str = "test", shots: int = 0, subjects: list[str] | None = None
) -> Iterator[ChoiceDoc]:
    if path.is_dir():
        folder = path / split
        if not folder.is_dir():
            raise DataError(
                f"{path}: no {split}/ folder; give the MMLU data folder holding "
                f"dev/, val/ and test/ (or one <subject>_{split}.csv)"
            )
        files = sorted(folder.glob(f"*_{split}.csv"))
        dev_dir = path / "dev"
    else:
        files, dev_dir = [path], path.parent.parent / "dev"
    if subjects:
        known = {mmlu_subject(f) for f in files}
        bad = [s for s in subjects if s not in known]
        if bad:
            raise ConfigError(f"subjects: unknown MMLU subject {bad[0]!r} in {path}")
        files = [f for f in files if mmlu_subject(f) in subjects]
    for f in files:
        subject = mmlu_subject(f)
        prefix = (
            "The following are multiple choice questions (with answers) about "
            f"{subject.replace('_', ' ')}.\n\n"
        )
        if shots:
            dev = dev_dir / f"{subject}_dev.csv"
            if not dev.exists():
                raise DataError(
                    f"{dev}: missing; {shots}-shot MMLU takes its examples from the "
                    f"dev split (first {shots} rows)"
                )
            dev_rows = _read_mmlu_csv(dev)
            if len(dev_rows) < shots:
                raise DataError(f"{dev}: has {len(dev_rows)} rows, fewer than shots={shots}")
            for _, row in dev_rows[:shots]:
                prefix += mmlu_question(row) + " " + row[5].strip() + "\n\n"
        for lineno, row in _read_mmlu_csv(f):
            ctx = prefix + mmlu_question(row)
            yield _doc(
                [ctx] * 4,
                [" " + L for L in LETTERS],
                LETTERS.index(row[5].strip()),
                LETTERS,
                f"{f}:{lineno}",
            )


# --- winogrande ---------------------------------------------------------------------------


def _winogrande_labels(path: Path, labels: str | None) -> list[str] | None:
    lbl = Path(labels) if labels else path.with_name(path.stem + "-labels.lst")
    if not lbl.exists():
        if labels:
            raise DataError(f"labels: {labels} does not exist")
        return None
    return [ln.strip() for ln in lbl.read_text(encoding="utf-8").splitlines() if ln.strip()]


def load_winogrande(path: Path, labels: str | None = None) -> Iterator[ChoiceDoc]:
    gold = _winogrande_labels(path, labels)
    for n, (lineno, obj) in enumerate(read_jsonl(path)):
        where = f"{path}:{lineno}"
        sentence = _field(obj, "sentence", where)
        options = [_field(obj, "option1", where), _field(obj, "option2", where)]
        if "_" not in sentence:
            raise DataError(f"{where}: the sentence has no '_' blank to fill")
        answer = obj.get("answer")
        if gold is not None:
            if n >= len(gold):
                raise DataError(
                    f"{labels or path.stem + '-labels.lst'}: has {len(gold)} labels, "
                    f"fewer than the items in {path}"
                )
            answer = gold[n]
        if str(answer) not in ("1", "2"):
            raise DataError(
                f'{where}: answer {answer!r} is out of range; expected "1" or '
                f'"2" (or a labels file)'
            )
        idx = sentence.index("_")
        contexts = [sentence[:idx] + opt for opt in options]
        target = " " + sentence[idx + 1 :].strip()
        yield _doc(contexts, [target, target], int(answer) - 1, contexts, where)


# --- arc and generic ----------------------------------------------------------------------


def load_arc(path: Path) -> Iterator[ChoiceDoc]:
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        q = _field(obj, "question", where, None)
        if isinstance(q, dict):
            stem = _field(q, "stem", where)
            texts = [_field(c, "text", where) for c in _field(q, "choices", where, list)]
            labels = [_field(c, "label", where) for c in q["choices"]]
        else:
            stem = str(q)
            ch = _field(obj, "choices", where, dict)
            texts, labels = list(ch.get("text", [])), list(ch.get("label", []))
        key = _field(obj, "answerKey", where)
        if key not in labels:
            raise DataError(f"{where}: answerKey {key!r} is out of range; not one of {labels}")
        ctx = f"Question: {stem}\nAnswer:"
        yield _doc([ctx] * len(texts), [" " + t for t in texts], labels.index(key), texts, where)


def load_generic(path: Path, target_delimiter: str = " ") -> Iterator[ChoiceDoc]:
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        ctx = _field(obj, "context", where)
        choices = _field(obj, "choices", where, list)
        if not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: every choice must be a string")
        label = _field(obj, "label", where, None)
        yield _doc(
            [ctx] * len(choices), [target_delimiter + c for c in choices], label, choices, where
        )


def load_docs(task: str, path: Path, **kwargs: Any) -> Iterator[ChoiceDoc]:
    """The items of ``task`` in ``path``; a file that is not UTF-8 is one DataError."""
    try:
        yield from _load_docs(task, path, **kwargs)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (invalid byte at position {exc.start} of a "
            "read); save the data set as UTF-8"
        ) from None


def _load_docs(
    task: str,
    path: Path,
    *,
    shots: int = 0,
    split: str = "test",
    subjects: list[str] | None = None,
    labels: str | None = None,
    target_delimiter: str = " ",
) -> Iterator[ChoiceDoc]:
    if path.is_dir() and task != "mmlu":
        raise DataError(f"data: {path} is a folder; {task} reads one file")
    if task == "hellaswag":
        return load_hellaswag(path)
    if task == "mmlu":
        return load_mmlu(path, split, shots, subjects)
    if task == "winogrande":
        return load_winogrande(path, labels)
    if task == "arc":
        return load_arc(path)
    return load_generic(path, target_delimiter)


def first(docs: Iterator[Any], limit: int | None) -> list[Any]:
    out = []
    for d in docs:
        if limit is not None and len(out) >= limit:
            break
        out.append(d)
    return out
