"""``no_autograd(model)``: the one place that decides how evaluators and the benchmark switch
autograd off for a model.

``torch.inference_mode()`` is the cheaper choice, but some quantized tensor subclasses cannot
take part in it: optimum-quanto's int4 weights (``quanto_int4``) raise "Cannot set
version_counter for inference tensor" on their first matmul. A model that holds any parameter
or buffer of a tensor subclass (quanto, torchao, bitsandbytes) runs under
``torch.no_grad()``; plain models keep ``inference_mode``. torch is imported inside the
function only.
"""

from __future__ import annotations

from typing import Any


def holds_tensor_subclass(model: Any) -> bool:
    """Whether a parameter or buffer of ``model`` is a tensor subclass (not a plain Tensor or
    Parameter)."""
    import torch

    plain = (torch.Tensor, torch.nn.Parameter)
    tensors = list(model.parameters()) + list(model.buffers())
    return any(type(t) not in plain for t in tensors)


def no_autograd(model: Any):
    """A context manager without autograd for running ``model``: ``torch.inference_mode()``,
    or ``torch.no_grad()`` when the model holds tensor subclasses (see the module doc)."""
    import torch

    return torch.no_grad() if holds_tensor_subclass(model) else torch.inference_mode()
