"""bitsandbytes adapter: ``bnb_int8`` (LLM.int8() ``Linear8bitLt``), ``bnb_nf4`` and
``bnb_fp4`` (``Linear4bit``).

bitsandbytes >= 0.47 ships a CPU backend (``libbitsandbytes_cpu`` plus torch fallbacks), so the
three methods run on CPU with a recent install; older versions are CUDA-only. Rather than
trusting version numbers, each method is first run on a scratch layer on the model's device:
if that fails the step raises UnsupportedError (naming the installed version and the fix)
before the model is touched; if bitsandbytes is absent it raises MissingDependencyError.
Quantization happens when the new module is moved to the device. bitsandbytes checkpoints
written on CPU do not reload correctly, so these methods are marked as not reloadable.
"""

from __future__ import annotations

import warnings

from ..errors import UnsupportedError, first_line, require

_4BIT = {"bnb_nf4": "nf4", "bnb_fp4": "fp4"}


def _bnb():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return require("bitsandbytes", "bnb", "bitsandbytes quantization")


def _build(bnb, lin, method: str, blocksize: int, device):
    import torch.nn as nn

    bias = lin.bias is not None
    if method == "bnb_int8":
        new = bnb.nn.Linear8bitLt(
            lin.in_features, lin.out_features, bias=bias, has_fp16_weights=False, threshold=6.0
        )
        new.weight = bnb.nn.Int8Params(
            lin.weight.detach().clone().cpu(), requires_grad=False, has_fp16_weights=False
        )
    else:
        new = bnb.nn.Linear4bit(
            lin.in_features,
            lin.out_features,
            bias=bias,
            compute_dtype=lin.weight.dtype,
            quant_type=_4BIT[method],
        )
        new.weight = bnb.nn.Params4bit(
            lin.weight.detach().clone().cpu(),
            requires_grad=False,
            quant_type=_4BIT[method],
            blocksize=blocksize,
        )
    if bias:
        new.bias = nn.Parameter(lin.bias.detach().clone().cpu(), requires_grad=False)
    return new.to(device)  # quantizes the weight


def apply_bnb(model, modules, cfg, ctx):
    import torch
    import torch.nn as nn

    bnb = _bnb()
    version = getattr(bnb, "__version__", "?")
    first = modules[0][1].weight
    device = first.device
    blocksize = cfg.group_size or 64
    if cfg.method != "bnb_int8" and blocksize < 64:
        raise UnsupportedError(
            f"quantize.group_size={cfg.group_size}: bitsandbytes 4-bit "
            "block sizes start at 64; use group_size=64, 128 or 256"
        )
    try:
        probe = _build(bnb, nn.Linear(256, 64, dtype=first.dtype), cfg.method, blocksize, device)
        y = probe(torch.randn(2, 256, dtype=first.dtype, device=device))
        if not torch.isfinite(y).all():
            raise RuntimeError("non-finite output from a scratch layer")
    except (
        RuntimeError,
        NotImplementedError,
        AssertionError,
        ValueError,
        TypeError,
        AttributeError,
    ) as exc:
        msg = first_line(exc, 160)
        where = (
            "needs CUDA or a newer bitsandbytes with a CPU backend (>= 0.47)"
            if device.type == "cpu"
            else f"cannot run on {device}"
        )
        raise UnsupportedError(
            f"quantize.method={cfg.method}: installed bitsandbytes {version} "
            f"{where} ({msg}); on CPU use int8_weight or quanto_int4"
        ) from None
    from .quantize import swap_modules

    new = {}
    worst = 0.0
    for name, lin in modules:
        new[name] = _build(bnb, lin, cfg.method, blocksize, device)
        if cfg.method != "bnb_int8":
            err = _roundtrip_error(bnb, new[name], lin)
            worst = max(worst, err)
            if err > MAX_4BIT_ERROR:
                raise UnsupportedError(
                    f"quantize.method={cfg.method}: bitsandbytes {version} de-quantizes layer "
                    f"{name!r} with relative error {err:.2f} at block size {blocksize} (a "
                    f"correct 4-bit round trip is ~0.1); the model was left unchanged; try "
                    "group_size=64 or quanto_int4"
                )
    swap_modules(model, new)
    return {
        "bitsandbytes": version,
        "quant_type": _4BIT.get(cfg.method, "int8"),
        "blocksize": blocksize if cfg.method != "bnb_int8" else None,
        "max_roundtrip_error": round(worst, 4) if cfg.method != "bnb_int8" else None,
    }


# bitsandbytes 0.50.2's CPU path mis-quantizes some shapes at block size 128 (SmolLM2's
# 576x576 q_proj: relative error 0.62 instead of 0.11, perplexity 30 -> 1e6); check every
# layer's de-quantized weight before installing anything.
MAX_4BIT_ERROR = 0.3


def _roundtrip_error(bnb, qmod, lin) -> float:
    import torch

    w = lin.weight.detach().float()
    deq = bnb.functional.dequantize_4bit(qmod.weight.data, qmod.weight.quant_state).float()
    return float(
        torch.linalg.norm(deq.reshape(w.shape) - w) / torch.linalg.norm(w).clamp_min(1e-12)
    )
