"""Quantize methods built on PyTorch alone: ``int8_weight``, ``bf16`` / ``fp16`` casting and
torch.ao ``dynamic_int8``.

``int8_weight`` replaces each selected ``nn.Linear`` with ``Int8WeightLinear``: symmetric
per-output-channel int8 weights (scale = max|w_row| / 127) and PyTorch's int8 weight-only
matmul kernel ``torch.ops.aten._weight_int8pack_mm`` (activations in ``compute_dtype``,
bfloat16 by default, because the CPU kernel's float32 path is several times slower). Its
state dict holds ``weight_int8`` (int8) and ``weight_scale`` (float32), so save_pretrained
writes 1 byte per weight and ``restore_int8_weight`` rebuilds the modules on load.

``dynamic_int8`` is torch.ao's dynamic ``quantized.dynamic.Linear``: int8 weights (one scale
per output channel, or one per tensor with ``per_channel=False``) and activations quantized
to int8 on every call with **one** scale and zero point for the whole input tensor
(per-tensor, not per-token): an outlier token coarsens every other token's activations.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnsupportedError, first_line
from .quantize import swap_modules


# --------------------------------------------------------------------------- int8 weight-only
def _int8pack_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``_weight_int8pack_mm`` runs on ``device`` for ``dtype`` activations."""
    try:
        x = torch.ones(2, 32, dtype=dtype, device=device)
        w = torch.ones(8, 32, dtype=torch.int8, device=device)
        s = torch.ones(8, dtype=dtype, device=device)
        y = torch.ops.aten._weight_int8pack_mm(x, w, s)
        return bool(torch.allclose(y.float(), torch.full((2, 8), 32.0, device=device)))
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


@torch.library.custom_op("greenllm::int8pack_mm", mutates_args=())
def int8pack_mm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``aten._weight_int8pack_mm`` as an opaque op: torch.compile calls the ATen kernel on
    realised inputs instead of lowering it (inductor's lowering rejects fused inputs)."""
    return torch.ops.aten._weight_int8pack_mm(x.contiguous(), weight, scale)


@int8pack_mm.register_fake
def _(x, weight, scale):
    return x.new_empty(x.shape[0], weight.shape[0])


class Int8WeightLinear(nn.Module):
    """y = x @ (q * scale).T + b with int8 ``q`` [out, in] and float32 per-row ``scale``."""

    greenllm_weight_format = "int8_weight"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        compute_dtype: str = "bfloat16",
        device=None,
        use_kernel: bool = True,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer(
            "weight_scale", torch.ones(out_features, dtype=torch.float32, device=device)
        )
        self.bias = (
            nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False)
            if bias
            else None
        )
        self.compute_dtype = getattr(torch, compute_dtype)
        self.use_kernel = use_kernel
        self._scale_cache: tuple | None = None

    @staticmethod
    def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = w.detach().float()
        amax = w.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return q, scale

    @classmethod
    def from_linear(cls, lin: nn.Linear, compute_dtype: str, use_kernel: bool):
        new = cls(
            lin.in_features,
            lin.out_features,
            lin.bias is not None,
            compute_dtype,
            device=lin.weight.device,
            use_kernel=use_kernel,
        )
        q, scale = cls.quantize_weight(lin.weight)
        new.weight_int8.copy_(q)
        new.weight_scale.copy_(scale)
        if lin.bias is not None:
            new.bias.data = lin.bias.detach().clone()
        return new

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.float() * self.weight_scale[:, None]

    def _scale(self) -> torch.Tensor:
        """``weight_scale`` in the compute dtype, converted once per change of the scale
        (inside torch.compile the conversion is part of the graph: no Python-side cache)."""
        if torch.compiler.is_compiling():
            return self.weight_scale.to(self.compute_dtype)
        ws = self.weight_scale
        # which tensor, and how often changed in place (inference tensors keep no count)
        key = (ws.data_ptr(), ws.device, None if ws.is_inference() else ws._version)
        cache = self._scale_cache
        if cache is None or cache[0] != key:
            cache = self._scale_cache = (key, ws.to(self.compute_dtype))
        return cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(self.compute_dtype)
        if self.use_kernel:
            if torch.compiler.is_compiling():
                y = int8pack_mm(x2, self.weight_int8, self._scale())
            else:  # eager: the ATen binding directly (a custom op's dispatch costs ~10 us)
                y = torch._weight_int8pack_mm(x2.contiguous(), self.weight_int8, self._scale())
        else:  # devices without the kernel: de-quantize on the fly
            w = self.weight_int8.to(self.compute_dtype) * self._scale()[:, None]
            y = F.linear(x2, w)
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, compute_dtype={self.compute_dtype}, "
            f"kernel={'_weight_int8pack_mm' if self.use_kernel else 'dequantize'}"
        )


