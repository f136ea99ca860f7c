"""The one training loop behind the ``train``, ``distill`` and ``lora`` steps.

``train_loop(model, batches, loss_fn, cfg, eval_batches=None, hooks=None)`` runs seeded
epochs over a list of batch dicts with gradient accumulation (token-weighted, so
``grad_accum=k`` over k micro-batches gives the gradient of the one large batch), optional
gradient checkpointing, fp32 / bf16 / fp16 autocast, AdamW with a cosine schedule and linear
warm-up, gradient clipping, and early stopping with patience on held-out loss. It records
tokens, time and loss per epoch and every ``log_every_steps`` optimizer steps; hooks
(``on_step_end(step, record)``, ``on_epoch_end(epoch, record)``) let the runner add energy to
those records (a hook that returns a dict has it merged into the record); ``on_train_begin()``
is called once before the first step. Steps never import
meters or control: the runner measures them and applies ``power_cap_w`` / ``power_mode``.

After every optimizer step, pruning masks are re-applied when the model carries them, so a
pruned model stays sparse through fine-tuning.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import Config
from ..errors import ConfigError, GreenLLMError, UnsupportedError
from .base import StepContext, StepSpec

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class EarlyStopping(Config):
    """Stop when held-out loss has not improved by more than ``min_delta`` for ``patience``
    evaluations in a row."""

    patience: int = 2
    min_delta: float = 0.0

    def validate(self) -> None:
        if self.patience < 1:
            raise ConfigError(f"patience: {self.patience} must be >= 1")
        if self.min_delta < 0:
            raise ConfigError(f"min_delta: {self.min_delta} must be >= 0")


@dataclass(frozen=True)
class TrainLoopConfig(Config):
    """Settings of the shared loop (a YAML ``train``/``distill``/``lora`` step has them all)."""

    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; caps epochs
    lr: float = 5e-5
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd keeps no optimizer state (edge RAM)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # progressive precision: "bf16:0.5,fp32" = bf16 for the first half of the steps, then fp32
    precision_schedule: str | None = None
    gradient_checkpointing: bool = False
    early_stopping: EarlyStopping | None = None
    eval_every_steps: int | None = None  # held-out evaluation cadence; default once per epoch
    log_every_steps: int = 10
    shuffle: bool = True
    seed: int = 0
    max_rss_bytes: int | None = None  # host memory budget; exceeded -> one-line error

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs: {self.epochs} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps: {self.max_steps} must be >= 1 or null")
        if not self.lr > 0:
            raise ConfigError(f"lr: {self.lr} must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio: {self.warmup_ratio} must be in [0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio: {self.min_lr_ratio} must be in [0, 1]")
        if self.grad_accum < 1:
            raise ConfigError(f"grad_accum: {self.grad_accum} must be >= 1")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm: {self.max_grad_norm} must be > 0 or null")
        if self.eval_every_steps is not None and self.eval_every_steps < 1:
            raise ConfigError(f"eval_every_steps: {self.eval_every_steps} must be >= 1 or null")
        if self.log_every_steps < 1:
            raise ConfigError(f"log_every_steps: {self.log_every_steps} must be >= 1")
        if self.precision_schedule is not None:
            parse_precision_schedule(self.precision_schedule)
            if self.precision != "fp32":
                raise ConfigError("precision_schedule: replaces precision; leave precision at fp32")

    def loop_config(self) -> TrainLoopConfig:
        """The loop settings alone (a step config subclasses this one)."""
        import dataclasses

        names = [f.name for f in dataclasses.fields(TrainLoopConfig)]
        return TrainLoopConfig(**{n: getattr(self, n) for n in names})


@dataclass(frozen=True)
class TrainingStepConfig(TrainLoopConfig):
    """Loop settings plus data and the hardware settings the runner applies around the step."""

    data: str | list[str] | None = None  # None -> the recipe's calibration data
    task: Literal["lm", "qa", "instruct"] = "lm"
    batch_size: int = 8
    seq_len: int = 256
    eval_fraction: float = 0.0
    max_examples: int | None = None  # lm: blocks of seq_len tokens; qa/instruct: examples
    power_cap_w: float | None = None  # applied by the runner through control.capped()
    power_mode: str | None = None  # Jetson nvpmodel mode, applied by the runner
    # locked GPU clocks (MHz: "1410", "810-1410", "gpu=1410,mem=5001"), applied by the runner
    # through control.capped() next to the power setting (NVML, or a Jetson's GPU devfreq)
    clocks: str | None = None

    def validate(self) -> None:
        TrainLoopConfig.validate(self)
        if self.clocks is not None and not str(self.clocks).strip():
            raise ConfigError("clocks: empty; give MHz such as 1410 or gpu=1410,mem=5001")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: {self.batch_size} must be >= 1")
        if self.seq_len < 2:
            raise ConfigError(f"seq_len: {self.seq_len} must be >= 2")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction: {self.eval_fraction} must be in [0, 1)")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError(f"max_examples: {self.max_examples} must be >= 1 or null")
        if self.early_stopping is not None and self.eval_fraction == 0:
            raise ConfigError(
                "early_stopping: needs held-out data; set eval_fraction > 0 "
                "(e.g. 0.1) or remove early_stopping"
            )
        if self.power_cap_w is not None and self.power_cap_w <= 0:
            raise ConfigError(f"power_cap_w: {self.power_cap_w} must be > 0")


@dataclass(frozen=True)
class TrainConfig(TrainingStepConfig):
    """The ``train`` step: full fine-tuning of every trainable parameter."""

    method: Literal["full"] = "full"


@dataclass
class TrainReport:
    """What the loop did. ``epochs`` and ``log`` are lists of plain-dict records."""

    steps: int = 0
    epochs_run: int = 0
    tokens: int = 0
    duration_s: float = 0.0
    first_loss: float | None = None
    last_loss: float | None = None
    best_eval_loss: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    precision: str = "fp32"
    phases: list[dict[str, Any]] = field(default_factory=list)  # precision per step range
    epochs: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- pieces
def lr_at(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr_ratio: float = 0.0
) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up reaching ``base_lr``
    at step ``warmup_steps - 1``, then cosine decay to ``min_lr_ratio * base_lr`` at the last
    step."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def device_of(model) -> Any:
    for p in model.parameters():
        return p.device
    import torch

    return torch.device("cpu")


def step_batches(cfg: Any, ctx: Any):
    """(train, eval) batches of a training step (train, lora, distill): its own ``data``, else
    the run's calibration text, tokenized with the step's length, batch and split settings."""
    from .data import build_batches

    source = cfg.data if cfg.data is not None else ctx.calibration
    return build_batches(
        ctx.tokenizer,
        source,
        task=cfg.task,
        seq_len=cfg.seq_len,
        batch_size=cfg.batch_size,
        eval_fraction=cfg.eval_fraction,
        seed=cfg.seed,
        max_examples=cfg.max_examples,
    )


def parse_precision_schedule(text: str) -> list[tuple[str, float]]:
    """``"bf16:0.3,fp32"`` -> ``[("bf16", 0.3), ("fp32", 1.0)]``: each phase runs until the
    given fraction of the optimizer steps (cumulative, increasing); the last phase takes the
    rest and needs no fraction."""
    phases: list[tuple[str, float]] = []
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ConfigError("precision_schedule: empty; e.g. bf16:0.5,fp32")
    for i, part in enumerate(parts):
        name, sep, frac = part.partition(":")
        name = name.strip()
        if name not in PRECISIONS:
            raise ConfigError(f"precision_schedule: {name!r} is not one of {', '.join(PRECISIONS)}")
        last = i == len(parts) - 1
        if last:
            end = 1.0 if not sep else float(frac)
            if end != 1.0:
                raise ConfigError("precision_schedule: the last phase runs to the end (1.0)")
        else:
            try:
                end = float(frac)
            except ValueError:
                raise ConfigError(
                    f"precision_schedule: {part!r} needs an end fraction, e.g. bf16:0.5"
                ) from None
            prev = phases[-1][1] if phases else 0.0
            if not prev < end < 1.0:
                raise ConfigError(
                    f"precision_schedule: end fractions must increase within (0, 1); got {end}"
                )
        phases.append((name, end))
    return phases


def precision_at(step: int, total_steps: int, phases: list[tuple[str, float]]) -> str:
    """The precision of optimizer step ``step`` (0-based) of ``total_steps``."""
    for name, end in phases:
        if step < int(round(end * total_steps)):
            return name
    return phases[-1][0]


def autocast_context(precision: str, device) -> Callable[[], Any]:
    """A factory of autocast contexts for ``precision`` on ``device``; raises UnsupportedError
    (one line) where the device cannot run it. Checked before the model is touched."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    dev = torch.device(device).type
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16":
        if dev != "cuda":
            raise UnsupportedError(
                f"precision: fp16 autocast training needs a CUDA GPU (device here: {dev}); "
                "use precision: bf16 or fp32"
            )
        return lambda: torch.autocast("cuda", dtype=torch.float16)
    # bf16
    if dev == "cuda" and not torch.cuda.is_bf16_supported():
        raise UnsupportedError(
            f"precision: bf16 is not supported by {torch.cuda.get_device_name()}; "
            "use precision: fp16 or fp32"
        )
    if dev not in ("cuda", "cpu"):
        raise UnsupportedError(
            f"precision: bf16 autocast is not available on device {dev}; use precision: fp32"
        )
    return lambda: torch.autocast(dev, dtype=torch.bfloat16)


