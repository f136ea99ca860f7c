"""What compression steps do to a model's stored size, from their configs alone (stdlib only).

``apply_steps(dims, steps, notes)`` walks a variant's parsed steps (``[(key, config)]`` as
``recipe._parse_variants`` makes them; mappings work too) and returns ``Stored``: the shape
after structured pruning or a layer-dropped distillation student, and how each linear layer
is stored after quantization. ``weight_bytes(stored, dtype_bytes)`` is then the size of the
weights in memory. Fields are read with ``getattr`` (or ``Mapping.get``), so a step this
module does not know leaves the model unchanged and says so in a note; nothing here imports
the steps (they sit above this layer).

Storage per quantized linear of ``n = in x out`` weights (``e``: bytes of the model dtype;
biases stay at ``e`` unless noted), following what each method's module holds:

- ``int8_weight``: int8 codes + one float32 scale per output row (``Int8WeightLinear``); a
  tied ``lm_head`` quantized this way also serves as the embedding (stored once, as int8).
- ``dynamic_int8``: int8 codes + float64 scale and int64 zero point per row (per tensor with
  ``per_channel: false``), float32 bias (torch.ao's packed params), and the module's own
  output scale / zero point (12 bytes).
- ``bf16`` / ``fp16``: 2 bytes per weight and bias.
- ``gptq`` / ``awq`` / ``rtn`` at 4 bits: int32 words of eight 4-bit codes (``n / 2``), a
  scale per group of ``group_size`` inputs (default 64; ``-1``: per row) at ``e``, int32 zero
  points packed eight to a word for asymmetric grids (``Int4Linear``); on the torch runtime
  the CPU int4 kernel's own layout is built next to it (``n / 2`` + a bf16 scale/offset
  table). Other bit widths are simulated: dense weights.
- ``bnb_int8``: int8 + float32 row scale; ``bnb_nf4`` / ``bnb_fp4``: ``n / 2`` + one uint8
  absmax per block of ``group_size`` (64) + a float32 per 256 blocks (nested statistics).
- ``quanto_int8`` / ``quanto_float8``: 1 byte + a scale per row; ``quanto_int4``: ``n / 2``
  + scale and shift per group of 128.
- ``torchao_int8_*``: 1 byte + scale and zero point per row; ``torchao_int4_weight``:
  ``n / 2`` + bf16 scale and zero per group (128).

Unstructured pruning (magnitude, wanda, sparsegpt, N:M) keeps dense storage. Tied heads
quantized by any method but ``int8_weight`` get their own quantized copy next to the float
embedding, as the modules do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .modeldims import LinearInfo, ModelDims, model_config, model_dims, selected

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

STRUCTURED_PRUNE = ("heads", "neurons", "layers")
INT4_KERNEL_GROUP_SIZES = (32, 64, 128, 256)  # steps/int4_linear.py KERNEL_GROUP_SIZES
GPTQ_DEFAULT_GROUP_SIZE = 64  # steps/quant_gptq.py DEFAULT_GROUP_SIZE
# peft's default LoRA targets per model type (peft.utils
# TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING), for ``targets: null``
PEFT_DEFAULT_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "gemma3_text": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
}


def field_of(cfg: Any, name: str, default: Any = None) -> Any:
    """A step setting from a config object or a mapping; ``default`` when absent."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def resolve_dtype(dtype: str, dims: ModelDims | None = None) -> str:
    """``float32`` / ``bfloat16`` / ``float16`` (aliases fp32 / bf16 / fp16); ``auto`` is the
    config's ``torch_dtype`` (float32 when it names none)."""
    name = _DTYPE_ALIASES.get(str(dtype), str(dtype))
    if name == "auto":
        got = dims.config_dtype if dims is not None else None
        return got if got in DTYPE_BYTES else "float32"
    if name not in DTYPE_BYTES:
        raise ConfigError(
            f"dtype: {dtype!r} is not one of float32, bfloat16, float16, auto (or fp32 / bf16 "
            "/ fp16)"
        )
    return name


@dataclass(frozen=True)
class Fmt:
    """How one linear layer is stored after a quantize step."""

    method: str
    bits: int = 4
    group_size: int | None = None
    sym: bool = True
    per_channel: bool = True


@dataclass
class Stored:
    """A model as the steps leave it: its shape and the storage of each quantized linear."""

    dims: ModelDims
    formats: dict[str, Fmt] = field(default_factory=dict)
    embedding_in_head: bool = False  # int8_weight on a tied head: the embedding is its view
    extra_params: int = 0  # unmerged LoRA adapters (float32)


