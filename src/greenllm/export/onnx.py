"""ONNX export for ONNX Runtime: the Llama-family decoder with past key values.

The graph is traced from a small decoder written here over the model's own weights (embedding,
RMS norms, rotary embedding with the model's ``inv_freq``, grouped-query attention, SwiGLU
MLP, output head), not from transformers' modelling code, so its inputs and outputs are plain
tensors and one graph serves the prompt and every decode step:

- inputs ``input_ids`` int64 [1, seq] and, per layer i, ``past_key_i`` / ``past_value_i``
  float32 [1, kv_heads, past, head_dim] (``past`` = 0 for the prompt);
- outputs ``logits`` float32 [1, seq, vocab] and ``present_key_i`` / ``present_value_i``
  [1, kv_heads, past + seq, head_dim]; positions are ``past ... past + seq - 1``.

Exported with ``torch.onnx.export(dynamo=True)`` (onnxscript), dynamic ``seq`` and ``past``.
``int8``: ONNX Runtime's dynamic quantization (``quantize_dynamic``) of every MatMul weight to
int8, per output channel (activations quantized per call, ``MatMulInteger``); an
``int8_weight`` model is de-quantized first and re-quantized there (ONNX Runtime computes its
own scales). Beside the ``.onnx`` file: ``FILE.data`` (external weights, when the exporter
writes them), the tokenizer files and ``greenllm_onnx.json`` (context length, layer shapes).
The numbers in ``Exported``: bytes of the .onnx (+ .data) files; ``bits_per_weight`` = 8 x those
bytes / the decoder's weights.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import ModelError, UnsupportedError
from ..fsutil import atomic_write
from .base import Exported, linear_weight

ONNX_TYPES = ("fp32", "int8")
SIDECAR = "greenllm_onnx.json"


def _decoder_class():
    import torch
    import torch.nn.functional as F

    class LlamaDecoder(torch.nn.Module):
        """A Llama decoder over explicit past key/value tensors (see the module doc)."""

        def __init__(self, model: Any):
            super().__init__()
            cfg = model.config
            self.n_head = int(cfg.num_attention_heads)
            self.n_kv = int(getattr(cfg, "num_key_value_heads", None) or self.n_head)
            self.head_dim = int(
                getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            )
            self.eps = float(cfg.rms_norm_eps)
            base = model.model

            def buf(name: str, t: Any) -> None:
                self.register_buffer(name, torch.as_tensor(t).detach().float().clone())

            buf("embed", model.get_input_embeddings().weight)
            self.n_layers = len(base.layers)
            for i, layer in enumerate(base.layers):
                att, mlp = layer.self_attn, layer.mlp
                buf(f"ln1_{i}", layer.input_layernorm.weight)
                buf(f"ln2_{i}", layer.post_attention_layernorm.weight)
                for key, mod in (
                    ("q", att.q_proj),
                    ("k", att.k_proj),
                    ("v", att.v_proj),
                    ("o", att.o_proj),
                    ("gate", mlp.gate_proj),
                    ("up", mlp.up_proj),
                    ("down", mlp.down_proj),
                ):
                    lw = linear_weight(mod, f"model.layers.{i}.{key}")
                    buf(f"{key}_{i}", torch.from_numpy(lw.float))
                    if lw.bias is not None:
                        buf(f"{key}_bias_{i}", torch.from_numpy(lw.bias))
            buf("norm", base.norm.weight)
            head = model.get_output_embeddings()
            self.tied = head is None or getattr(head, "weight", None) is (
                model.get_input_embeddings().weight
            )
            if not self.tied:  # a tied head reads the embedding (one initializer)
                buf("head", torch.from_numpy(linear_weight(head, "lm_head").float))
            inv = getattr(getattr(base, "rotary_emb", None), "inv_freq", None)
            if inv is None:
                raise UnsupportedError("export: the model has no rotary inv_freq to export")
            buf("inv_freq", inv)
            self.attn_scale = float(getattr(base.rotary_emb, "attention_scaling", 1.0))

        def _lin(self, x: Any, key: str, i: int) -> Any:
            w = getattr(self, f"{key}_{i}")
            b = getattr(self, f"{key}_bias_{i}", None)
            return F.linear(x, w, b)

        def _norm(self, x: Any, w: Any) -> Any:
            var = x.pow(2).mean(-1, keepdim=True)
            return x * torch.rsqrt(var + self.eps) * w

        @staticmethod
        def _rot(x: Any, cos: Any, sin: Any) -> Any:
            half = x.shape[-1] // 2
            rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
            return x * cos + rotated * sin

        def forward(self, input_ids: Any, past: tuple[Any, ...]) -> tuple[Any, ...]:
            seq = input_ids.shape[1]
            n_past = past[0].shape[2]
            pos = torch.arange(seq, device=input_ids.device) + n_past
            inv_freq: Any = self.inv_freq
            embed: Any = self.embed
            freqs = pos[:, None].float() * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = (emb.cos() * self.attn_scale)[None, None]
            sin = (emb.sin() * self.attn_scale)[None, None]
            keys = torch.arange(n_past + seq, device=input_ids.device)
            allowed = keys[None, :] <= pos[:, None]  # [seq, past + seq]
            x = F.embedding(input_ids, embed)
            presents = []
            rep = self.n_head // self.n_kv
            for i in range(self.n_layers):
                h = self._norm(x, getattr(self, f"ln1_{i}"))
                q = self._lin(h, "q", i).view(1, seq, self.n_head, self.head_dim).transpose(1, 2)
                k = self._lin(h, "k", i).view(1, seq, self.n_kv, self.head_dim).transpose(1, 2)
                v = self._lin(h, "v", i).view(1, seq, self.n_kv, self.head_dim).transpose(1, 2)
                q, k = self._rot(q, cos, sin), self._rot(k, cos, sin)
                k = torch.cat((past[2 * i], k), dim=2)
                v = torch.cat((past[2 * i + 1], v), dim=2)
                presents += [k, v]
                if rep > 1:
                    k = k.repeat_interleave(rep, dim=1)
                    v = v.repeat_interleave(rep, dim=1)
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
                a = a.transpose(1, 2).reshape(1, seq, self.n_head * self.head_dim)
                x = x + self._lin(a, "o", i)
                h = self._norm(x, getattr(self, f"ln2_{i}"))
                x = x + self._lin(
                    F.silu(self._lin(h, "gate", i)) * self._lin(h, "up", i), "down", i
                )
            head: Any = embed if self.tied else self.head
            logits = F.linear(self._norm(x, self.norm), head)
            return (logits, *presents)

    return LlamaDecoder


def io_names(n_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
    present = [f"present_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
    return ["input_ids", *past], ["logits", *present]


def export_onnx(
    model: Any, tokenizer: Any, out: str | os.PathLike, qtype: str = "fp32"
) -> Exported:
    """Write the decoder of ``model`` to ``out`` (.onnx) as fp32 or int8; see the module doc."""
    import torch

    from .gguf import check_model

    if qtype not in ONNX_TYPES:
        raise UnsupportedError(
            f"export.type: ONNX type {qtype!r} is not written here "
            f"(allowed: {', '.join(ONNX_TYPES)})"
        )
    check_model(model)
    for mod in ("onnx", "onnxscript"):
        try:
            __import__(mod)
        except ImportError:
            from ..errors import MissingDependencyError

            raise MissingDependencyError(mod, "onnx", "ONNX export") from None
    out = Path(out)
    if out.suffix != ".onnx":
        raise ModelError(f"export: an ONNX file name ends in .onnx, got {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    dec = _decoder_class()(model).eval()
    n_layers, n_kv, hd = dec.n_layers, dec.n_kv, dec.head_dim
    inputs, outputs = io_names(n_layers)
    ids = torch.tensor([[1, 2, 3, 4]], dtype=torch.long)
    past = tuple(torch.zeros(1, n_kv, 3, hd) for _ in range(2 * n_layers))
    seq = torch.export.Dim("seq", min=1, max=1 << 16)
    n_past = torch.export.Dim("past", min=0, max=1 << 16)
    shapes = {"input_ids": {1: seq}, "past": tuple({2: n_past} for _ in past)}
    fp32 = out if qtype == "fp32" else out.with_name(out.stem + ".fp32-tmp.onnx")
    for p in (fp32, Path(str(fp32) + ".data")):
        p.unlink(missing_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # one Dim object names every past length: torch reports that it merged the names
            warnings.filterwarnings("ignore", message=".*axis name: past will not be used")
            program = torch.onnx.export(
                dec,
                (ids, past),
                dynamic_shapes=shapes,
                input_names=inputs,
                output_names=outputs,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
        if program is None:
            raise ModelError("export: torch.onnx.export returned no program")
        program.save(str(fp32), external_data=False)
    except (ModelError, UnsupportedError):
        raise
    except Exception as exc:  # the exporter's own failures, one line
        from ..errors import first_line

        raise UnsupportedError(
            f"export: torch.onnx could not export the decoder ({type(exc).__name__}: "
            f"{first_line(exc, 200)})"
        ) from exc
    notes = []
    if qtype == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(fp32),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        fp32.unlink(missing_ok=True)
        notes.append(
            "MatMul weights int8 per output channel (ONNX Runtime dynamic quantization; "
            "activations quantized per call); embedding and norms fp32"
        )
        if any(getattr(m, "greenllm_weight_format", None) for m in model.modules()):
            notes.append("quantized layers de-quantized and re-quantized by ONNX Runtime")
    extra = [p for p in (Path(str(out) + ".data"),) if p.exists()]
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out.parent))
    cfg = model.config
    n_weights = sum(int(b.numel()) for name, b in dec.named_buffers() if name != "inv_freq")
    atomic_write(
        out.parent / SIDECAR,
        json.dumps(
            {
                "onnx": out.name,
                "type": qtype,
                "n_layers": n_layers,
                "kv_heads": n_kv,
                "head_dim": hd,
                "vocab_size": int(cfg.vocab_size),
                "context_length": int(cfg.max_position_embeddings),
                "n_weights": n_weights,
            },
            indent=2,
        ),
    )
    size = out.stat().st_size + sum(p.stat().st_size for p in extra)
    return Exported(
        path=str(out),
        format="onnx",
        type=qtype,
        size_bytes=size,
        n_weights=n_weights,
        bits_per_weight=8.0 * size / n_weights,
        types=_initializer_types(out),
        notes=notes,
        extra_files=[str(p) for p in extra],
    )


def _initializer_types(path: Path) -> dict[str, int]:
    """Histogram of the graph's weight initializers by element type (FLOAT, INT8, ...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    hist: dict[str, int] = {}
    for init in model.graph.initializer:
        if len(init.dims) < 1:
            continue
        name = onnx.TensorProto.DataType.Name(init.data_type)
        hist[name] = hist.get(name, 0) + 1
    return hist
