"""The ``distill`` step: knowledge distillation from a teacher into a smaller student.

Teacher: ``ctx.teacher`` (the recipe's baseline model), else ``teacher:`` (a model path or hub
id), else the incoming model itself. Student: a layer-dropped copy of the teacher
(``student: {keep_every: 2}`` keeps layers 0, 2, 4...; ``student: {layers: [0, 5, 10]}`` keeps
the given ones), a model loaded from ``student: {path: DIR}``, or, with no student settings,
the incoming model (recovery distillation of a pruned/quantized model from the baseline).

Loss per target token (positions whose next-token label is not -100)::

    alpha_kl * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
  + alpha_ce * cross-entropy(z_s, labels)
  + alpha_hidden * mean-squared error of mapped hidden states

The T^2 factor keeps the soft-target gradients on the same scale as the hard-target ones
when T changes (Hinton et al. 2015). Hidden states are compared as the outputs of student
layer i and teacher layer map[i] (the decoder layers' own outputs on both sides, before any
final norm); by default the layers the student kept. Training runs in
the shared loop of ``steps/train.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..errors import ConfigError, UnsupportedError
from .base import StepContext, StepSpec
from .select import check_patterns, select_modules
from .train import TrainingStepConfig, autocast_context, device_of, step_batches, train_loop

_LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers")
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class StudentConfig(Config):
    """How the student is made (``greenllm.Student``); at most one of keep_every / layers /
    path."""

    keep_every: int | None = None
    layers: list[int] | None = None
    path: str | None = None

    def validate(self) -> None:
        given = [n for n in ("keep_every", "layers", "path") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ConfigError(
                f"{given[1]}: give one of keep_every, layers or path, not {' and '.join(given)}"
            )
        if self.keep_every is not None and self.keep_every < 1:
            raise ConfigError(f"keep_every: {self.keep_every} must be >= 1")
        if self.layers is not None:
            if not self.layers:
                raise ConfigError("layers: the list is empty; keep at least one layer")
            if len(set(self.layers)) != len(self.layers) or any(i < 0 for i in self.layers):
                raise ConfigError(f"layers: {self.layers} must be distinct indices >= 0")

    @property
    def drops_layers(self) -> bool:
        return self.keep_every is not None or self.layers is not None


@dataclass(frozen=True)
class DistillConfig(TrainingStepConfig):
    """``distill`` step settings (``greenllm.Distill``; validated on construction)."""

    method: str = "kd"
    teacher: str | None = None
    student: StudentConfig | None = None
    temperature: float = 2.0
    alpha_kl: float = 1.0
    alpha_ce: float = 0.0
    alpha_hidden: float = 0.0
    hidden_layer_map: list[list[int]] | None = None  # [[student_layer, teacher_layer], ...]
    lr: float = 1e-4
    targets: list[str] = field(default_factory=list)  # student modules that train; []: all
    ignore: list[str] = field(default_factory=list)  # student modules kept frozen

    def validate(self) -> None:
        TrainingStepConfig.validate(self)
        check_patterns(self)
        if self.method != "kd":
            from ..registry import did_you_mean

            hint = did_you_mean(self.method, ["kd"])
            raise ConfigError(
                f"method: unknown distill method {self.method!r}"
                + (f"; did you mean {hint!r}?" if hint else "")
                + " (known: kd)"
            )
        if not self.temperature > 0:
            raise ConfigError(f"temperature: {self.temperature} must be > 0")
        for n in ("alpha_kl", "alpha_ce", "alpha_hidden"):
            if getattr(self, n) < 0:
                raise ConfigError(f"{n}: {getattr(self, n)} must be >= 0")
        if self.alpha_kl + self.alpha_ce + self.alpha_hidden == 0:
            raise ConfigError(
                "alpha_kl, alpha_ce, alpha_hidden: all are 0, so there is "
                "nothing to train on; set alpha_kl: 1.0"
            )
        for i, pair in enumerate(self.hidden_layer_map or []):
            if len(pair) != 2 or min(pair) < 0:
                raise ConfigError(
                    f"hidden_layer_map[{i}]: expected [student_layer, "
                    f"teacher_layer] with indices >= 0, got {pair}"
                )


# ----------------------------------------------------------------------------- students
def _layers_parent(model):
    for path in _LAYER_PATHS:
        parent, obj = None, model
        for part in path.split("."):
            parent, obj = obj, getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and hasattr(obj, "__len__") and len(obj) > 0:
            return parent, path.split(".")[-1], obj
    raise UnsupportedError(
        f"distill: cannot find the decoder layers of {type(model).__name__} "
        f"(looked for {', '.join(_LAYER_PATHS)}); give student: {{path: DIR}}"
    )


def num_layers(model) -> int:
    return len(_layers_parent(model)[2])


def kept_layers(n_layers: int, student: StudentConfig) -> list[int]:
    """Indices of teacher layers a layer-dropped student keeps (always in teacher order)."""
    if student.keep_every is not None:
        keep = list(range(0, n_layers, student.keep_every))
    else:
        keep = sorted(student.layers or [])
        bad = [i for i in keep if i >= n_layers]
        if bad:
            raise ConfigError(
                f"student.layers: {bad} out of range; the teacher has {n_layers} "
                f"layers (0..{n_layers - 1})"
            )
    return keep


def drop_layers(model, keep: list[int]):
    """A deep copy of ``model`` with only the decoder layers in ``keep`` (config updated)."""
    import torch

    parent, attr, layers = _layers_parent(model)
    student = copy.deepcopy(model)
    s_parent, _, s_layers = _layers_parent(student)
    new = torch.nn.ModuleList([s_layers[i] for i in keep])
    for new_idx, layer in enumerate(new):
        for mod in layer.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = new_idx
    setattr(s_parent, attr, new)
    cfg = student.config
    for key in _LAYER_COUNT_KEYS:
        if hasattr(cfg, key) and isinstance(getattr(cfg, key), int):
            setattr(cfg, key, len(keep))
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == len(layers):
        cfg.layer_types = [types[i] for i in keep]
    from ..models import META_ATTR

    if hasattr(student, META_ATTR):
        setattr(student, META_ATTR, copy.deepcopy(getattr(model, META_ATTR)))
    return student


# ----------------------------------------------------------------------------- the loss
def kd_kl(student_logits, teacher_logits, mask, temperature: float):
    """T^2 * KL(p_teacher || p_student) on T-softened logits, mean over positions in ``mask``.

    Shapes: logits ``[..., vocab]``, mask ``[...]`` (bool). Computed in float32."""
    import torch.nn.functional as F

    t = temperature
    s = F.log_softmax(student_logits.float() / t, dim=-1)
    p = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (p.exp() * (p - s)).sum(-1)
    m = mask.to(kl.dtype)
    return (t * t) * (kl * m).sum() / m.sum().clamp_min(1.0)


def default_hidden_map(keep: list[int] | None, n_student: int, n_teacher: int) -> list[list[int]]:
    """Student layer i <-> the teacher layer it was copied from, or spread evenly."""
    if keep is not None:
        return [[i, t] for i, t in enumerate(keep)]
    return [[i, max(0, round((i + 1) * n_teacher / n_student) - 1)] for i in range(n_student)]


class _LayerOutputs:
    """Records the outputs of chosen decoder layers during one forward (a context manager).

    These are the decoder layers' own outputs (the residual stream). ``output_hidden_states``
    is not used: its last entry is the output of the final norm, not of the last layer
    (Llama, GPT-2, ...), so a student's last layer would be compared post-norm against a
    teacher's middle layer pre-norm."""

    def __init__(self, model, indices):
        self.layers = _layers_parent(model)[2]
        self.indices = sorted(set(indices))
        self.out: dict[int, Any] = {}
        self.handles: list[Any] = []

    def __enter__(self):
        def make(i):
            def hook(_module, _args, output):
                self.out[i] = output[0] if isinstance(output, (tuple, list)) else output

            return hook

        self.handles = [self.layers[i].register_forward_hook(make(i)) for i in self.indices]
        return self.out

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return False


