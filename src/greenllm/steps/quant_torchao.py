"""torchao adapter: ``torchao_int8_weight``, ``torchao_int8_dynamic``, ``torchao_int4_weight``.

torchao swaps each selected weight for a tensor subclass in place (``quantize_`` with a
filter on the selected module names). Each method is first tried on a scratch linear layer on
the model's device and dtype, so a backend that cannot run here fails with UnsupportedError
before the model is touched. torchao 0.18 has no CPU int4 weight-only kernel (its int4 formats
need CUDA tinygemm or the mslk library), so ``torchao_int4_weight`` on CPU is refused.
"""

from __future__ import annotations

import warnings

from ..errors import UnsupportedError, first_line, require
from .quantize import quiet_torchao_import


def _torchao():
    quiet_torchao_import()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        require("torchao", "torchao", "torchao quantization")
        import torchao.quantization as tq
    return tq


def _quantize(model, modules, cfg, make_config):
    import torch
    import torch.nn as nn

    tq = _torchao()
    first = modules[0][1].weight
    dtype = first.dtype
    probe = nn.Sequential(nn.Linear(256, 64, device=first.device, dtype=dtype))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tq.quantize_(probe, make_config(tq))
            probe(torch.ones(2, 256, device=first.device, dtype=dtype))
        if type(probe[0].weight).__name__ in ("Parameter", "Tensor"):
            raise RuntimeError("torchao left the weight unquantized")
    except (RuntimeError, AssertionError, NotImplementedError, ImportError, ValueError) as exc:
        msg = first_line(exc)
        raise UnsupportedError(
            f"quantize.method={cfg.method}: torchao cannot run "
            f"it on {first.device} with {dtype} weights ({msg}); on CPU use int8_weight "
            "(int8) or quanto_int4 / bnb_nf4 (4-bit)"
        ) from None
    names = {n for n, _ in modules}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.quantize_(model, make_config(tq), filter_fn=lambda m, fqn: fqn in names)
    return {"torchao_weight_type": type(modules[0][1].weight).__name__}


def apply_int8_weight(model, modules, cfg, ctx):
    return _quantize(model, modules, cfg, lambda tq: tq.Int8WeightOnlyConfig())


def apply_int8_dynamic(model, modules, cfg, ctx):
    return _quantize(model, modules, cfg, lambda tq: tq.Int8DynamicActivationInt8WeightConfig())


def apply_int4_weight(model, modules, cfg, ctx):
    import torch

    device = modules[0][1].weight.device
    if device.type == "cpu":
        raise UnsupportedError(
            "quantize.method=torchao_int4_weight: torchao's int4 weight-only kernels need a "
            "CUDA GPU (tinygemm) and have no CPU path in this version; on CPU use quanto_int4 "
            "or bnb_nf4"
        )
    if modules[0][1].weight.dtype != torch.bfloat16:
        raise UnsupportedError(
            "quantize.method=torchao_int4_weight needs a bfloat16 model "
            "(tinygemm int4 kernels); load it with dtype=bfloat16"
        )
    return _quantize(
        model,
        modules,
        cfg,
        lambda tq: tq.Int4WeightOnlyConfig(
            group_size=cfg.group_size or 128, int4_packing_format="tile_packed_to_4d"
        ),
    )