class Int8Embedding(nn.Module):
    """The input embedding of a model whose embedding is tied to an int8 ``lm_head``.

    It owns no tensor: rows are looked up in the head's int8 weight and scaled, so the tied
    matrix is stored once, as int8 (SmolLM2-135M: 28 M of its 134 M parameters).
    ``embed_scale`` is the factor the replaced embedding multiplied its rows by (Gemma's
    ``*ScaledWordEmbedding``: sqrt(hidden_size)); 1.0 for a plain ``nn.Embedding``.
    """

    greenllm_weight_format = "int8_weight(tied)"

    def __init__(
        self,
        head: Int8WeightLinear,
        padding_idx: int | None = None,
        dtype: torch.dtype = torch.float32,
        embed_scale: float = 1.0,
    ):
        super().__init__()
        object.__setattr__(self, "_head", head)  # not a submodule: no second state_dict entry
        self.padding_idx = padding_idx
        self.out_dtype = dtype
        self.embed_scale = float(embed_scale)
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features

    @property
    def weight(self) -> torch.Tensor:  # read-only, de-quantized view for code that asks
        return self._head.dequantized_weight()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        head = self._head
        rows = head.weight_int8[ids].to(self.out_dtype)
        out = rows * head.weight_scale[ids].unsqueeze(-1).to(self.out_dtype)
        if self.embed_scale != 1.0:  # rounded to the output dtype, as Gemma's module does
            out = out * torch.tensor(self.embed_scale, dtype=self.out_dtype)
        return out

    def extra_repr(self) -> str:
        scale = f", embed_scale={self.embed_scale:g}" if self.embed_scale != 1.0 else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{scale}, tied to the int8 lm_head"


def _tied_input_embedding(model, modules) -> str | None:
    """Name of the quantized Linear whose weight is the model's input embedding, if any."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is None or not isinstance(getattr(emb, "weight", None), torch.Tensor):
        return None
    for name, lin in modules:
        if lin.weight is emb.weight:
            return name
    return None


def _declared_embed_scale(emb) -> float:
    """The row scale an embedding module declares (``embed_scale``, a number or a 0-d tensor,
    as in Gemma's, BART's and others' scaled embeddings); 1.0 when it declares none."""
    scale = getattr(emb, "embed_scale", None)
    if isinstance(scale, torch.Tensor) and scale.numel() == 1 and not scale.is_meta:
        return float(scale.item())
    if isinstance(scale, (int, float)):
        return float(scale)
    return 1.0


def _embedding_scale(model) -> float:
    """The factor by which the model's input embedding multiplies the rows of its (tied)
    weight. Checked on a few rows: an embedding that does anything else (a normaliser, a
    non-scalar scale) is refused, because the int8 embedding would silently change it."""
    emb = model.get_input_embeddings()
    scale = _declared_embed_scale(emb)
    w = emb.weight
    ids = torch.linspace(0, w.shape[0] - 1, steps=min(8, w.shape[0]), device=w.device).long()
    with torch.no_grad():
        got = emb(ids[None])[0].float()
        want = (w[ids] * torch.tensor(scale, dtype=w.dtype, device=w.device)).float()
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-2, atol=1e-6):
        raise UnsupportedError(
            f"quantize.ignore: the input embedding {type(emb).__name__} is tied to the "
            "quantized head but does more than scale the rows of its weight, so an int8 "
            "embedding cannot replace it; keep the head in float with ignore=['lm_head']"
        )
    return scale


def _tie_int8_embedding(model, head: Int8WeightLinear, embed_scale: float = 1.0) -> None:
    emb = model.get_input_embeddings()
    dtype = (
        emb.weight.dtype
        if isinstance(getattr(emb, "weight", None), torch.Tensor)
        else torch.float32
    )
    model.set_input_embeddings(
        Int8Embedding(head, getattr(emb, "padding_idx", None), dtype, embed_scale)
    )
    # from here on the embedding follows the head; nothing may re-tie float weights
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False


def apply_int8_weight(model, modules, cfg, ctx):
    dtype = getattr(torch, cfg.compute_dtype)
    device = modules[0][1].weight.device
    use_kernel = _int8pack_works(device, dtype)
    tied = _tied_input_embedding(model, modules)
    embed_scale = _embedding_scale(model) if tied is not None else None  # may refuse
    new = {
        name: Int8WeightLinear.from_linear(lin, cfg.compute_dtype, use_kernel)
        for name, lin in modules
    }
    swap_modules(model, new)
    if tied is not None:
        _tie_int8_embedding(model, new[tied], embed_scale)
    stats = {
        "kernel": "_weight_int8pack_mm" if use_kernel else "dequantize",
        "compute_dtype": cfg.compute_dtype,
        "tied_embedding": tied,
    }
    if tied is not None:
        stats["embedding_scale"] = embed_scale
    return stats


