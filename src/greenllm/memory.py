"""Will it fit? Peak memory of a cell estimated from the model config, before anything loads.

Stdlib only (no torch): ``greenllm validate`` and the runner call it on a bare Jetson.

- ``estimate_inference(config, dtype=, steps=, batch_size=, context_tokens=, ...)``: the
  weights as the compression steps store them, the KV cache, the transient activations of
  one forward, and the process baseline (``RUNTIME_BYTES``).
- ``estimate_training(config, dtype=, batch_size=, seq_len=, optimizer=, ...)`` and
  ``estimate_step(config, dtype, key, cfg)`` (the ``train`` / ``distill`` / ``lora`` steps of
  a recipe): weights, gradients, optimizer state and activations at the peak of a step.
- ``usable_memory_bytes(profile)``: a device profile's memory minus the reserve this module
  assumes for the OS (``system_reserve_bytes``); ``check_fit(estimate, usable, name)``: None
  or ``"does not fit: needs ~X GiB, <device> has Y GiB"``.

Every number is bytes. How each part is derived is in the docstrings below and in
docs/devices.md ("Will it fit?"); ``benchmarks/memory_estimate.py`` checks the estimates
against measured peak RSS of SmolLM2-135M on a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .memory_steps import DTYPE_BYTES, Stored, apply_steps, field_of, resolve_dtype, weight_bytes
from .memory_train import check_positive, layer_activation_bytes, training_parts
from .modeldims import ModelDims, model_config, model_dims

MIB = 1024**2
GIB = 1024**3

# The process baseline: peak RSS of a Python process that has imported torch, transformers'
# Llama model code and greenllm (models, bench) and loaded SmolLM2's 49k-token tokenizer,
# before any weight is read. Measured here with resource.getrusage(RUSAGE_SELF).ru_maxrss:
# 449.5 MiB (x86-64, CPU torch 2.13, transformers 5.24, Python 3.11; `import torch` alone is
# 223 MiB, the Llama model code 136 MiB more, the tokenizer 59 MiB). A CUDA context (Jetson,
# discrete GPU) comes on top and is not in this figure: pass runtime_bytes= where it matters.
RUNTIME_BYTES: dict[str, int] = {"torch": 450 * MIB}

# The OS share assumed on boards with a fixed memory size (not measured here: no board on
# this machine). A Jetson's memory is one pool for CPU and GPU, and the kernel's carve-outs
# (firmware, display) and JetPack's Ubuntu desktop come out of it: `free` on an "8 GB" Orin
# Nano typically shows ~7.4 GiB total, and an idle JetPack 6 desktop takes roughly 1 GiB more.
# So 1.5 GiB on 8 GiB boards, 2 GiB on larger ones, and 1 GiB on 4 GiB boards, which leave
# too little for models with the desktop running (disable it: `sudo systemctl set-default
# multi-user.target`). Raspberry Pi OS: 0.75 GiB. The measured number of a board (MemAvailable
# of /proc/meminfo, idle) is better: give it as override_bytes.
JETSON_RESERVE_BYTES: tuple[tuple[int, int], ...] = (
    (4 * GIB, 1 * GIB),
    (8 * GIB, 3 * GIB // 2),
)
JETSON_LARGE_RESERVE_BYTES = 2 * GIB
SBC_RESERVE_BYTES = 3 * GIB // 4
LOCAL_RESERVE_BYTES = 1 * GIB  # this machine, when its memory is read with psutil

_LABELS = {
    "weights": "weights",
    "teacher": "teacher",
    "kv_cache": "KV cache",
    "gradients": "gradients",
    "optimizer": "optimizer",
    "activations": "activations",
    "runtime": "runtime",
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory as named parts (bytes); their sum is the estimated peak."""

    parts_bytes: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return int(sum(self.parts_bytes.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_bytes": self.total_bytes,
            "parts_bytes": dict(self.parts_bytes),
            "notes": list(self.notes),
        }

    def describe(self) -> str:
        """``~1.23 GiB (weights 0.50, KV cache 0.02, activations 0.10, runtime 0.60)``."""
        parts = ", ".join(
            f"{_LABELS.get(k, k.replace('_', ' '))} {v / GIB:.2f}"
            for k, v in self.parts_bytes.items()
        )
        return f"~{self.total_bytes / GIB:.2f} GiB ({parts})"


def _dims(config: Mapping | ModelDims) -> ModelDims:
    return config if isinstance(config, ModelDims) else model_dims(config)


def _runtime(runtime: str, runtime_bytes: int | None, notes: list[str]) -> int:
    if runtime_bytes is not None:
        return int(runtime_bytes)
    if runtime not in RUNTIME_BYTES:
        notes.append(
            f"runtime {runtime!r}: its own baseline is not measured; the torch process "
            "baseline is used (greenllm runs it from a process that has imported torch)"
        )
    return RUNTIME_BYTES.get(runtime, RUNTIME_BYTES["torch"])


# --------------------------------------------------------------------------- inference
def estimate_inference(
    config: Mapping | ModelDims,
    *,
    dtype: str = "float32",
    steps: Sequence[Any] = (),
    batch_size: int = 1,
    context_tokens: int | None = None,
    prefill_tokens: int | None = None,
    logits_tokens: int | None = None,
    runtime: str = "torch",
    runtime_bytes: int | None = None,
) -> MemoryEstimate:
    """Peak memory of running the model after ``steps`` (a recipe variant's parsed
    ``[(key, config)]``) at ``batch_size`` sequences of ``context_tokens`` tokens.

    - weights: as the steps store them (``memory_steps.linear_storage`` per method: int8
      ~1 byte per weight + scales, packed 4-bit ~0.5 byte + group scales, casts 2 bytes;
      structured pruning and layer-dropped students shrink the shape; unstructured pruning
      keeps dense storage).
    - KV cache: ``2 x layers x kv_heads x head_dim x context_tokens x batch x dtype bytes``.
    - activations: the transient peak of one prefill forward: the logits ``batch x
      logits_tokens x vocab x 4`` (float32, as the evaluators score them) plus one layer's
      residual, normed input and MLP intermediates ``batch x prefill_tokens x (2 hidden + 3
      intermediate) x dtype bytes`` (fused SDPA attention: no tokens^2 score matrix).
    - runtime: ``RUNTIME_BYTES[runtime]`` (or ``runtime_bytes``).

    ``context_tokens`` defaults to the model's ``max_position_embeddings`` (the worst case);
    ``prefill_tokens`` to ``context_tokens``; ``logits_tokens`` to ``prefill_tokens`` (pass 1
    for bench's decoding, which keeps the last position's logits only).
    """
    dims = _dims(config)
    e = DTYPE_BYTES[resolve_dtype(dtype, dims)]
    notes: list[str] = []
    state = apply_steps(dims, steps, notes)
    dims = state.dims
    if context_tokens is None:
        if dims.max_position_embeddings is None:
            raise ConfigError(
                "context_tokens: not given and the model config has no max_position_embeddings"
            )
        context_tokens = dims.max_position_embeddings
        notes.append(
            f"context: the model's full {context_tokens} tokens (context_tokens not given)"
        )
    check_positive(batch_size=batch_size, context_tokens=context_tokens)
    prefill = prefill_tokens if prefill_tokens is not None else context_tokens
    logit_tok = logits_tokens if logits_tokens is not None else prefill
    weights, kernel = weight_bytes(state, e, notes, runtime=runtime)
    kv = 2 * dims.num_layers * dims.num_kv_heads * dims.head_dim * context_tokens * batch_size * e
    mlp = (3 if dims.family.gated else 2) * dims.intermediate_size
    acts = batch_size * prefill * (2 * dims.hidden_size + mlp) * e
    acts += batch_size * logit_tok * dims.vocab_size * 4
    parts = {
        "weights": weights + kernel,
        "kv_cache": kv,
        "activations": acts,
        "runtime": _runtime(runtime, runtime_bytes, notes),
    }
    return MemoryEstimate(parts, notes)


def estimate_training(
    config: Mapping | ModelDims,
    *,
    dtype: str = "float32",
    batch_size: int,
    seq_len: int,
    optimizer: str = "adamw",
    gradient_checkpointing: bool = False,
    lora_rank: int | None = None,
    trainable: str | Sequence[str] | Mapping[str, Any] = "all",
    mixed_precision: str | None = None,
    torch_device: str = "cpu",
) -> MemoryEstimate:
    """Peak memory of a training step in greenllm's loop (``steps/train.py``), steady state.

    Parts (bytes), for P trainable parameters of ``p`` bytes each (the parameter dtype:
    torch keeps gradients and AdamW's ``exp_avg`` / ``exp_avg_sq`` in it):

    - weights: every parameter at ``dtype``; gradients: ``P p``;
    - optimizer: AdamW ``2 P p``; SGD without momentum 0 (the loop's ``sgd``), with momentum
      ``P p`` (``sgd_momentum``);
    - activations: ``layer_activation_bytes`` x layers at ``batch_size x seq_len`` tokens;
      with gradient checkpointing (transformers checkpoints each decoder layer) only each
      layer's input hidden state (``tokens x h``) plus one layer recomputed in backward; plus
      the loss head: float32 logits, their log-softmax (kept) and its gradient: ``3 x tokens x
      vocab x 4``; under autocast also the lower-precision copies of the linear weights that
      autocast caches for backward (only ``lm_head``'s with checkpointing).

    The peak is the sum of the parts. Gradients and activations are not all live at one
    instant (backward frees activations as it makes gradients, and ``zero_grad(set_to_none=
    True)`` frees the gradients before the next forward), but the memory stays with the
    process: measured on SmolLM2-135M, freeing 0.5 GiB of gradients lowered RSS by 0.1 GiB
    (glibc keeps small freed chunks in its heap; PyTorch's CUDA caching allocator keeps freed
    blocks reserved), so the next step's activations come mostly from new pages, and with
    ``grad_accum`` > 1 the gradients are live while the next micro-batch's activations are
    built. AdamW's step temporaries reuse the freed activation memory: ``activations`` is the
    larger of the two (on CPU ``sqrt`` / ``div`` of one tensor at a time, 2 x the largest
    trainable tensor; on CUDA the foreach kernels', one copy of all trainable parameters).
    This is the steady state (step 2 on): the first step has no optimizer state during its
    forward and peaks lower.

    ``lora_rank``: LoRA adapters of that rank (float32, peft's default) on the linears that
    ``trainable`` selects (``"all"``: peft's default targets for the model type, e.g.
    ``q_proj`` / ``v_proj``; or glob patterns), the base frozen (activations: the frozen-base
    count of ``layer_activation_bytes``). Without it ``trainable`` is ``"all"``, glob
    patterns of the linears that train, or ``{"targets": [...], "ignore": [...]}`` (the
    distill step's selection; activations are then counted as in full training).
    ``mixed_precision``: ``bf16`` / ``fp16`` autocast (``precision`` of the step).
    """
    dims = _dims(config)
    notes: list[str] = []
    state = Stored(dims=dims)
    parts = training_parts(
        state,
        DTYPE_BYTES[resolve_dtype(dtype, dims)],
        notes,
        batch_size=batch_size,
        seq_len=seq_len,
        optimizer=optimizer,
        gradient_checkpointing=gradient_checkpointing,
        lora_rank=lora_rank,
        trainable=trainable,
        mixed_precision=mixed_precision,
        torch_device=torch_device,
    )
    parts["runtime"] = RUNTIME_BYTES["torch"]
    return MemoryEstimate(parts, notes)


# --------------------------------------------------------------------------- recipe steps
_PRECISION_OF = {"fp32": None, "bf16": "bf16", "fp16": "fp16"}


def _step_precisions(cfg: Any) -> list[str | None]:
    schedule = field_of(cfg, "precision_schedule")
    if schedule:
        names = [part.split(":")[0].strip() for part in str(schedule).split(",") if part.strip()]
        return [_PRECISION_OF.get(n) for n in names] or [None]
    return [_PRECISION_OF.get(str(field_of(cfg, "precision", "fp32")))]


def estimate_step(
    config: Mapping | ModelDims,
    dtype: str,
    key: str,
    cfg: Any,
    *,
    prior_steps: Sequence[Any] = (),
    torch_device: str = "cpu",
) -> MemoryEstimate | None:
    """Peak memory of one training step of a recipe (``train``, ``distill``, ``lora``), read
    from its config object (or mapping): ``batch_size``, ``seq_len``, ``optimizer``,
    ``gradient_checkpointing``, ``precision`` / ``precision_schedule`` (the most demanding
    phase counts). ``prior_steps``: the variant's steps before this one (a ``lora`` after
    ``quantize: bnb_nf4`` trains on the 4-bit weights). None for other steps (their working
    memory, such as calibration buffers, is not modelled).

    - ``train``: full fine-tuning of every parameter.
    - ``lora``: adapters of rank ``r`` on ``targets`` (peft's defaults when null); with
      ``merge: false`` the adapters stay in the model.
    - ``distill``: the student trains (layer-dropped copy of the teacher with ``student:
      {keep_every | layers}``, the model of ``student.path``, else the incoming model) while
      the teacher (the baseline, or ``teacher:``) runs forward: its weights are the
      ``teacher`` part; the KL loss keeps six ``tokens x vocab`` float32 tensors instead of
      three (teacher and student logits, both log-softmaxes, the teacher's probabilities and
      the difference being reduced).
    """
    if key not in ("train", "distill", "lora"):
        return None
    base = _dims(config)
    e = DTYPE_BYTES[resolve_dtype(dtype, base)]
    notes: list[str] = []
    state = apply_steps(base, prior_steps, notes)
    common: dict[str, Any] = {
        "batch_size": int(field_of(cfg, "batch_size", 8)),
        "seq_len": int(field_of(cfg, "seq_len", 256)),
        "optimizer": str(field_of(cfg, "optimizer", "adamw")),
        "gradient_checkpointing": bool(field_of(cfg, "gradient_checkpointing", False)),
        "torch_device": torch_device,
    }
    teacher_bytes = 0
    head_copies = 3
    lora_rank = None
    trainable: Any = "all"
    if key == "lora":
        lora_rank = int(field_of(cfg, "r", 8))
        targets = field_of(cfg, "targets")
        trainable = "all" if targets is None else list(targets)
    elif key == "distill":
        teacher, student = _distill_models(base, state, cfg, notes)
        teacher_bytes, _ = weight_bytes(teacher, e, notes)  # its logits: in head_copies
        state = student
        head_copies = 6 if float(field_of(cfg, "alpha_kl", 1.0)) > 0 else 3
        trainable = {
            "targets": list(field_of(cfg, "targets") or []),
            "ignore": list(field_of(cfg, "ignore") or []),
        }
        if not trainable["targets"] and not trainable["ignore"]:
            trainable = "all"
    best: dict[str, int] | None = None
    for precision in _step_precisions(cfg):
        step_notes: list[str] = []
        parts = training_parts(
            state,
            e,
            step_notes,
            lora_rank=lora_rank,
            trainable=trainable,
            mixed_precision=precision,
            head_copies=head_copies,
            **common,
        )
        if best is None or sum(parts.values()) > sum(best.values()):
            best, best_notes = parts, step_notes
    assert best is not None
    best["runtime"] = RUNTIME_BYTES["torch"]
    if teacher_bytes:
        best = {"weights": best["weights"], "teacher": teacher_bytes, **best}
    notes += best_notes
    return MemoryEstimate(best, notes)


def _distill_models(
    base: ModelDims, state: Stored, cfg: Any, notes: list[str]
) -> tuple[Stored, Stored]:
    """(teacher, student) of a distill step as stored models."""
    teacher = Stored(dims=base)
    src = field_of(cfg, "teacher")
    if src:
        found = model_config(str(src))
        if found is None:
            notes.append(f"distill teacher {src!r}: no local config; the baseline's shape is used")
        else:
            teacher = Stored(dims=model_dims(found))
    student_cfg = field_of(cfg, "student")
    keep_every = field_of(student_cfg, "keep_every") if student_cfg is not None else None
    layers = field_of(student_cfg, "layers") if student_cfg is not None else None
    path = field_of(student_cfg, "path") if student_cfg is not None else None
    if keep_every:
        n = len(range(0, teacher.dims.num_layers, int(keep_every)))
        return teacher, Stored(dims=teacher.dims.replace(num_layers=n))
    if layers:
        return teacher, Stored(dims=teacher.dims.replace(num_layers=len(layers)))
    if path:
        found = model_config(str(path))
        if found is not None:
            return teacher, Stored(dims=model_dims(found))
        notes.append(f"distill student {path!r}: no local config; the incoming model is used")
    return teacher, state


# --------------------------------------------------------------------------- devices
def system_reserve_bytes(profile: Any) -> tuple[int, str]:
    """The memory this module assumes the OS keeps on a board of ``profile`` (see the
    constants above for why)."""
    mem = int(profile.memory_bytes or 0)
    if profile.kind == "jetson":
        reserve = next(
            (r for up_to, r in JETSON_RESERVE_BYTES if mem <= up_to), JETSON_LARGE_RESERVE_BYTES
        )
        return reserve, (
            f"{_gib(mem)} GiB shared by CPU and GPU, minus {_gib(reserve)} GiB assumed for "
            "the kernel's carve-outs, the OS and the desktop"
        )
    if profile.kind == "sbc":
        return SBC_RESERVE_BYTES, (
            f"{_gib(mem)} GiB minus {_gib(SBC_RESERVE_BYTES)} GiB assumed for the OS"
        )
    return 0, f"{_gib(mem)} GiB (no reserve assumed)"


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}".rstrip("0").rstrip(".")


