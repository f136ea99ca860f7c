"""A 4-bit weight-only linear layer that runs on PyTorch's CPU int4 kernel, stored in the
compressed-tensors ``pack-quantized`` layout.

``Int4Linear`` keeps the weights as they are stored, with the tensor names, dtypes and packing
of compressed-tensors (the format of llm-compressor checkpoints that transformers and vLLM
load), so a saved model's state dict is already such a checkpoint:

- ``weight_packed`` int32 ``[out, in / 8]``: eight 4-bit codes per word, input column
  ``8w + t`` in bits ``4t .. 4t + 3`` of word ``w`` (the codes are the signed integers
  ``-8 .. 7`` plus 8, compressed-tensors' offset);
- ``weight_scale`` float ``[out, groups]``; ``weight_shape`` int64 ``[out, in]``;
- ``weight_zero_point`` int32 ``[ceil(out / 8), groups]``, only for asymmetric grids: the
  zero points (also offset by 8) packed the same way along the *output* dimension;
  symmetric grids have none (zero point 8, i.e. signed 0: ``(q - 8) * scale``, GGUF ``Q4_0``'s
  form at group 32).

For the matmul the layer builds the layout of ``torch.ops.aten._weight_int4pack_mm_for_cpu``
(the kernel behind torchao's CPU int4 layout): codes repacked by
``_convert_weight_to_int4pack_for_cpu`` and a ``[groups, out, 2]`` table of (scale, offset).
That kernel de-quantizes as ``(q - 8) * scale + offset``, so a grid ``scale * (q - zero)``
maps to ``offset = (8 - zero) * scale`` exactly. It takes bfloat16 activations: the input is
cast to bfloat16 for the matmul and the output back (the reason a 4-bit model's logits differ
from its de-quantized float32 twin by about 1e-2 relative). Where the kernel cannot run (not
on CPU, group sizes other than 32/64/128/256, or no such operator in this torch) the layer
multiplies with the de-quantized weight instead and says so in ``kernel``.
"""

from __future__ import annotations

from typing import Any

KERNEL_GROUP_SIZES = (32, 64, 128, 256)
INNER_K_TILES = 8


def _nn():
    import torch

    return torch.nn


def pack_int32(codes):
    """Codes ``0..15`` ``[rows, cols]`` -> int32 ``[rows, ceil(cols / 8)]``, column ``8w + t``
    in bits ``4t`` of word ``w`` (compressed-tensors' ``pack_to_int32`` at 4 bits)."""
    import torch

    rows, cols = codes.shape
    pad = (-cols) % 8
    c = codes.to(torch.int64)
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.reshape(rows, -1, 8)
    shifts = torch.arange(8, dtype=torch.int64) * 4
    words = (c << shifts).sum(-1)  # < 2^32
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_int32(packed, cols: int):
    """Inverse of ``pack_int32``: uint8 codes ``[rows, cols]``."""
    import torch

    w = packed.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(8, dtype=torch.int64) * 4
    codes = (w[..., None] >> shifts) & 0xF
    return codes.reshape(packed.shape[0], -1)[:, :cols].to(torch.uint8)


