"""Training-step memory from a model's shape (stdlib only): what autograd keeps per decoder
layer, the trainable parameters of full / partial / LoRA fine-tuning, and the parts of a
step's peak. ``greenllm.memory.estimate_training`` / ``estimate_step`` are the entry points
(their docstrings give the whole model); this module holds the arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .memory_steps import Stored, lora_targets, weight_bytes
from .modeldims import ModelDims, selected


def check_positive(**values: int | None) -> None:
    for name, v in values.items():
        if v is None or v < 1:
            raise ConfigError(f"{name}: must be >= 1, got {v}")


# --------------------------------------------------------------------------- training
def layer_activation_bytes(
    dims: ModelDims,
    tokens: int,
    e: int,
    *,
    autocast_bytes: int | None = None,
    lora: Sequence[Any] = (),
    mask_bytes: int | None = None,
) -> int:
    """Bytes autograd saves for backward in ONE decoder layer over ``tokens`` (batch x seq).

    Derived by listing what each op of a transformers decoder layer saves (and checked by
    counting the tensors ``torch.autograd.graph.saved_tensors_hooks`` receives on
    SmolLM2-135M: 11,145 elements per token and layer in float32, this formula exactly), with
    h hidden, a / kv heads, d head_dim, i intermediate, N norms per layer:

    - each RMSNorm keeps its input, the normalised tensor and its output (the next linears'
      saved input): ``3 N h``;
    - SDPA keeps q, k, v, its output (shared with o_proj's saved input) and a float32
      log-sum-exp per head: ``2 a d + 2 kv d`` (+ ``4 a`` bytes); fused qkv (Phi-3) keeps the
      whole qkv tensor alive through its v view: ``a d + kv d`` more; q/k norms: ``2 (a + kv) d``;
    - the gated MLP keeps gate output, up output, act(gate) and the product (down_proj's
      input): ``4 i`` (GPT-2's fc -> act -> proj: ``2 i``).

    Under autocast (``autocast_bytes`` = 2 for bf16 / fp16) the norms stay float32 but keep
    only input and normalised tensor (``2 N h`` x 4 bytes), every linear saves its own
    lower-precision cast of the norm output (q, k, v, gate, up: ``5 h``; fused: ``2 h``), and
    attention and MLP tensors are in the autocast dtype.

    ``lora``: the ``LinearInfo`` of this layer's adapted linears when the base is frozen
    (LoRA): a frozen linear saves no input, so the norms keep only their input (``N h``), the
    MLP ``3 i`` (down_proj frozen), and each adapter keeps its dropout output and mask (``in``
    x (dtype + ``mask_bytes``) bytes: on CPU dropout's mask is a tensor of the input's dtype,
    on CUDA one byte) and its rank-r projection (float32). Autocast is not itemised for LoRA.
    """
    f = dims.family
    h, a, kv, d, i = (
        dims.hidden_size,
        dims.num_heads,
        dims.num_kv_heads,
        dims.head_dim,
        dims.intermediate_size,
    )
    n = f.norms_per_layer
    attn = 2 * a * d + 2 * kv * d + (a * d + kv * d if f.fused_qkv else 0)
    attn += 2 * (a + kv) * d if f.qk_norm else 0
    mlp = 4 * i if f.gated else 2 * i
    lse = 4 * a
    if lora:
        mlp = 3 * i if f.gated else i
        mask = e if mask_bytes is None else mask_bytes
        adapters = sum(lin.in_features * (e + mask) + 4 * _rank(lin) for lin in lora)
        return tokens * (e * (n * h + attn + mlp) + lse + adapters)
    if autocast_bytes is None:
        return tokens * (e * (3 * n * h + attn + mlp) + lse)
    n_in = (1 if f.fused_qkv else 3) + (1 if f.fused_gate_up or not f.gated else 2)
    c = autocast_bytes
    return tokens * (4 * 2 * n * h + c * (n_in * h + attn + mlp) + lse)


def _rank(lin: Any) -> int:
    return int(getattr(lin, "rank", 8))


@dataclass(frozen=True)
class _Adapter:
    """A LoRA-adapted linear: its name, shape and rank (for ``layer_activation_bytes``)."""

    name: str
    in_features: int
    out_features: int
    rank: int


_OPTIMIZERS = ("adamw", "sgd", "sgd_momentum")
_PRECISIONS = {None: None, "fp32": None, "float32": None, "bf16": 2, "bfloat16": 2}
_PRECISIONS.update({"fp16": 2, "float16": 2})


def _trainable(
    state: Stored, e: int, trainable: Any, lora_rank: int | None, notes: list[str]
) -> tuple[int, int, int, list[Any]]:
    """(trainable params, bytes each, largest trainable tensor in elements, adapters)."""
    dims = state.dims
    if lora_rank is not None:
        if lora_rank < 1:
            raise ConfigError(f"lora_rank: must be >= 1, got {lora_rank}")
        targets = None if trainable == "all" else _patterns(trainable)[0]
        chosen = lora_targets(dims, targets, ["lm_head"])
        adapters = [_Adapter(x.name, x.in_features, x.out_features, lora_rank) for x in chosen]
        n = sum(lora_rank * (x.in_features + x.out_features) for x in chosen)
        biggest = max((lora_rank * max(x.in_features, x.out_features) for x in chosen), default=0)
        notes.append(
            f"LoRA r={lora_rank} on {len(chosen)} linears: {n} trainable parameters (float32)"
        )
        return n, 4, biggest, adapters
    if trainable == "all":
        n = dims.total_params + state.extra_params
        biggest = max(
            [dims.vocab_size * dims.hidden_size]
            + [lin.in_features * lin.out_features for lin in dims.linears(head=False)]
        )
        return n, e, biggest, []
    targets, ignore = _patterns(trainable)
    chosen = [x for x in dims.linears() if selected(x.name, targets, ignore)]
    n = sum(x.params for x in chosen)  # a tied lm_head: the embedding matrix, once
    if not chosen:
        raise ConfigError(
            f"trainable: no linear layer matched targets={targets or ['*']} minus "
            f"ignore={ignore}; nothing would train"
        )
    notes.append(
        f"trainable: {len(chosen)} linear layers ({n} parameters); norms and embeddings "
        "train only through a selected lm_head"
    )
    return n, e, max(x.in_features * x.out_features for x in chosen), []


def _patterns(trainable: Any) -> tuple[list[str], list[str]]:
    if isinstance(trainable, Mapping):
        return list(trainable.get("targets") or []), list(trainable.get("ignore") or [])
    if isinstance(trainable, str):
        return [trainable], []
    return list(trainable), []


def training_parts(
    state: Stored,
    e: int,
    notes: list[str],
    *,
    batch_size: int,
    seq_len: int,
    optimizer: str,
    gradient_checkpointing: bool,
    lora_rank: int | None,
    trainable: Any,
    mixed_precision: str | None,
    torch_device: str,
    head_copies: int = 3,
) -> dict[str, int]:
    """The parts of a training step's peak (see ``estimate_training``)."""
    check_positive(batch_size=batch_size, seq_len=seq_len)
    if optimizer not in _OPTIMIZERS:
        raise ConfigError(f"optimizer: {optimizer!r} is not one of {', '.join(_OPTIMIZERS)}")
    if mixed_precision not in _PRECISIONS:
        raise ConfigError(
            f"mixed_precision: {mixed_precision!r} is not one of bf16, fp16, fp32 (or null)"
        )
    dims = state.dims
    c = _PRECISIONS[mixed_precision]
    tokens = batch_size * seq_len
    weights, kernel = weight_bytes(state, e, notes)
    weights += kernel
    n_train, p, biggest, adapters = _trainable(state, e, trainable, lora_rank, notes)
    grads = n_train * p
    optim = {"adamw": 2, "sgd": 0, "sgd_momentum": 1}[optimizer] * n_train * p
    first = f"{dims.family.layers}.0."
    per_layer = [a for a in adapters if a.name.startswith(first)]  # every layer alike
    cuda = torch_device.startswith("cuda")
    layer = layer_activation_bytes(
        dims, tokens, e, autocast_bytes=c, lora=per_layer, mask_bytes=1 if cuda else e
    )
    if gradient_checkpointing:
        residual = 4 if c else e
        acts = dims.num_layers * tokens * dims.hidden_size * residual + layer
        notes.append("gradient checkpointing: one input per layer kept, one layer recomputed")
    else:
        acts = dims.num_layers * layer
    acts += head_copies * tokens * dims.vocab_size * 4
    acts += 3 * tokens * dims.hidden_size * (c or e)  # final norm (and lm_head's input)
    if c:
        linear_params = dims.vocab_size * dims.hidden_size
        if not gradient_checkpointing:
            linear_params += dims.linear_params
        acts += linear_params * c
        notes.append("autocast keeps a lower-precision copy of the linear weights for backward")
    if optimizer == "adamw":
        temp = n_train * p if cuda else 2 * biggest * p
    else:
        temp = 0
    if temp > acts:
        notes.append("activations: AdamW's step temporaries are larger than the activations")
    parts = {"weights": weights, "gradients": grads, "optimizer": optim}
    parts["activations"] = max(acts, temp)
    if adapters and not cuda:
        notes.append(
            "CPU: with a frozen base no gradient memory is freed for the next step's activations "
            "to reuse, and glibc's heap keeps freed activations: SmolLM2 LoRA measured ~1.4x "
            "this estimate after 3 steps (1.0x with MALLOC_MMAP_THRESHOLD_=131072)"
        )
    return parts
