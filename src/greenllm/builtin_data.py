"""The small data sets greenllm ships (written for greenllm; see data/PROVENANCE.md).

``resolve_data("builtin:wiki-sample")`` -> the file's path; any other string must be an existing
path. Evals, calibration, the runner and the recipe checker all resolve ``builtin:`` here, so
no layer reaches into another for it. Stdlib only.
"""
from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .registry import did_you_mean

DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN_PREFIX = "builtin:"
BUILTINS = {
    "wiki-sample": "wiki-sample.txt",        # original English prose (perplexity, calibration)
    "choice-sample": "choice-sample.jsonl",  # multiple-choice items, generic JSONL
    "squad-sample": "squad-sample.json",     # SQuAD v1.1-format passages and questions
    "prompts": "prompts.txt",                # inference prompts, one per line
}


def resolve_data(data: str, field: str = "data") -> Path:
    """A path or ``builtin:<name>`` -> an existing path (DataError naming the fix otherwise)."""
    if not isinstance(data, str) or not data:
        raise DataError(f"{field}: give a file/folder path or builtin:<name> "
                        f"(builtins: {', '.join(sorted(BUILTINS))})")
    if data.startswith(BUILTIN_PREFIX):
        name = data[len(BUILTIN_PREFIX):]
        if name not in BUILTINS:
            hint = did_you_mean(name, list(BUILTINS))
            raise DataError(f"{field}: unknown builtin data {name!r}"
                            + (f"; did you mean 'builtin:{hint}'?" if hint else "")
                            + f" (builtins: {', '.join(sorted(BUILTINS))})")
        return DATA_DIR / BUILTINS[name]
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"{field}: {data} does not exist; give an existing file or folder, "
                        f"or builtin:<name>")
    return path