def make_kd_loss(teacher, cfg: DistillConfig, hidden_map: list[list[int]] | None):
    """``loss_fn(student, batch)`` for the shared loop."""
    import contextlib

    import torch
    import torch.nn.functional as F

    want_hidden = cfg.alpha_hidden > 0
    s_idx = [si for si, _ in hidden_map or []]
    t_idx = [ti for _, ti in hidden_map or []]

    def loss_fn(student, batch):
        ids, attn, labels = batch["input_ids"], batch.get("attention_mask"), batch["labels"]
        t_rec = _LayerOutputs(teacher, t_idx) if want_hidden else contextlib.nullcontext({})
        s_rec = _LayerOutputs(student, s_idx) if want_hidden else contextlib.nullcontext({})
        with torch.no_grad(), t_rec as t_hidden:
            t_out = teacher(input_ids=ids, attention_mask=attn, use_cache=False)
        with s_rec as s_hidden:
            s_out = student(input_ids=ids, attention_mask=attn, use_cache=False)
        # position t predicts token t+1: the same positions HF's shifted CE uses
        mask = labels[:, 1:] != -100
        s_logits, t_logits = s_out.logits[:, :-1], t_out.logits[:, :-1]
        loss = s_logits.new_zeros((), dtype=torch.float32)
        if cfg.alpha_kl > 0:
            loss = loss + cfg.alpha_kl * kd_kl(s_logits, t_logits, mask, cfg.temperature)
        if cfg.alpha_ce > 0:
            loss = loss + cfg.alpha_ce * F.cross_entropy(
                s_logits.float().reshape(-1, s_logits.shape[-1]),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        if want_hidden:
            tok = (attn if attn is not None else torch.ones_like(ids)).bool()
            m = tok.unsqueeze(-1).to(torch.float32)
            mse = 0.0
            for si, ti in hidden_map:
                # both sides: the output of the decoder layer itself (before any final norm)
                hs = s_hidden[si].float()
                ht = t_hidden[ti].float()
                diff = ((hs - ht) ** 2 * m).sum() / (m.sum() * hs.shape[-1]).clamp_min(1.0)
                mse = mse + diff
            loss = loss + cfg.alpha_hidden * mse / len(hidden_map)
        return loss

    return loss_fn


# ----------------------------------------------------------------------------- the step
def _freeze_unselected(student, cfg: DistillConfig) -> list:
    """Freeze the student's parameters outside targets/ignore; returns those it froze."""
    if not cfg.targets and not cfg.ignore:
        return []
    chosen = select_modules(
        student,
        cfg.targets,
        cfg.ignore,
        required="distill.targets",
        candidate=lambda _, m: any(True for _ in m.parameters(False)),
    )
    train = {id(p) for _, m in chosen for p in m.parameters(recurse=False)}
    frozen = [p for p in student.parameters() if p.requires_grad and id(p) not in train]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def _resolve_teacher(model, cfg: DistillConfig, ctx: StepContext):
    if ctx.teacher is not None:
        return ctx.teacher, "context"
    if cfg.teacher is not None:
        from ..models import load_model

        teacher, _ = load_model(cfg.teacher)
        return teacher.to(device_of(model)), cfg.teacher
    if cfg.student is None or not cfg.student.drops_layers and cfg.student.path is None:
        raise ConfigError(
            "distill.teacher: the student is the incoming model, so a separate "
            "teacher is needed; give teacher: PATH, run it in a recipe (the "
            "baseline is the teacher) or set student: {keep_every: 2}"
        )
    return model, "incoming model"


def _apply(model, cfg: DistillConfig, ctx: StepContext):
    autocast_context(cfg.precision, device_of(model))  # fail before any work
    teacher, teacher_src = _resolve_teacher(model, cfg, ctx)
    n_teacher = num_layers(teacher)
    keep = None
    st = cfg.student or StudentConfig()
    if st.drops_layers:
        keep = kept_layers(n_teacher, st)
        student = drop_layers(teacher, keep)  # a copy: the teacher stays intact
    elif st.path is not None:
        from ..models import load_model

        student, _ = load_model(st.path)
        student = student.to(device_of(model))
    else:
        student = model
    if student is teacher:
        raise ConfigError(
            "distill: the student and the teacher are the same model; set "
            "student: {keep_every: 2} or give teacher: PATH"
        )
    n_student = num_layers(student)
    hidden_map = None
    if cfg.alpha_hidden > 0:
        hidden_map = (
            [list(p) for p in cfg.hidden_layer_map]
            if cfg.hidden_layer_map
            else default_hidden_map(keep, n_student, n_teacher)
        )
        for si, ti in hidden_map:
            if si >= n_student or ti >= n_teacher:
                raise ConfigError(
                    f"hidden_layer_map: [{si}, {ti}] out of range (student has "
                    f"{n_student} layers, teacher {n_teacher})"
                )
        if teacher.config.hidden_size != student.config.hidden_size:
            raise ConfigError(
                "alpha_hidden: teacher and student hidden sizes differ "
                f"({teacher.config.hidden_size} vs {student.config.hidden_size}); "
                "set alpha_hidden: 0"
            )
    if teacher.config.vocab_size != student.config.vocab_size:
        raise ConfigError(
            f"distill: teacher vocabulary ({teacher.config.vocab_size}) and "
            f"student vocabulary ({student.config.vocab_size}) differ; KL needs "
            "the same tokenizer"
        )
    train_b, eval_b = step_batches(cfg, ctx)
    was_training = teacher.training
    teacher.eval()
    requires = [p.requires_grad for p in teacher.parameters()]
    frozen = _freeze_unselected(student, cfg)
    if teacher is not student:
        for p in teacher.parameters():
            p.requires_grad_(False)
    try:
        report = train_loop(
            student,
            train_b,
            make_kd_loss(teacher, cfg, hidden_map),
            cfg.loop_config(),
            eval_b or None,
            ctx.extras.get("train_hooks"),
        )
    finally:
        for p, r in zip(teacher.parameters(), requires):
            p.requires_grad_(r)
        for p in frozen:
            p.requires_grad_(True)
        teacher.train(was_training)
    from ..models import param_count

    stats: dict[str, Any] = report.to_dict()
    stats.update(
        teacher=teacher_src,
        teacher_layers=n_teacher,
        student_layers=n_student,
        kept_layers=keep,
        teacher_params=param_count(teacher),
        student_params=param_count(student),
        temperature=cfg.temperature,
        hidden_layer_map=hidden_map,
        train_batches=len(train_b),
        eval_batches=len(eval_b),
        power_cap_w=cfg.power_cap_w,
        power_mode=cfg.power_mode,
    )
    return student, stats


SPEC = StepSpec(
    key="distill",
    config_cls=DistillConfig,
    apply=_apply,
    summary="knowledge distillation (KL on softened logits, optional CE and "
    "hidden-state MSE) into a layer-dropped or given student",
)
