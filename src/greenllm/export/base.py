"""What every exporter shares: reading a model's weights as they are stored, and the record of
one exported file (``Exported``: bytes, effective bits per weight, per-tensor type histogram).

A linear layer's weight is read from what the layer holds: a float ``nn.Linear`` weight, the
int8 values and per-row scales of greenllm's ``int8_weight`` (``Int8WeightLinear``), or, for any
other quantized layer that offers it, ``dequantized_weight()``. Torch inside functions only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnsupportedError


@dataclass
class Exported:
    """One exported file. ``types`` is the per-tensor type histogram (type -> tensor count),
    ``type_bytes`` the bytes stored per type; ``bits_per_weight`` counts every tensor's data
    bytes over every element (norms and embeddings included: the file's effective bits per
    weight, not its label)."""

    path: str
    format: str  # gguf | onnx
    type: str  # f16 | q8_0 | q4_0 | fp32 | int8
    size_bytes: int
    n_weights: int
    bits_per_weight: float
    types: dict[str, int] = field(default_factory=dict)
    type_bytes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "type": self.type,
            "size_bytes": self.size_bytes,
            "n_weights": self.n_weights,
            "bits_per_weight": self.bits_per_weight,
            "types": dict(self.types),
            "type_bytes": dict(self.type_bytes),
            "notes": list(self.notes),
            "extra_files": list(self.extra_files),
        }

    def summary(self) -> str:
        hist = ", ".join(f"{k} x{v}" for k, v in sorted(self.types.items()))
        return (
            f"{self.path}: {self.format} {self.type}, {self.size_bytes} bytes, "
            f"{self.bits_per_weight:.3f} bits/weight over {self.n_weights} weights; "
            f"tensors: {hist}"
        )


@dataclass
class LinearWeight:
    """A linear layer's weight as stored: ``float`` [out, in] float32 always (what the layer
    computes with), and ``int8`` = (values int8 [out, in], per-row scale float32 [out]) when
    the layer stores symmetric per-row int8 (``int8_weight``)."""

    float: Any
    int8: tuple[Any, Any] | None = None
    bias: Any = None
    format: str = "float32"
    # 4-bit grid of a GPTQ / RTN ``Int4Linear``: (codes uint8 [out, in], scales float32
    # [out, groups], zeros [out, groups], group size); weight = scale * (code - zero)
    int4: tuple[Any, Any, Any, int] | None = None


def linear_weight(module: Any, where: str) -> LinearWeight:
    """Read one linear layer's weight (see the module doc); refuses what it cannot read."""
    import torch

    bias = getattr(module, "bias", None)
    bias_np = None if bias is None else bias.detach().float().cpu().numpy()
    fmt = getattr(module, "greenllm_weight_format", None)
    if fmt == "int8_weight":
        q = module.weight_int8.detach().cpu()
        s = module.weight_scale.detach().float().cpu()
        w = (q.float() * s[:, None]).numpy()
        return LinearWeight(w, (q.numpy(), s.numpy()), bias_np, "int8_weight")
    if hasattr(module, "dequantized_weight"):
        w = module.dequantized_weight().detach().float().cpu().numpy()
        int4 = _int4_grid(module, w)
        return LinearWeight(w, None, bias_np, str(fmt or type(module).__name__), int4)
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and type(weight) in (torch.Tensor, torch.nn.Parameter):
        if weight.dtype.is_floating_point:
            return LinearWeight(
                weight.detach().float().cpu().numpy(),
                None,
                bias_np,
                str(weight.dtype).replace("torch.", ""),
            )
    raise UnsupportedError(
        f"export: cannot read the weight of {where} ({type(module).__name__}"
        f"{', ' + type(weight).__name__ if weight is not None else ''}); export supports "
        f"float layers, int8_weight and layers with dequantized_weight(). Export before "
        f"this quantize step, or quantize with int8_weight"
    )


def _int4_grid(module: Any, w: Any) -> tuple[Any, Any, Any, int] | None:
    """The integer grid of a 4-bit layer that stores per-group ``scales`` / ``zeros`` over
    contiguous ``group_size`` input columns (greenllm's ``Int4Linear``): codes recovered as
    ``round(w / scale + zero)``, which is exact for weights on the grid."""
    import numpy as np

    group = getattr(module, "group_size", None)
    scales = getattr(module, "weight_scale", None)  # the pack-quantized layout (Int4Linear)
    zeros = module.zeros() if callable(getattr(module, "zeros", None)) else None
    if scales is None:  # a layer that keeps plain ``scales`` / ``zeros`` tensors
        scales, zeros = getattr(module, "scales", None), getattr(module, "zeros", None)
    if not isinstance(group, int) or scales is None or zeros is None or group <= 0:
        return None
    s = scales.detach().float().cpu().numpy()
    z = zeros.detach().float().cpu().numpy()
    if s.shape != (w.shape[0], w.shape[1] // group):
        return None
    cols = np.arange(w.shape[1]) // group
    safe = np.where(s == 0, 1.0, s)[:, cols]
    if callable(getattr(module, "codes", None)):  # the stored codes themselves
        codes = module.codes().detach().cpu().numpy().astype(np.float64)
    else:
        codes = np.rint(w / safe + z[:, cols])
    if codes.shape != w.shape or codes.min() < 0 or codes.max() > 15:
        return None
    return codes.astype(np.uint8), s, z, group


def gguf_module() -> Any:
    """The ``gguf`` package (gguf-py), or MissingDependencyError naming the extra."""
    from ..errors import require

    return require("gguf", "torch", "GGUF files")


def default_out(model: Any, fmt: str, qtype: str) -> Path:
    """A fresh file for an export that names no output: a new temporary folder."""
    import tempfile

    suffix = ".gguf" if fmt == "gguf" else ".onnx"
    folder = Path(tempfile.mkdtemp(prefix="greenllm-export-"))
    return folder / f"model-{qtype}{suffix}"
