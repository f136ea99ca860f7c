"""Read a GGUF file's header: its metadata and tensor table, without touching tensor data.

gguf-py's ``GGUFReader`` builds a numpy view per metadata part, which takes seconds for a
49 152-token vocabulary; this reader walks the header with ``struct`` (GGUF v2/v3 layout:
magic, version, tensor count, metadata count, metadata key/type/value, then per tensor its
name, dimensions, type and offset). Little-endian files only (what llama.cpp writes).
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import Exported, gguf_module

_MAGIC = b"GGUF"
# GGUF metadata value types -> struct format (8 = string, 9 = array)
_SCALAR = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


class _Buf:
    def __init__(self, fh):
        self.fh = fh

    def read(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise ModelError("truncated GGUF header")
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        n = self.read("Q")
        return self.fh.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool = True) -> Any:
        if vtype in _SCALAR:
            return self.read(_SCALAR[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            sub, n = self.read("I"), self.read("Q")
            if sub in _SCALAR and not keep:
                self.fh.seek(n * struct.calcsize("<" + _SCALAR[sub]), os.SEEK_CUR)
                return n
            items = [self.value(sub) for _ in range(n)]
            return items if keep else n
        raise ModelError(f"unknown GGUF value type {vtype}")


def read_header(path: str | os.PathLike, keep_arrays: bool = False) -> tuple[dict, list[dict]]:
    """(metadata, tensors): metadata key -> value (arrays as their length unless
    ``keep_arrays``), tensors as dicts with name, shape, type (GGML type id), n_elements."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ModelError(f"{path}: cannot open ({exc.strerror})") from None
    with fh:
        buf = _Buf(fh)
        if fh.read(4) != _MAGIC:
            raise ModelError(f"{path}: not a GGUF file (no GGUF magic)")
        version = buf.read("I")
        if version < 2:
            raise ModelError(f"{path}: GGUF version {version} is too old (v2 or v3 expected)")
        n_tensors, n_kv = buf.read("Q"), buf.read("Q")
        meta: dict[str, Any] = {"GGUF.version": version}
        for _ in range(n_kv):
            key = buf.string()
            meta[key] = buf.value(buf.read("I"), keep=keep_arrays)
        tensors = []
        for _ in range(n_tensors):
            name = buf.string()
            dims = [buf.read("Q") for _ in range(buf.read("I"))]
            ttype = buf.read("I")
            buf.read("Q")  # offset
            n = 1
            for d in dims:
                n *= d
            tensors.append({"name": name, "shape": dims, "type": ttype, "n_elements": n})
    return meta, tensors


def inspect_gguf(path: str | os.PathLike) -> Exported:
    """Bytes, effective bits per weight and the per-tensor type histogram of any GGUF file,
    read from the file itself."""
    gguf = gguf_module()
    path = Path(path)
    meta, tensors = read_header(path)
    types: Counter[str] = Counter()
    type_bytes: Counter[str] = Counter()
    n = 0
    for t in tensors:
        qt = gguf.GGMLQuantizationType(t["type"])
        block, size = gguf.GGML_QUANT_SIZES[qt]
        types[qt.name] += 1
        type_bytes[qt.name] += t["n_elements"] // block * size
        n += t["n_elements"]
    label = ""
    if "general.file_type" in meta:
        try:
            label = gguf.LlamaFileType(int(meta["general.file_type"])).name
        except ValueError:
            label = str(meta["general.file_type"])
    data_bytes = sum(type_bytes.values())
    return Exported(
        path=str(path),
        format="gguf",
        type=label,
        size_bytes=path.stat().st_size,
        n_weights=n,
        bits_per_weight=8.0 * data_bytes / n if n else 0.0,
        types=dict(types),
        type_bytes=dict(type_bytes),
    )