def batch_tokens(batch: dict) -> int:
    """Tokens that carry loss in ``batch`` (labels != -100), else all attended tokens."""
    labels = batch.get("labels")
    if labels is not None:
        # causal LMs predict token t+1 from t: the first position of each row carries no loss
        return int((labels[:, 1:] != -100).sum())
    mask = batch.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    return int(batch["input_ids"].numel())


def causal_lm_loss(model, batch: dict):
    """Mean next-token cross-entropy over tokens with labels != -100."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        labels=batch["labels"],
        use_cache=False,
    )
    return out.loss


def _mask_reapplier(model) -> Callable[[], None] | None:
    """Pruning masks live with the prune step; re-apply them after each update if present."""
    try:
        from . import prune as prune_mod
    except ImportError:  # pragma: no cover - prune ships with greenllm
        return None
    if not prune_mod.masks(model):
        return None
    return lambda: prune_mod.reapply_masks(model)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        "out of memory" in text
        or "can't allocate memory" in text
        or type(exc).__name__ in ("OutOfMemoryError",)
    )


def _rss_bytes() -> int | None:
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return None
    return int(psutil.Process().memory_info().rss)


def _call_hooks(hooks, name: str, *args) -> dict:
    extra: dict = {}
    for h in hooks or ():
        fn = getattr(h, name, None)
        if fn is None and isinstance(h, dict):
            fn = h.get(name)
        if fn is not None:
            got = fn(*args)
            if isinstance(got, dict):
                extra.update(got)
    return extra


def _to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


@contextlib.contextmanager
def _checkpointing(model, enabled: bool):
    if not enabled:
        yield
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UnsupportedError(
            f"gradient_checkpointing: {type(model).__name__} does not "
            "support it; set gradient_checkpointing: false"
        )
    was_cache = getattr(model.config, "use_cache", None)
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False
    try:
        yield
    finally:
        if hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()
        if was_cache is not None:
            model.config.use_cache = was_cache


def evaluate_loss(model, batches: Sequence[dict], loss_fn, amp=contextlib.nullcontext) -> float:
    """Token-weighted mean of ``loss_fn`` over ``batches`` without gradients."""
    import torch

    device = device_of(model)
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            b = _to_device(b, device)
            k = batch_tokens(b)
            with amp():
                total += float(loss_fn(model, b)) * k
            n += k
    model.train(was_training)
    return total / max(n, 1)


# ----------------------------------------------------------------------------- the loop
def train_loop(
    model,
    batches: Sequence[dict],
    loss_fn=None,
    cfg: TrainLoopConfig | None = None,
    eval_batches: Sequence[dict] | None = None,
    hooks=None,
) -> TrainReport:
    """Train ``model`` in place on ``batches`` (a list of batch dicts); see the module doc.

    ``loss_fn(model, batch) -> scalar tensor`` is the mean loss over the batch's target
    tokens (default: causal LM cross-entropy). Returns a ``TrainReport``.
    """
    import torch

    cfg = cfg or TrainLoopConfig()
    cfg.validate()
    loss_fn = loss_fn or causal_lm_loss
    batches = list(batches)
    if not batches:
        raise ConfigError("data: no training batches; give more data or a smaller batch_size")
    if cfg.early_stopping is not None and not eval_batches:
        raise ConfigError(
            "early_stopping: needs held-out data; set eval_fraction > 0 "
            "(e.g. 0.1) or remove early_stopping"
        )
    device = device_of(model)
    phases = (
        parse_precision_schedule(cfg.precision_schedule)
        if cfg.precision_schedule
        else [(cfg.precision, 1.0)]
    )
    # every phase's autocast is checked before the model is touched
    amps = {name: autocast_context(name, device) for name, _ in phases}
    amp = amps[phases[0][0]]
    current = phases[0][0]
    # fp16 needs loss scaling (gradients underflow); bf16 has fp32's range and needs none
    scaler = torch.amp.GradScaler("cuda") if any(n == "fp16" for n, _ in phases) else None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(
            "model: no trainable parameters (every parameter has requires_grad=False)"
        )
    reapply = _mask_reapplier(model)

    windows_per_epoch = math.ceil(len(batches) / cfg.grad_accum)
    total_steps = cfg.epochs * windows_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup_steps = int(round(cfg.warmup_ratio * total_steps))

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(cfg.seed)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.SGD
    opt = opt_cls(
        [g for g in groups if g["params"]],
        lr=lr_at(0, total_steps, warmup_steps, cfg.lr, cfg.min_lr_ratio),
    )

    report = TrainReport(precision=cfg.precision_schedule or cfg.precision)
    es = cfg.early_stopping
    best, bad_evals = math.inf, 0
    step = 0
    t_start = time.perf_counter()
    log_loss, log_tokens, log_t0 = 0.0, 0, t_start

    def run_eval() -> bool:
        """Evaluate held-out loss; returns True when early stopping says stop."""
        nonlocal best, bad_evals
        loss = evaluate_loss(model, eval_batches, loss_fn, amp)
        improved = loss < best - (es.min_delta if es else 0.0)
        if improved:
            best, bad_evals = loss, 0
            report.best_eval_loss, report.best_step = loss, step
        else:
            bad_evals += 1
        report.evals.append({"step": step, "eval_loss": loss, "improved": improved})
        return es is not None and bad_evals >= es.patience

    _call_hooks(hooks, "on_train_begin")
    model.train()
    stop = False
    try:
        with _checkpointing(model, cfg.gradient_checkpointing):
            for epoch in range(cfg.epochs):
                if step >= total_steps or stop:
                    break
                t_epoch = time.perf_counter()
                order = (
                    torch.randperm(len(batches), generator=gen).tolist()
                    if cfg.shuffle
                    else list(range(len(batches)))
                )
                ep_loss, ep_tokens, ep_steps = 0.0, 0, 0
                for w in range(windows_per_epoch):
                    if step >= total_steps:
                        break
                    window = [
                        _to_device(batches[i], device)
                        for i in order[w * cfg.grad_accum : (w + 1) * cfg.grad_accum]
                    ]
                    counts = [batch_tokens(b) for b in window]
                    n_tok = max(sum(counts), 1)
                    for g in opt.param_groups:
                        g["lr"] = lr_at(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr_ratio)
                    current = precision_at(step, total_steps, phases)
                    amp = amps[current]
                    if not report.phases or report.phases[-1]["precision"] != current:
                        report.phases.append(
                            {"precision": current, "from_step": step, "to_step": step}
                        )
                    report.phases[-1]["to_step"] = step + 1
                    use_scaler = scaler if current == "fp16" else None
                    win_loss = 0.0
                    for b, k in zip(window, counts):
                        with amp():
                            loss = loss_fn(model, b)
                        if not torch.isfinite(loss.detach()):
                            raise GreenLLMError(
                                f"training diverged at step {step}: loss is {float(loss)}; "
                                "lower lr or use precision: fp32"
                            )
                        scaled = loss * (k / n_tok)
                        (use_scaler.scale(scaled) if use_scaler else scaled).backward()
                        win_loss += float(loss.detach()) * k
                    if use_scaler:
                        use_scaler.unscale_(opt)
                    if cfg.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    if use_scaler:
                        use_scaler.step(opt)
                        use_scaler.update()
                    else:
                        opt.step()
                    opt.zero_grad(set_to_none=True)
                    if reapply is not None:
                        reapply()
                    step += 1
                    mean = win_loss / n_tok
                    if report.first_loss is None:
                        report.first_loss = mean
                    report.last_loss = mean
                    ep_loss += win_loss
                    ep_tokens += sum(counts)
                    ep_steps += 1
                    report.tokens += sum(counts)
                    log_loss += win_loss
                    log_tokens += sum(counts)
                    if cfg.max_rss_bytes is not None:
                        rss = _rss_bytes()
                        if rss is not None and rss > cfg.max_rss_bytes:
                            raise UnsupportedError(
                                f"batch_size: training used {rss} bytes of host memory, over "
                                f"max_rss_bytes={cfg.max_rss_bytes}; lower batch_size (raise "
                                "grad_accum to keep the effective batch) or enable "
                                "gradient_checkpointing"
                            )
                    rec = {
                        "step": step,
                        "epoch": epoch,
                        "lr": opt.param_groups[0]["lr"],
                        "loss": mean,
                        "tokens": sum(counts),
                    }
                    rec.update(_call_hooks(hooks, "on_step_end", step, rec))
                    if step % cfg.log_every_steps == 0 or step == total_steps:
                        now = time.perf_counter()
                        entry = {
                            "step": step,
                            "epoch": epoch,
                            "tokens": log_tokens,
                            "duration_s": now - log_t0,
                            "loss": log_loss / max(log_tokens, 1),
                            "lr": opt.param_groups[0]["lr"],
                        }
                        entry.update({k: v for k, v in rec.items() if k not in entry})
                        report.log.append(entry)
                        log_loss, log_tokens, log_t0 = 0.0, 0, now
                    if eval_batches and cfg.eval_every_steps and step % cfg.eval_every_steps == 0:
                        if run_eval():
                            stop = True
                            report.stopped_early = True
                            break
                eval_loss = None
                if eval_batches and not cfg.eval_every_steps and not stop:
                    if run_eval():
                        stop = True
                        report.stopped_early = True
                    eval_loss = report.evals[-1]["eval_loss"]
                elif report.evals:
                    eval_loss = report.evals[-1]["eval_loss"]
                record = {
                    "epoch": epoch,
                    "steps": ep_steps,
                    "tokens": ep_tokens,
                    "duration_s": time.perf_counter() - t_epoch,
                    "train_loss": ep_loss / max(ep_tokens, 1),
                    "eval_loss": eval_loss,
                }
                record.update(_call_hooks(hooks, "on_epoch_end", epoch, record))
                report.epochs.append(record)
                report.epochs_run = epoch + 1
    except GreenLLMError:
        opt.zero_grad(set_to_none=True)
        raise
    except (RuntimeError, MemoryError) as exc:
        opt.zero_grad(set_to_none=True)
        if _is_oom(exc):
            raise UnsupportedError(
                f"batch_size: the batch does not fit in {device.type} memory "
                f"({type(exc).__name__}); "
                "lower batch_size (raise grad_accum to keep the effective batch) or enable "
                "gradient_checkpointing"
            ) from None
        raise
    finally:
        model.eval()
    report.steps = step
    report.duration_s = time.perf_counter() - t_start
    return report


# ----------------------------------------------------------------------------- the train step
def _apply(model, cfg: TrainConfig, ctx: StepContext):
    for name, _ in (
        parse_precision_schedule(cfg.precision_schedule)
        if cfg.precision_schedule
        else [(cfg.precision, 1.0)]
    ):
        autocast_context(name, device_of(model))  # fail before reading data
    train_b, eval_b = step_batches(cfg, ctx)
    hooks = ctx.extras.get("train_hooks")
    report = train_loop(model, train_b, causal_lm_loss, cfg.loop_config(), eval_b or None, hooks)
    stats = report.to_dict()
    stats.update(
        task=cfg.task,
        batch_size=cfg.batch_size,
        train_batches=len(train_b),
        eval_batches=len(eval_b),
        power_cap_w=cfg.power_cap_w,
        power_mode=cfg.power_mode,
    )
    return model, stats


SPEC = StepSpec(
    key="train",
    config_cls=TrainConfig,
    apply=_apply,
    summary="fine-tune every parameter on text, QA or instruction data",
)