# --------------------------------------------------------------------------- storage
def linear_storage(fmt: Fmt, lin: LinearInfo, e: int) -> tuple[int, int, str | None]:
    """(bytes as stored, bytes of a kernel layout the torch runtime adds, note or None)."""
    n, out, inp = lin.in_features * lin.out_features, lin.out_features, lin.in_features
    bias = out * e if lin.bias else 0
    m = fmt.method
    if m == "int8_weight":
        return n + 4 * out + bias, 0, None
    if m == "dynamic_int8":  # + the module's float32 scale and int64 zero point: 12 bytes
        qparams = 16 * out if fmt.per_channel else 16
        return n + qparams + (4 * out if lin.bias else 0) + 12, 0, None
    if m in ("bf16", "fp16"):
        return 2 * n + (2 * out if lin.bias else 0), 0, None
    if m in ("gptq", "awq", "rtn"):
        if fmt.bits != 4 or inp % 8:
            why = f"{fmt.bits}-bit" if fmt.bits != 4 else f"in_features {inp} not a multiple of 8"
            return n * e + bias, 0, f"{m} {why}: simulated on dense weights (no shrink)"
        gs = GPTQ_DEFAULT_GROUP_SIZE if fmt.group_size is None else fmt.group_size
        gs = inp if gs == -1 else gs
        groups = math.ceil(inp / gs)
        stored = n // 2 + out * groups * e + 16 + bias
        if not fmt.sym:
            stored += math.ceil(out / 8) * groups * 4
        kernel = n // 2 + groups * out * 2 * 2 if gs in INT4_KERNEL_GROUP_SIZES else 0
        return stored, kernel, None
    if m == "bnb_int8":
        return n + 4 * out + bias, 0, None
    if m in ("bnb_nf4", "bnb_fp4"):
        blocks = math.ceil(n / (fmt.group_size or 64))
        return n // 2 + blocks + 4 * math.ceil(blocks / 256) + 1024 + bias, 0, None
    if m in ("quanto_int8", "quanto_float8"):
        return n + out * e + bias, 0, None
    if m == "quanto_int4":
        return n // 2 + 2 * out * math.ceil(inp / 128) * e + bias, 0, None
    if m in ("torchao_int8_weight", "torchao_int8_dynamic"):
        return n + 2 * out * e + bias, 0, None
    if m == "torchao_int4_weight":
        return n // 2 + 4 * out * math.ceil(inp / (fmt.group_size or 128)) + bias, 0, None
    return n * e + bias, 0, f"quantize method {m!r}: storage unknown, counted dense"


def weight_bytes(
    state: Stored, e: int, notes: list[str], runtime: str = "torch"
) -> tuple[int, int]:
    """(bytes of the weights as stored, bytes of kernel layouts built at run time)."""
    dims = state.dims
    total = dims.position_params * e if state.embedding_in_head else dims.embedding_params * e
    total += (dims.num_layers * dims.layer_norm_params + dims.final_norm_params) * e
    kernel = 0
    seen: set[str] = set()
    for lin in dims.linears():
        fmt = state.formats.get(lin.name)
        if fmt is None:
            if lin.name == "lm_head":
                total += dims.lm_head_params * e  # 0 when tied to the embedding
            else:
                total += lin.params * e
            continue
        stored, extra, note = linear_storage(fmt, lin, e)
        total += stored
        kernel += extra if runtime == "torch" else 0
        if note and note not in seen:
            seen.add(note)
            notes.append(note)
    if kernel:
        notes.append(
            "int4 layers: the CPU kernel's layout (another ~0.5 byte per weight) counted with "
            "the weights"
        )
    total += 4 * state.extra_params
    return int(total), int(kernel)


# --------------------------------------------------------------------------- the steps
def _key_and_cfg(entry: Any) -> tuple[str | None, Any]:
    if isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
        return entry[0], entry[1]
    if isinstance(entry, Mapping) and len(entry) == 1:
        ((key, cfg),) = entry.items()
        return str(key), cfg
    name = type(entry).__name__.lower()
    for key in ("quantize", "prune", "distill", "lora", "train", "export"):
        if name.startswith(key):
            return key, entry
    return None, entry


def apply_steps(dims: ModelDims, steps: Sequence[Any], notes: list[str]) -> Stored:
    """The stored model after ``steps`` (see the module doc)."""
    state = Stored(dims=dims)
    for i, entry in enumerate(steps or ()):
        key, cfg = _key_and_cfg(entry)
        if key == "quantize":
            _quantize(state, cfg, notes)
        elif key == "prune":
            _prune(state, cfg, notes)
        elif key == "distill":
            state = _distill_student(dims, state, cfg, notes)
        elif key == "lora":
            if not field_of(cfg, "merge", True):
                r = int(field_of(cfg, "r", 8))
                targets = field_of(cfg, "targets")
                chosen = lora_targets(state.dims, targets, field_of(cfg, "ignore", ["lm_head"]))
                state.extra_params += sum(r * (x.in_features + x.out_features) for x in chosen)
                notes.append(f"lora merge: false: {len(chosen)} adapters of rank {r} stay")
        elif key in ("train", "export"):
            pass  # same shape and storage
        else:
            notes.append(f"step {i} ({key or type(entry).__name__}): unknown here, size unchanged")
    return state