def usable_memory_bytes(
    profile: Any,
    *,
    override_bytes: int | None = None,
    local: bool = False,
    nvml: Any = "auto",
) -> tuple[int | None, str]:
    """(bytes a cell may use on a device of ``profile``, the assumption in words).

    ``override_bytes`` (measured, e.g. ``MemAvailable`` of the board) wins. A profile with a
    memory size gives it minus ``system_reserve_bytes``. Profiles without one (``cpu``,
    ``nvidia-gpu``) are unknown (None) unless ``local``: then this machine's memory is read
    (the first GPU's memory through NVML for ``nvidia-gpu``; ``psutil``'s total memory minus
    ``LOCAL_RESERVE_BYTES`` otherwise).
    """
    if override_bytes is not None:
        if override_bytes < 1:
            raise ConfigError(f"memory: must be > 0 bytes, got {override_bytes}")
        return int(override_bytes), f"{_gib(override_bytes)} GiB as given"
    if profile.memory_bytes:
        reserve, why = system_reserve_bytes(profile)
        return int(profile.memory_bytes) - reserve, f"{profile.title}: {why}"
    if not local:
        return None, f"{profile.title}: memory unknown (the profile has no fixed size)"
    if profile.kind == "gpu":
        total = _nvml_memory(nvml)
        if total is not None:
            return total, f"{profile.title}: {_gib(total)} GiB of GPU memory (NVML)"
    import psutil

    total = int(psutil.virtual_memory().total)
    return total - LOCAL_RESERVE_BYTES, (
        f"this machine: {_gib(total)} GiB (psutil) minus {_gib(LOCAL_RESERVE_BYTES)} GiB "
        "assumed for the OS"
    )


def _nvml_memory(nvml: Any) -> int | None:
    from .devices import nvml_first_gpu

    if nvml == "auto":
        from .meters.nvml import load_pynvml

        nvml = load_pynvml()
    return nvml_first_gpu(nvml, lambda nv, h: int(nv.nvmlDeviceGetMemoryInfo(h).total))


def check_fit(estimate: MemoryEstimate, usable_bytes: int | None, device_name: str) -> str | None:
    """None when ``estimate`` fits in ``usable_bytes`` (or the memory is unknown), else
    ``"does not fit: needs ~X GiB, <device> has Y GiB"``."""
    if usable_bytes is None or estimate.total_bytes <= usable_bytes:
        return None
    return (
        f"does not fit: needs ~{estimate.total_bytes / GIB:.2f} GiB, "
        f"{device_name} has {usable_bytes / GIB:.2f} GiB"
    )


__all__ = [
    "GIB",
    "MemoryEstimate",
    "RUNTIME_BYTES",
    "check_fit",
    "estimate_inference",
    "estimate_step",
    "estimate_training",
    "layer_activation_bytes",
    "model_config",
    "model_dims",
    "system_reserve_bytes",
    "usable_memory_bytes",
]
