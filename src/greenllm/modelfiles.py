"""Checks on model files and devices made before a model is loaded or written.

- ``check_safetensors(dir)``: every ``*.safetensors`` file has a well-formed header whose
  tensors lie inside the file (stdlib only: a truncated or corrupted download is one
  ModelError naming the file, not a SafetensorError traceback from deep inside a loader).
- ``foreign_files(dir)``: files in a directory that are not part of a saved checkpoint;
  ``--overwrite`` replaces a checkpoint, never unrelated files (it refuses instead).
- ``check_torch_device(device)``: the torch device exists here (``cuda`` with a CPU-only
  torch, ``cuda:3`` on a one-GPU machine -> one UnsupportedError); torch imported lazily.
"""

from __future__ import annotations

import fnmatch
import json
import struct
from pathlib import Path

from .errors import ConfigError, ModelError, UnsupportedError
from .limits import excerpt

MAX_HEADER_BYTES = 100 * 1024 * 1024

# what save_pretrained / tokenizer.save_pretrained / greenllm.save write
CHECKPOINT_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.bin.index.json",
    "config.json",
    "generation_config.json",
    "greenllm.json",
    "greenllm_provenance.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "*.model",
    "*.tiktoken",
)


def check_safetensors(directory: str | Path) -> None:
    for f in sorted(Path(directory).glob("*.safetensors")):
        why = _safetensors_problem(f)
        if why:
            raise ModelError(
                f"{f}: corrupted or truncated safetensors file ({why}); "
                "download or save the model again"
            )


def _safetensors_problem(path: Path) -> str | None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a header"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, MAX_HEADER_BYTES):
                return f"header length {n} does not fit a {size}-byte file"
            raw = fh.read(n)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "the header is not JSON"
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    data_bytes = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offs = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) for o in offs)
            or not 0 <= offs[0] <= offs[1]
        ):
            return f"tensor {excerpt(name)} has no valid data_offsets"
        if offs[1] > data_bytes:
            return f"tensor {excerpt(name)} ends at byte {offs[1]} of {data_bytes} data bytes"
    return None


def foreign_files(directory: str | Path) -> list[str]:
    """Entries of ``directory`` that a saved checkpoint does not consist of (sorted)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        if p.is_dir() or not any(fnmatch.fnmatch(p.name, pat) for pat in CHECKPOINT_PATTERNS):
            out.append(p.name + ("/" if p.is_dir() else ""))
    return sorted(out)


def check_overwrite(directory: str | Path, what: str = "--out") -> None:
    """``--overwrite`` may replace a checkpoint in ``directory``, not other files."""
    foreign = foreign_files(directory)
    if foreign:
        shown = ", ".join(excerpt(f) for f in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ModelError(
            f"{what} {str(directory)!r} holds files that are not part of a saved "
            f"model ({shown}); --overwrite replaces a saved model only, so "
            "choose an empty or new directory"
        )


def check_torch_device(device: str) -> None:
    if not isinstance(device, str) or not device.strip():
        raise ConfigError(f"device: expected cpu, cuda or cuda:N, got {excerpt(device)}")
    if device == "cpu":
        return
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch build has no CUDA support"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise UnsupportedError(
                f"device {device!r}: {why} (torch {torch.__version__}); "
                "use --device cpu or install a CUDA build of torch"
            )
        if index:
            if not index.isdigit():
                raise ConfigError(f"device: {excerpt(device)} is not cuda:N")
            if int(index) >= torch.cuda.device_count():
                raise UnsupportedError(
                    f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here"
                )
        return
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UnsupportedError(f"device {device!r}: Apple MPS is not available here")
        return
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"device: {excerpt(device)} is not a torch device; use cpu or cuda:N"
        ) from None
