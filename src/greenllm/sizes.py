"""How many parameters a model represents, quantized or not (a leaf module: torch is imported
inside the function only, and nothing from greenllm).

``torch.nn.Module.parameters()`` undercounts a quantized model: greenllm's ``int8_weight``
keeps its weights in ``weight_int8`` *buffers* (so a model with its head quantized has only
norms and biases as parameters), torch.ao dynamic int8 packs weight and bias into script
objects outside parameters and buffers, and bitsandbytes' ``Params4bit`` stores two 4-bit
values per byte in a ``[n/2, 1]`` uint8 tensor. Per-billion-parameter metrics (EDP/B, Wh/B)
divide by the number of parameters the model stands for, which ``represented_param_count``
gives: every parameter counted as the parameter it represents, each shared (tied) tensor
once, and no scales, zero points, rotary tables or other bookkeeping buffers.
"""

from __future__ import annotations

import math
from typing import Any

INT8_WEIGHT_BUFFER = "weight_int8"  # greenllm.steps.quant_native.Int8WeightLinear
INT4_WEIGHT_BUFFER = "weight_packed"  # greenllm.steps.int4_linear.Int4Linear (packed 4-bit)


def _represented_numel(t: Any) -> int:
    """Elements a parameter stands for: a bitsandbytes ``Params4bit`` is packed (its quant
    state keeps the original shape); tensor subclasses (quanto ``QTensor``, torchao
    ``AffineQuantizedTensor`` / ``Int8Tensor``...) and ``Int8Params`` report the logical
    shape already."""
    state = getattr(t, "quant_state", None)
    shape = getattr(state, "shape", None)
    if shape is not None:
        return int(math.prod(shape))
    return int(t.numel())


def _tensor_key(t: Any):
    """Identity of a tensor's storage where it has one (tied parameters that are distinct
    Python objects over one storage are counted once), else of the object."""
    try:
        if type(t).__name__ in ("Tensor", "Parameter") and not t.is_meta and t.numel():
            return ("ptr", t.device, t.data_ptr(), tuple(t.shape), t.dtype)
    except RuntimeError:  # tensors without storage
        pass
    return ("id", id(t))


def represented_param_count(model: Any) -> int:
    """Parameters of ``model`` as the parameters they represent (see the module doc).

    Counted: every parameter (bitsandbytes 4-bit at its unpacked shape, quantized tensor
    subclasses at their logical shape), greenllm ``int8_weight`` modules' int8 weight buffers,
    and torch.ao dynamic-quantized weights and biases held in packed params. Each tensor is
    counted once, so a tied embedding / head is one matrix, also when the embedding is an
    ``Int8Embedding`` view of the int8 head. (A method that quantizes a tied head into a copy,
    leaving the float embedding beside it, holds two matrices, and two are counted.)
    """
    seen: set = set()
    total = 0

    def add(t, n: int | None = None) -> None:
        nonlocal total
        key = _tensor_key(t)
        if key in seen:
            return
        seen.add(key)
        total += _represented_numel(t) if n is None else n

    for p in model.parameters():
        add(p)
    for mod in model.modules():
        buf = mod._buffers.get(INT8_WEIGHT_BUFFER) if hasattr(mod, "_buffers") else None
        if buf is not None:
            add(buf)
        q4 = mod._buffers.get(INT4_WEIGHT_BUFFER) if hasattr(mod, "_buffers") else None
        if q4 is not None and hasattr(mod, "in_features"):  # eight codes an int32
            add(q4, int(mod.in_features) * int(mod.out_features))
            if mod._buffers.get("bias") is not None:
                add(mod._buffers["bias"])
        packed = getattr(mod, "_packed_params", None)
        weight_bias = getattr(packed, "_weight_bias", None)
        if callable(weight_bias):  # torch.ao quantized (dynamic) Linear
            w, b = weight_bias()
            add(packed, int(w.numel()) + (int(b.numel()) if b is not None else 0))
    return int(total)


__all__ = ["represented_param_count"]
