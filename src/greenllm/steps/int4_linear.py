"""A 4-bit weight-only linear layer that runs on PyTorch's CPU int4 kernel.

``Int4Linear`` keeps the weights as they are stored (``qweight``: two 4-bit codes a byte,
``scales`` and ``zeros`` per group of input columns) and, for the matmul, the layout of
``torch.ops.aten._weight_int4pack_mm_for_cpu`` (the kernel behind torchao's CPU int4 layout):
codes repacked by ``_convert_weight_to_int4pack_for_cpu`` and a ``[groups, out, 2]`` table of
(scale, offset). That kernel de-quantizes as ``(q - 8) * scale + offset``, so a grid
``scale * (q - zero)`` maps to ``offset = (8 - zero) * scale`` exactly. It takes bfloat16
activations: the input is cast to bfloat16 for the matmul and the output back (the reason a
4-bit model's logits differ from its de-quantized float32 twin by about 1e-2 relative).
Where the kernel cannot run (not on CPU, group sizes other than 32/64/128/256, or no such
operator in this torch) the layer multiplies with the de-quantized weight instead and says so
in ``kernel``.
"""

from __future__ import annotations

from typing import Any

KERNEL_GROUP_SIZES = (32, 64, 128, 256)
INNER_K_TILES = 8


def _nn():
    import torch

    return torch.nn


class Int4Linear(_nn().Module):  # type: ignore[misc]
    """``y = x W^T + b`` with ``W = scales[:, g] * (codes - zeros[:, g])``, groups of
    ``group_size`` contiguous input columns (``group_size == in_features`` for per-channel)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        bias: bool = False,
        dtype: Any = None,
    ):
        import torch

        super().__init__()
        if in_features % group_size or in_features % 2:
            raise ValueError(
                f"in_features {in_features} is not a multiple of group_size {group_size} (and of 2)"
            )
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer(
            "qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8)
        )
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=torch.float32))
        self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=torch.uint8))
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
        """From integer codes [out, in] and per-group scales/zeros [out, groups]."""
        from .gptq_core import pack_int4

        out_f, in_f = codes.shape
        mod = cls(in_f, out_f, group_size, bias=bias is not None, dtype=dtype)
        mod.qweight.copy_(pack_int4(codes))
        mod.scales.copy_(scales.float())
        mod.zeros.copy_(zeros.round().to(mod.zeros.dtype))
        if bias is not None:
            mod.bias.copy_(bias.detach())
        mod.prepare()
        return mod

    def dequantized_weight(self):
        from .gptq_core import unpack_int4

        codes = unpack_int4(self.qweight).float()
        g = codes.new_tensor(range(self.in_features)).long() // self.group_size
        return self.scales[:, g] * (codes - self.zeros[:, g].float())

    def prepare(self) -> None:
        """Build the kernel's layout from the stored codes (after loading, or a move)."""
        import torch

        from .gptq_core import unpack_int4

        self._packed = self._table = None
        op = getattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu", None)
        if (
            self.qweight.device.type != "cpu"
            or op is None
            or self.group_size not in KERNEL_GROUP_SIZES
        ):
            self.kernel = "dequantized matmul"
            return
        codes = unpack_int4(self.qweight).to(torch.int32)
        self._packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES)
        offset = (8.0 - self.zeros.float()) * self.scales
        self._table = (
            torch.stack([self.scales, offset], dim=-1)
            .transpose(0, 1)
            .contiguous()
            .to(torch.bfloat16)
        )
        self.kernel = "_weight_int4pack_mm_for_cpu (bf16 activations)"

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
            f"group_size={self.group_size}, kernel={self.kernel!r}"
        )
