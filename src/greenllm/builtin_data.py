"""The small data sets greenllm ships (written for greenllm; see data/PROVENANCE.md).

A text source is ``builtin:NAME``, a path, a list of strings or a ``datasets`` dataset; this
module is the one place that resolves them. ``resolve_data("builtin:wiki-sample")`` -> the
file's path (any other string must be an existing path); ``check_builtin`` checks a
``builtin:`` name without touching the filesystem (the recipe checker); ``text_source`` turns
any source into a path, a list or a dataset; ``dataset_text_column`` picks a dataset's text
column. Evals, calibration, training data, bench prompts, the runner and the recipe checker all
resolve here, so no layer reaches into another for it. Stdlib only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DataError
from .registry import did_you_mean

DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN_PREFIX = "builtin:"
BUILTINS = {
    "wiki-sample": "wiki-sample.txt",  # original English prose (perplexity, calibration)
    "choice-sample": "choice-sample.jsonl",  # multiple-choice items, generic JSONL
    "squad-sample": "squad-sample.json",  # SQuAD v1.1-format passages and questions
    "prompts": "prompts.txt",  # inference prompts, one per line
}


def check_builtin(source: str, field: str = "data", error: type = DataError) -> str:
    """The NAME of ``builtin:NAME``; ``error`` (DataError by default) with a did-you-mean for an
    unknown name."""
    name = source[len(BUILTIN_PREFIX) :]
    if name not in BUILTINS:
        hint = did_you_mean(name, sorted(BUILTINS))
        raise error(
            f"{field}: unknown builtin data {name!r}"
            + (f"; did you mean 'builtin:{hint}'?" if hint else "")
            + f" (builtins: {', '.join(sorted(BUILTINS))})"
        )
    return name


def is_dataset(source: Any) -> bool:
    """A ``datasets`` dataset (duck-typed: it has column names)."""
    return hasattr(source, "column_names") and not isinstance(source, (str, bytes))


def text_source(source: Any, field: str = "data") -> Any:
    """``builtin:NAME`` -> its path; a str/Path -> a Path (not checked: readers name a missing
    file themselves); a list/tuple or a dataset unchanged; anything else a DataError."""
    if isinstance(source, str) and source.startswith(BUILTIN_PREFIX):
        return resolve_data(source, field)
    if isinstance(source, (str, Path)):
        return Path(source).expanduser()
    if isinstance(source, (list, tuple)) or is_dataset(source):
        return source
    raise DataError(
        f"{field}: expected builtin:NAME, a file path, a list of strings or a "
        f"datasets dataset, got {type(source).__name__}"
    )


def dataset_text_column(ds: Any, field: str = "data") -> str:
    """``text``, else the only string column of a dataset (DataError naming the columns)."""
    columns = list(getattr(ds, "column_names", None) or [])
    if "text" in columns:
        return "text"
    features = getattr(ds, "features", {}) or {}
    strings = [
        c for c in columns if getattr(features.get(c), "dtype", None) in ("string", "large_string")
    ]
    if len(strings) != 1:
        raise DataError(
            f"{field}: the dataset has no 'text' column (columns: "
            f"{', '.join(columns) or 'none'}); rename the text column to "
            "'text', e.g. ds.rename_column('content', 'text')"
        )
    return strings[0]


def resolve_data(data: str, field: str = "data") -> Path:
    """A path or ``builtin:<name>`` -> an existing path (DataError naming the fix otherwise)."""
    if not isinstance(data, str) or not data:
        raise DataError(
            f"{field}: give a file/folder path or builtin:<name> "
            f"(builtins: {', '.join(sorted(BUILTINS))})"
        )
    if data.startswith(BUILTIN_PREFIX):
        return DATA_DIR / BUILTINS[check_builtin(data, field)]
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(
            f"{field}: {data} does not exist; give an existing file or folder, or builtin:<name>"
        )
    return path
