"""optimum-quanto adapter: ``quanto_int8``, ``quanto_int4``, ``quanto_float8`` (weights only).

quanto replaces each selected linear with a ``QLinear`` and ``freeze`` stores the weight as a
quantized tensor (int8 / packed int4 with per-group scale and shift / float8 e4m3). quanto
chooses the int4 group size itself (128, or the largest multiple of 32 dividing in_features).
A quanto model's state dict holds plain tensors (``weight._data``, ``weight._scale``...), so
save_pretrained writes it, and ``restore_quanto`` re-creates the QLinear modules on load (from
the per-layer formats recorded in greenllm.json) and loads the quantized tensors into them.
"""

from __future__ import annotations

import warnings

from ..errors import UnsupportedError, first_line, require

_QTYPES = {"quanto_int8": "qint8", "quanto_int4": "qint4", "quanto_float8": "qfloat8"}


def _quanto():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return require("optimum.quanto", "quanto", "quanto quantization")


def apply_quanto(model, modules, cfg, ctx):
    import torch
    import torch.nn as nn

    qu = _quanto()
    qtype = getattr(qu, _QTYPES[cfg.method])
    first = modules[0][1].weight
    probe = nn.Sequential(nn.Linear(256, 64, device=first.device, dtype=first.dtype))
    try:
        qu.quantize(probe, weights=qtype)
        qu.freeze(probe)
        probe(torch.ones(2, 256, device=first.device, dtype=first.dtype))
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        msg = first_line(exc)
        raise UnsupportedError(
            f"quantize.method={cfg.method}: optimum-quanto cannot run it on "
            f"{first.device} with {first.dtype} weights ({msg})"
        ) from None
    names = [n for n, _ in modules]
    qu.quantize(model, weights=qtype, include=names)
    qu.freeze(model)
    return {"qtype": qtype.name}


def restore_quanto(model, names, cfg, tensors):
    """Re-create quanto modules at ``names`` and load their quantized tensors."""
    qu = _quanto()
    qtype = getattr(qu, _QTYPES[cfg.method])
    prefixes = tuple(f"{n}." for n in names)
    state = {k: tensors[k] for k in tensors.keys() if k.startswith(prefixes)}
    qu.quantize(model, weights=qtype, include=list(names))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(prefixes)]
    if missing:
        from ..errors import ModelError

        raise ModelError(
            f"quantized checkpoint lacks {missing[0]!r} ({len(missing)} tensors "
            "missing); the directory was not written by greenllm.save"
        )
