"""What a model stores: bytes as stored (quantized tensor subclasses and torch.ao packed
weights included), parameter counts, and each linear layer's weight format.
Torch inside functions only."""

from __future__ import annotations


def tensor_storage_bytes(t) -> int:
    """Bytes of ``t`` as stored. Tensor subclasses (torchao Int8Tensor, quanto QBytesTensor /
    QBitsTensor, ...) are counted through their inner tensors; bitsandbytes parameters add
    their quantization state (absmax / row scales)."""
    import torch

    if not isinstance(t, torch.Tensor):
        return 0
    inner = getattr(type(t), "__tensor_flatten__", None)
    if inner is not None and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_storage_bytes(getattr(t, n)) for n in names)
    total = t.numel() * t.element_size()
    qs = getattr(t, "quant_state", None)  # bitsandbytes Params4bit
    if qs is not None:
        for attr in ("absmax", "code"):
            v = getattr(qs, attr, None)
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
        st2 = getattr(qs, "state2", None)
        if st2 is not None and isinstance(getattr(st2, "absmax", None), torch.Tensor):
            total += st2.absmax.numel() * st2.absmax.element_size()
    scb = getattr(t, "SCB", None)  # bitsandbytes Int8Params row scales
    if isinstance(scb, torch.Tensor):
        total += scb.numel() * scb.element_size()
    return int(total)


def packed_storage_bytes(model) -> int:
    """Bytes held outside parameters/buffers: torch.ao dynamic int8 packed weights."""
    total = 0
    for mod in model.modules():
        packed = getattr(mod, "_packed_params", None)
        if packed is None or not hasattr(packed, "_weight_bias"):
            continue
        w, b = packed._weight_bias()
        total += w.numel()  # int8 values
        if w.qscheme() in _per_channel_qschemes():
            for qp in (w.q_per_channel_scales(), w.q_per_channel_zero_points()):
                total += qp.numel() * qp.element_size()
        else:
            total += 16  # one float64 scale and one int64 zero point
        if b is not None:
            total += b.numel() * b.element_size()
    return int(total)


def _per_channel_qschemes():
    import torch

    return (torch.per_channel_affine, torch.per_channel_symmetric)


def layer_bits(model) -> dict[str, str]:
    """Per linear layer: how its weight is stored (``int8``, ``bfloat16``, ``float32``...)."""
    import torch.nn as nn

    out: dict[str, str] = {}
    for name, mod in model.named_modules():
        kind = getattr(mod, "greenllm_weight_format", None)
        if kind:
            out[name] = kind
        elif hasattr(mod, "_packed_params") and hasattr(mod._packed_params, "_weight_bias"):
            out[name] = "int8(torch.ao dynamic)"
        elif isinstance(mod, nn.Linear) or type(mod).__name__ in (
            "QLinear",
            "Linear8bitLt",
            "Linear4bit",
        ):
            w = mod.weight
            tname = type(w).__name__
            if tname in ("Parameter", "Tensor"):
                out[name] = str(w.dtype).replace("torch.", "")
            elif getattr(w, "qtype", None) is not None:  # quanto
                out[name] = str(w.qtype)
            elif tname == "Params4bit":
                out[name] = f"bnb.{w.quant_type}"
            elif tname == "Int8Params":
                out[name] = "bnb.int8"
            else:  # torchao and others
                out[name] = tname
    return out


def model_size_bytes(model) -> int:
    """Bytes of parameters and buffers as stored (shared tensors counted once).

    Quantized tensor subclasses (torchao, quanto) report their packed storage through
    ``tensor_storage_bytes``; torch.ao dynamic int8 packed weights through
    ``packed_storage_bytes``.
    """
    seen: set[int] = set()
    total = 0
    # state_dict = what is stored: parameters and persistent buffers (not e.g. rotary caches)
    for t in model.state_dict(keep_vars=True).values():
        key = id(t)
        if key in seen:
            continue
        seen.add(key)
        total += tensor_storage_bytes(t)
    total += packed_storage_bytes(model)  # torch.ao dynamic int8 keeps weights outside
    return int(total)


def param_count(model) -> int:
    """The parameters the model stands for: quantized modules (int8 buffers, packed 4-bit
    codes, bitsandbytes / quanto / torchao weights) count as the float parameters they
    represent, tied tensors once (``greenllm.sizes.represented_param_count``). This is the B
    of EDP/B and Wh/B, and the ``param_count`` a checkpoint records."""
    from ..sizes import represented_param_count

    return represented_param_count(model)


__all__ = [
    "layer_bits",
    "model_size_bytes",
    "packed_storage_bytes",
    "param_count",
    "tensor_storage_bytes",
]
