"""GGUF export for llama.cpp (Llama family: Llama, SmolLM2, TinyLlama ...), written with the
``gguf`` package's ``GGUFWriter`` and quantizers.

File layout, as llama.cpp's ``llama`` architecture reads it:
- tensors ``token_embd``, ``blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
  ffn_gate, ffn_up, ffn_down}``, ``output_norm`` and ``output`` (left out when the output head
  is tied to the embedding, as in SmolLM2); the rows of ``attn_q`` / ``attn_k`` are permuted
  from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved pairs;
- hyper-parameters under ``llama.*`` (context, embedding and feed-forward lengths, block count,
  head counts, RMS-norm epsilon, RoPE base and dimension, vocabulary size) and
  ``general.file_type`` / ``general.quantization_version``;
- the tokenizer as a byte-level BPE (``tokenizer.ggml.model = gpt2``): every token string, its
  type (normal / control for special tokens / user-defined for other added tokens), the merges,
  the BOS / EOS / UNK / PAD ids, whether BOS is added, the chat template, and the
  pre-tokenizer name llama.cpp splits text with (``gpt-2`` for a plain byte-level
  pre-tokenizer, ``smollm`` when digits are split one by one first).

Types (``type``): ``f32``, ``f16``, ``q8_0``, ``q4_0``. One-dimensional tensors (norms,
biases) stay F32 in every file. ``q8_0``: every matrix Q8_0 (blocks of 32, one fp16 scale
each); a layer that greenllm's ``int8_weight`` quantized keeps its int8 values, with its
per-row scale written into each of the row's blocks (rounded to fp16: relative error at most
2**-11), so the file computes what the int8 model computes. ``q4_0``: the block matrices Q4_0
(blocks of 32, symmetric, one fp16 scale), the token embedding (and an untied output head)
Q8_0, as llama.cpp's own quantizer keeps the output head at higher precision (it uses Q6_K,
which gguf-py cannot write). A matrix whose rows are not a multiple of 32 is written F16 (the
histogram says so). Zeros stay exactly zero in every type, so pruned weights stay pruned.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ModelError, UnsupportedError
from .base import Exported, LinearWeight, linear_weight
from .base import gguf_module as _gguf
from .gguf_read import inspect_gguf

GGUF_TYPES = ("f32", "f16", "q8_0", "q4_0")
SUPPORTED_ARCHS = ("LlamaForCausalLM",)  # config.model_type "llama"
BLOCK = 32  # elements per Q8_0 / Q4_0 block


def check_model(model: Any) -> Any:
    """The model's config when llama.cpp's ``llama`` architecture can hold it, else a clear
    refusal naming what is supported."""
    cfg = getattr(model, "config", None)
    arch = type(model).__name__
    if cfg is None or getattr(cfg, "model_type", None) != "llama" or arch not in SUPPORTED_ARCHS:
        raise UnsupportedError(
            f"export: GGUF export supports the Llama family ({', '.join(SUPPORTED_ARCHS)}, "
            f"model_type 'llama': Llama, SmolLM2, TinyLlama); got {arch} "
            f"(model_type {getattr(cfg, 'model_type', None)!r})"
        )
    rope = _rope(cfg)
    if rope.get("rope_type", "default") not in ("default", None):
        raise UnsupportedError(
            f"export: RoPE scaling {rope.get('rope_type')!r} is not written by greenllm's GGUF "
            f"exporter yet (only the default RoPE)"
        )
    return cfg


def _rope(cfg: Any) -> dict:
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    params = dict(params)
    if "rope_theta" not in params and getattr(cfg, "rope_theta", None) is not None:
        params["rope_theta"] = cfg.rope_theta
    return params


def _head_dim(cfg: Any) -> int:
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def permute_rows(rows: Any, n_head: int) -> Any:
    """Hugging Face's rotate-half Q/K row order -> llama.cpp's interleaved RoPE pairs (rows
    of each head: first halves and second halves interleaved). Works on [out, in] matrices and
    on [out] per-row vectors."""
    shape = rows.shape
    return (
        rows.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
    )


# --------------------------------------------------------------------------- tokenizer
def _pre_tokenizer_name(tok_json: dict) -> str:
    pre = tok_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if (
        kinds == ["Digits", "ByteLevel"]
        and parts[0].get("individual_digits")
        and parts[1].get("use_regex", True)
    ):
        return "smollm"
    raise UnsupportedError(
        f"export: the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) has no "
        f"llama.cpp equivalent greenllm knows; supported: byte-level BPE with the GPT-2 split "
        f"(pre 'gpt-2') or with single digits split first (pre 'smollm')"
    )


def tokenizer_fields(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """The GGUF tokenizer fields of a Hugging Face byte-level BPE tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedError(
            "export: GGUF export needs a fast (tokenizers-backed) byte-level BPE tokenizer; "
            f"got {type(tokenizer).__name__}"
        )
    tok_json = json.loads(backend.to_str())
    model = tok_json.get("model", {})
    if model.get("type") != "BPE":
        raise UnsupportedError(
            f"export: GGUF export writes byte-level BPE tokenizers (GPT-2 style); this one is "
            f"{model.get('type')!r}"
        )
    pre = _pre_tokenizer_name(tok_json)
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ModelError(
            f"export: the tokenizer has token id {max(vocab.values())}, beyond the model's "
            f"vocabulary of {vocab_size}"
        )
    by_id = {i: t for t, i in vocab.items()}
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(5)  # UNUSED
            continue
        tokens.append(by_id[i])
        if i in added:
            types.append(3 if getattr(added[i], "special", False) else 4)  # CONTROL / USER
        else:
            types.append(1)  # NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if not merges:
        raise UnsupportedError(
            "export: the tokenizer has no BPE merges; llama.cpp's BPE vocabulary needs them "
            "(a GGUF file cannot hold an empty merge list)"
        )
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    fields: dict[str, Any] = {
        "model": "gpt2",
        "pre": pre,
        "tokens": tokens,
        "types": types,
        "merges": merges,
        "add_bos": bool(ids) and ids[0] == tokenizer.bos_token_id,
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    for name in ("bos", "eos", "unk", "pad"):
        tid = getattr(tokenizer, f"{name}_token_id", None)
        if isinstance(tid, int):
            fields[name] = tid
    return fields


def _write_tokenizer(writer: Any, fields: dict[str, Any]) -> None:
    writer.add_tokenizer_model(fields["model"])
    writer.add_tokenizer_pre(fields["pre"])
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    writer.add_token_merges(fields["merges"])
    for name in ("bos", "eos", "unk", "pad"):
        if name in fields:
            getattr(writer, f"add_{name}_token_id")(fields[name])
    writer.add_add_bos_token(fields["add_bos"])
    writer.add_add_eos_token(False)
    if isinstance(fields["chat_template"], str) and fields["chat_template"]:
        writer.add_chat_template(fields["chat_template"])


# --------------------------------------------------------------------------- tensors
def _q8_0_from_int8(values: Any, scale: Any) -> Any:
    """Q8_0 blocks that hold int8 ``values`` [out, in] exactly, with each row's ``scale`` (fp16)
    in every block of the row: bytes [out, in / 32 * 34]."""
    import numpy as np

    out, cols = values.shape
    d = np.repeat(scale.astype(np.float16)[:, None], cols // BLOCK, axis=1)  # [out, nb]
    d_bytes = d.reshape(out, cols // BLOCK, 1).view(np.uint8)  # [out, nb, 2]
    q_bytes = values.astype(np.int8).reshape(out, cols // BLOCK, BLOCK).view(np.uint8)
    return np.concatenate([d_bytes, q_bytes], axis=2).reshape(out, -1)


def _q4_0_compatible(int4: Any) -> bool:
    """A 4-bit grid Q4_0 holds exactly: symmetric (every zero 8) in groups of 32 or a
    multiple of 32 (a group of 64 is two Q4_0 blocks with the same scale)."""
    if int4 is None:
        return False
    _, _, zeros, group = int4
    return group % BLOCK == 0 and bool((zeros == 8).all())


def _q4_0_from_int4(codes: Any, scales: Any, zeros: Any, group: int) -> Any:
    """Q4_0 blocks holding the codes as they are: value = fp16(scale) * (code - 8); each
    block is its fp16 scale then 16 bytes, byte j = code[j] | code[j + 16] << 4."""
    import numpy as np

    out, cols = codes.shape
    nb = cols // BLOCK
    d = np.repeat(scales.astype(np.float16), group // BLOCK, axis=1)  # [out, nb]
    q = codes.reshape(out, nb, 2, BLOCK // 2)
    packed = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).astype(np.uint8)
    d_bytes = d.reshape(out, nb, 1).view(np.uint8)
    return np.concatenate([d_bytes, packed], axis=2).reshape(out, -1)


class _Plan:
    """Chooses each tensor's GGUF type, quantizes it and keeps the histogram."""

    def __init__(self, qtype: str):
        self.qtype = qtype
        self.types: Counter[str] = Counter()
        self.type_bytes: Counter[str] = Counter()
        self.n_weights = 0
        self.notes: list[str] = []
        self.reused_int8 = 0
        self.requantized_int8 = 0
        self.reused_int4 = 0
        self.requantized_int4 = 0

    def add(self, writer: Any, name: str, w: LinearWeight | Any, *, high: bool = False) -> None:
        """``w``: a LinearWeight (matrices) or a float32 array (1-D); ``high``: a tensor kept
        at 8 bits in a 4-bit file (embedding / output head)."""
        import numpy as np

        gguf = _gguf()
        qt = gguf.GGMLQuantizationType
        if not isinstance(w, LinearWeight):
            arr = np.ascontiguousarray(w, dtype=np.float32)
            self._put(writer, name, arr, qt.F32, arr.size)
            return
        mat = np.ascontiguousarray(w.float, dtype=np.float32)
        n = mat.size
        want = {"f32": qt.F32, "f16": qt.F16, "q8_0": qt.Q8_0, "q4_0": qt.Q4_0}[self.qtype]
        if want == qt.Q4_0 and high:
            want = qt.Q8_0
        if want in (qt.Q8_0, qt.Q4_0) and mat.shape[-1] % BLOCK:
            self.notes.append(
                f"{name}: rows of {mat.shape[-1]} are not a multiple of {BLOCK}; written F16"
            )
            want = qt.F16
        if want == qt.F32:
            data = mat
        elif want == qt.F16:
            data = mat.astype(np.float16)
        elif want == qt.Q8_0 and w.int8 is not None:
            data = _q8_0_from_int8(*w.int8)
            self.reused_int8 += 1
        elif want == qt.Q4_0 and _q4_0_compatible(w.int4):
            data = _q4_0_from_int4(*w.int4)  # type: ignore[misc]
            self.reused_int4 += 1
        else:
            if w.int8 is not None:
                self.requantized_int8 += 1
            if w.int4 is not None:
                self.requantized_int4 += 1
            data = gguf.quants.quantize(mat, want)
        self._put(writer, name, data, want, n)
        if w.bias is not None:
            bias_name = name[: -len(".weight")] + ".bias"
            self.add(writer, bias_name, w.bias)

    def _put(self, writer: Any, name: str, data: Any, qtype: Any, n: int) -> None:
        gguf = _gguf()
        qt = gguf.GGMLQuantizationType
        if qtype in (qt.F32, qt.F16):
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, data, raw_dtype=qtype)
        self.types[qtype.name] += 1
        self.type_bytes[qtype.name] += int(data.nbytes)
        self.n_weights += int(n)


def _file_type(qtype: str) -> int:
    ft = _gguf().LlamaFileType
    return int(
        {
            "f32": ft.ALL_F32,
            "f16": ft.MOSTLY_F16,
            "q8_0": ft.MOSTLY_Q8_0,
            "q4_0": ft.MOSTLY_Q4_0,
        }[qtype]
    )


def _norm(module: Any) -> Any:
    return module.weight.detach().float().cpu().numpy()


def export_gguf(
    model: Any, tokenizer: Any, out: str | os.PathLike, qtype: str = "q8_0", *, name: str = ""
) -> Exported:
    """Write ``model`` (+ ``tokenizer``) as one GGUF file at ``out``; returns what was written."""
    import numpy as np

    if qtype not in GGUF_TYPES:
        raise UnsupportedError(
            f"export.type: GGUF type {qtype!r} is not written here (allowed: "
            f"{', '.join(GGUF_TYPES)}; K-quants need llama.cpp's llama-quantize)"
        )
    cfg = check_model(model)
    if tokenizer is None:
        raise ModelError("export: GGUF export needs the model's tokenizer (it goes into the file)")
    gguf = _gguf()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    vocab_size = int(cfg.vocab_size)
    tok_fields = tokenizer_fields(tokenizer, vocab_size)
    n_head, n_kv = (
        int(cfg.num_attention_heads),
        int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads),
    )
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        writer.add_type("model")
        writer.add_name(name or str(getattr(cfg, "_name_or_path", "") or "greenllm-export"))
        writer.add_context_length(int(cfg.max_position_embeddings))
        writer.add_embedding_length(int(cfg.hidden_size))
        writer.add_block_count(int(cfg.num_hidden_layers))
        writer.add_feed_forward_length(int(cfg.intermediate_size))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
        writer.add_rope_freq_base(float(_rope(cfg).get("rope_theta", 10000.0)))
        head_dim = _head_dim(cfg)
        writer.add_rope_dimension_count(head_dim)
        if head_dim * n_head != int(cfg.hidden_size):
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_vocab_size(vocab_size)
        writer.add_file_type(_file_type(qtype))
        if qtype not in ("f32", "f16"):
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _write_tokenizer(writer, tok_fields)

        plan = _Plan(qtype)
        emb = model.get_input_embeddings()
        head = model.get_output_embeddings()
        emb_w = emb.weight.detach().float().cpu().numpy()
        plan.add(writer, "token_embd.weight", LinearWeight(emb_w), high=True)
        base = model.model
        for i, layer in enumerate(base.layers):
            att, mlp = layer.self_attn, layer.mlp
            pre = f"blk.{i}"
            plan.add(writer, f"{pre}.attn_norm.weight", _norm(layer.input_layernorm))
            for key, mod, heads in (
                ("attn_q", att.q_proj, n_head),
                ("attn_k", att.k_proj, n_kv),
                ("attn_v", att.v_proj, None),
                ("attn_output", att.o_proj, None),
            ):
                lw = linear_weight(mod, f"model.layers.{i}.self_attn.{key}")
                if heads is not None:
                    lw = LinearWeight(
                        permute_rows(lw.float, heads),
                        None
                        if lw.int8 is None
                        else (permute_rows(lw.int8[0], heads), permute_rows(lw.int8[1], heads)),
                        None if lw.bias is None else permute_rows(lw.bias, heads),
                        lw.format,
                        None
                        if lw.int4 is None
                        else (
                            *(permute_rows(a, heads) for a in lw.int4[:3]),
                            lw.int4[3],
                        ),
                    )
                plan.add(writer, f"{pre}.{key}.weight", lw)
            plan.add(writer, f"{pre}.ffn_norm.weight", _norm(layer.post_attention_layernorm))
            for key, mod in (
                ("ffn_gate", mlp.gate_proj),
                ("ffn_up", mlp.up_proj),
                ("ffn_down", mlp.down_proj),
            ):
                plan.add(
                    writer, f"{pre}.{key}.weight", linear_weight(mod, f"model.layers.{i}.mlp.{key}")
                )
        plan.add(writer, "output_norm.weight", _norm(base.norm))
        tied = head is None or getattr(head, "weight", None) is emb.weight
        if not tied:
            head_w = linear_weight(head, "lm_head")
            if head_w.int8 is None and np.array_equal(head_w.float, emb_w):
                tied = True  # the same values: llama.cpp reuses token_embd as the output
        if not tied:
            plan.add(writer, "output.weight", head_w, high=True)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    if plan.reused_int8:
        plan.notes.append(
            f"{plan.reused_int8} int8_weight matrices written as Q8_0 with their own int8 values "
            f"(per-row scale repeated per block, rounded to fp16)"
        )
    if plan.reused_int4:
        plan.notes.append(
            f"{plan.reused_int4} symmetric 4-bit matrices written as Q4_0 with their own codes "
            f"(group scales rounded to fp16)"
        )
    if plan.requantized_int4:
        plan.notes.append(
            f"{plan.requantized_int4} 4-bit matrices re-quantized to {qtype.upper()} (asymmetric "
            f"grid, a group size not a multiple of 32, or another type)"
        )
    if plan.requantized_int8:
        plan.notes.append(
            f"{plan.requantized_int8} int8_weight matrices re-quantized from their int8 values "
            f"to {qtype.upper()}"
        )
    info = inspect_gguf(out)
    info.type = qtype
    info.notes = plan.notes + info.notes
    return info