class Int4Linear(_nn().Module):  # type: ignore[misc]
    """``y = x W^T + b`` with ``W = weight_scale[:, g] * (codes - zeros[:, g])``, groups of
    ``group_size`` contiguous input columns (``group_size == in_features`` for per-channel)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        bias: bool = False,
        dtype: Any = None,
        sym: bool = False,
    ):
        import torch

        super().__init__()
        if in_features % group_size or in_features % 8:
            raise ValueError(
                f"in_features {in_features} is not a multiple of group_size {group_size} (and of 8)"
            )
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.sym = sym
        groups = in_features // group_size
        self.register_buffer(
            "weight_packed", torch.zeros(out_features, in_features // 8, dtype=torch.int32)
        )
        self.register_buffer(
            "weight_scale", torch.ones(out_features, groups, dtype=dtype or torch.float32)
        )
        self.register_buffer(
            "weight_shape", torch.tensor([out_features, in_features], dtype=torch.int64)
        )
        if not sym:
            self.register_buffer(
                "weight_zero_point",
                torch.zeros((out_features + 7) // 8, groups, dtype=torch.int32),
            )
        else:
            self.weight_zero_point = None
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=dtype or torch.float32))
        else:
            self.bias = None
        self.out_dtype = dtype or torch.float32
        self._packed: Any = None
        self._table: Any = None
        self.kernel = "unprepared"

    @classmethod
    def from_quantized(cls, codes, scales, zeros, group_size: int, bias=None, dtype=None):
        """From integer codes [out, in] and per-group scales/zeros [out, groups]; symmetric
        (no zero point stored) when every zero is 8."""
        out_f, in_f = codes.shape
        sym = bool((zeros.round() == 8).all())
        mod = cls(in_f, out_f, group_size, bias=bias is not None, dtype=dtype, sym=sym)
        mod.weight_packed.copy_(pack_int32(codes))
        mod.weight_scale.copy_(scales.to(mod.weight_scale.dtype))
        if not sym:
            mod.weight_zero_point.copy_(pack_int32(zeros.round().to(torch_uint8()).t()).t())
        if bias is not None:
            mod.bias.copy_(bias.detach())
        mod.prepare()
        return mod

    @classmethod
    def from_state(cls, tensors: dict, prefix: str, dtype=None):
        """From compressed-tensors tensors ``{prefix}.weight_packed`` etc. (a checkpoint)."""
        out_f, in_f = (int(v) for v in tensors[f"{prefix}.weight_shape"])
        scale = tensors[f"{prefix}.weight_scale"]
        zp = tensors.get(f"{prefix}.weight_zero_point")
        bias = tensors.get(f"{prefix}.bias")
        mod = cls(
            in_f,
            out_f,
            in_f // scale.shape[1],
            bias=bias is not None,
            dtype=dtype or scale.dtype,
            sym=zp is None,
        )
        mod.weight_packed.copy_(tensors[f"{prefix}.weight_packed"])
        mod.weight_scale.copy_(scale)
        if zp is not None:
            mod.weight_zero_point.copy_(zp)
        if bias is not None:
            mod.bias.copy_(bias)
        mod.prepare()
        return mod

    @property
    def greenllm_weight_format(self) -> str:
        return f"int4 g{self.group_size} {'sym' if self.sym else 'asym'} (packed)"

    def codes(self):
        return unpack_int32(self.weight_packed, self.in_features)

    def zeros(self):
        """Zero points ``[out, groups]`` on the 0..15 grid (8 for a symmetric grid)."""
        import torch

        groups = self.weight_scale.shape[1]
        if self.weight_zero_point is None:
            return torch.full((self.out_features, groups), 8.0)
        return unpack_int32(self.weight_zero_point.t(), self.out_features).t().float()

    def dequantized_weight(self):
        import torch

        g = torch.arange(self.in_features) // self.group_size
        scale = self.weight_scale.float()
        return scale[:, g] * (self.codes().float() - self.zeros()[:, g])

    def prepare(self) -> None:
        """Build the kernel's layout from the stored codes (after loading, or a move)."""
        import torch

        self._packed = self._table = None
        op = getattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu", None)
        if (
            self.weight_packed.device.type != "cpu"
            or op is None
            or self.group_size not in KERNEL_GROUP_SIZES
        ):
            self.kernel = "dequantized matmul"
            return
        codes = self.codes().to(torch.int32)
        self._packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES)
        scale = self.weight_scale.float()
        offset = (8.0 - self.zeros()) * scale
        self._table = (
            torch.stack([scale, offset], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        )
        self.kernel = "_weight_int4pack_mm_for_cpu (bf16 activations)"

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.kernel = "unprepared"  # rebuilt from the loaded codes on the next forward

    def forward(self, x):
        import torch

        if self.kernel == "unprepared":
            self.prepare()
        if self._packed is None:
            y = torch.nn.functional.linear(x.float(), self.dequantized_weight()).to(x.dtype)
        else:
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                flat, self._packed, self.group_size, self._table
            )
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.group_size}, sym={self.sym}, kernel={self.kernel!r}"
        )


def torch_uint8():
    import torch

    return torch.uint8