def restore_int8_weight(model, names, cfg, tensors, stats=None):
    """Rebuild Int8WeightLinear modules at ``names`` from checkpoint ``tensors``."""
    dtype = getattr(torch, cfg.compute_dtype)
    new = {}
    for name in names:
        old = model.get_submodule(name)
        q = tensors[f"{name}.weight_int8"]
        device = next(iter(old.parameters())).device if list(old.parameters()) else "cpu"
        use_kernel = _int8pack_works(torch.device(device), dtype)
        mod = Int8WeightLinear(
            q.shape[1],
            q.shape[0],
            f"{name}.bias" in tensors,
            cfg.compute_dtype,
            device=device,
            use_kernel=use_kernel,
        )
        mod.weight_int8.copy_(q)
        mod.weight_scale.copy_(tensors[f"{name}.weight_scale"])
        if mod.bias is not None:
            mod.bias.data = tensors[f"{name}.bias"].to(device).float()
        new[name] = mod
    swap_modules(model, new)
    stats = stats or {}
    tied = stats.get("tied_embedding")
    if tied:
        # the freshly loaded model's embedding declares its scale (Gemma: sqrt(hidden_size));
        # checkpoints saved before the scale was recorded fall back to it
        scale = stats.get("embedding_scale")
        if scale is None:
            scale = _declared_embed_scale(model.get_input_embeddings())
        _tie_int8_embedding(model, new[tied], scale)


# --------------------------------------------------------------------------- casting
class CastLinear(nn.Linear):
    """A linear layer whose weight is stored and multiplied in a lower float dtype; inputs
    are cast in and outputs cast back, so the rest of the model is untouched."""

    greenllm_weight_format = "cast"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


_CAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _cast_module(lin: nn.Linear, dtype: torch.dtype, method: str) -> CastLinear:
    new = CastLinear(
        lin.in_features, lin.out_features, lin.bias is not None, device="meta", dtype=dtype
    )
    new.weight = nn.Parameter(lin.weight.detach().to(dtype), requires_grad=False)
    if lin.bias is not None:
        new.bias = nn.Parameter(lin.bias.detach().to(dtype), requires_grad=False)
    new.greenllm_weight_format = method
    return new


def apply_cast(model, modules, cfg, ctx):
    dtype = _CAST[cfg.method]
    device = modules[0][1].weight.device
    try:
        F.linear(
            torch.ones(2, 8, dtype=dtype, device=device),
            torch.ones(4, 8, dtype=dtype, device=device),
        )
    except RuntimeError as exc:
        raise UnsupportedError(
            f"quantize.method={cfg.method}: {dtype} matmul does not run on "
            f"{device} ({first_line(exc)}); use bf16 or "
            "int8_weight"
        ) from None
    swap_modules(model, {name: _cast_module(lin, dtype, cfg.method) for name, lin in modules})
    return {"weight_dtype": str(dtype).replace("torch.", "")}


def restore_cast(model, names, cfg, tensors):
    dtype = _CAST[cfg.method]
    swap_modules(model, {n: _cast_module(model.get_submodule(n), dtype, cfg.method) for n in names})


# --------------------------------------------------------------------------- torch.ao dynamic
def apply_dynamic_int8(model, modules, cfg, ctx):
    device = modules[0][1].weight.device
    if device.type != "cpu":
        raise UnsupportedError(
            f"quantize.method=dynamic_int8 runs on CPU only (model is on "
            f"{device}); use int8_weight or a torchao method on GPU"
        )
    if modules[0][1].weight.dtype != torch.float32:
        raise UnsupportedError(
            "quantize.method=dynamic_int8 needs a float32 model (got "
            f"{modules[0][1].weight.dtype}); load it with dtype=float32"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated upstream
        from torch.ao.nn.quantized.dynamic import Linear as DynLinear
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

        qconfig = per_channel_dynamic_qconfig if cfg.per_channel else default_dynamic_qconfig
        new = {}
        for name, lin in modules:
            lin.qconfig = qconfig
            try:
                new[name] = DynLinear.from_float(lin)
            finally:
                del lin.qconfig
    swap_modules(model, new)
    return {
        "per_channel": cfg.per_channel,
        "engine": torch.backends.quantized.engine,
        "weights": "int8, per-channel" if cfg.per_channel else "int8, per-tensor",
        "activations": "int8, dynamic per-tensor (one scale per input tensor per call)",
    }