def _quantize(state: Stored, cfg: Any, notes: list[str]) -> None:
    dims = state.dims
    method = str(field_of(cfg, "method", "int8_weight"))
    targets = field_of(cfg, "targets") or []
    ignore = field_of(cfg, "ignore", ["lm_head"])
    candidates = [
        x for x in dims.linears() if x.kind == "linear" and x.name not in state.formats
    ]  # quantize takes plain nn.Linear layers only: GPT-2's Conv1D and done layers are skipped
    chosen = [x for x in candidates if selected(x.name, targets, ignore)]
    if not chosen:
        notes.append(
            f"quantize {method}: no linear layer matched targets={targets or ['*']} minus "
            f"ignore={list(ignore or [])}; size unchanged (the step itself would refuse)"
        )
        return
    fmt = Fmt(
        method,
        bits=int(field_of(cfg, "bits", 4)),
        group_size=field_of(cfg, "group_size"),
        sym=bool(field_of(cfg, "sym", True)),
        per_channel=bool(field_of(cfg, "per_channel", True)),
    )
    for x in chosen:
        state.formats[x.name] = fmt
    if dims.tie_word_embeddings and any(x.name == "lm_head" for x in chosen):
        if method == "int8_weight":
            state.embedding_in_head = True
        else:
            notes.append(
                f"quantize {method}: the tied lm_head becomes a quantized copy; the float "
                "embedding stays"
            )


def _prune(state: Stored, cfg: Any, notes: list[str]) -> None:
    method = str(field_of(cfg, "method", "magnitude"))
    if method not in STRUCTURED_PRUNE:
        return  # masks on dense weights: the storage does not change
    dims, fam = state.dims, state.dims.family
    pattern = field_of(cfg, "pattern")
    sparsity = field_of(cfg, "sparsity")
    if pattern:
        n_keep, m = (int(v) for v in str(pattern).split(":"))
        target = 1 - n_keep / m
    else:
        target = 0.5 if sparsity is None else float(sparsity)
    llama_like = fam.linear_kind == "linear" and not fam.fused_qkv and not fam.fused_gate_up
    if method != "layers" and not llama_like:
        notes.append(f"prune {method}: not supported for {dims.model_type}; size unchanged")
        return

    def removed(total: int, what: str) -> int | None:
        r = int(round(total * target))
        if r < 1 or r >= total:
            notes.append(f"prune {method}: sparsity {target} removes {r} of {total} {what}")
            return None
        return r

    if method == "neurons":
        r = removed(dims.intermediate_size, "FFN neurons")
        if r is not None:
            state.dims = dims.replace(intermediate_size=dims.intermediate_size - r)
    elif method == "layers":
        r = removed(dims.num_layers, "decoder layers")
        if r is not None:
            state.dims = dims.replace(num_layers=dims.num_layers - r)
    else:  # heads
        rep = dims.num_heads // dims.num_kv_heads
        unit = str(field_of(cfg, "head_unit", "query")) if rep > 1 else "kv_group"
        if unit == "query":
            r = removed(rep, "query heads per KV group")
            if r is not None:
                state.dims = dims.replace(num_heads=dims.num_kv_heads * (rep - r))
        else:
            r = removed(dims.num_kv_heads, "KV groups")
            if r is not None:
                kv = dims.num_kv_heads - r
                state.dims = dims.replace(num_heads=kv * rep, num_kv_heads=kv)


def _distill_student(base: ModelDims, state: Stored, cfg: Any, notes: list[str]) -> Stored:
    """The student a distill step returns: a layer-dropped copy of the teacher (the recipe's
    baseline, so earlier quantization is not carried over), the model at ``student.path``,
    or the incoming model."""
    student = field_of(cfg, "student")
    keep_every, layers = field_of(student, "keep_every"), field_of(student, "layers")
    path = field_of(student, "path")
    if keep_every:
        return Stored(dims=base.replace(num_layers=len(range(0, base.num_layers, keep_every))))
    if layers:
        return Stored(dims=base.replace(num_layers=len(layers)))
    if path:
        found = model_config(str(path))
        if found is not None:
            return Stored(dims=model_dims(found))
        notes.append(f"distill student {path!r}: no local config.json; size unchanged")
    return state


def lora_targets(dims: ModelDims, targets: Any, ignore: Any) -> list[LinearInfo]:
    """The linears a ``lora`` step adapts: ``targets`` globs (None: peft's defaults for the
    model type) minus ``ignore``; ``ConfigError`` when there is none, as the step raises."""
    if targets is None:
        targets = PEFT_DEFAULT_TARGETS.get(dims.model_type)
        if not targets:
            raise ConfigError(
                f"lora.targets: peft has no default modules for model type "
                f"{dims.model_type!r}; name them, e.g. targets: [q_proj, v_proj]"
            )
    chosen = [x for x in dims.linears() if selected(x.name, targets, ignore)]
    if not chosen:
        raise ConfigError(
            f"lora.targets: no module matched targets={list(targets)} minus "
            f"ignore={list(ignore or [])}"
        )
    return chosen


__all__ = [
    "DTYPE_BYTES",
    "Fmt",
    "PEFT_DEFAULT_TARGETS",
    "Stored",
    "apply_steps",
    "field_of",
    "linear_storage",
    "lora_targets",
    "resolve_dtype",
    "weight_bytes",
]
