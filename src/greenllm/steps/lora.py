"""The ``lora`` step: LoRA / QLoRA recovery fine-tuning through peft, merged back on request.

After pruning or quantizing, a few hundred steps of low-rank adapters on the modules chosen
by ``targets`` / ``ignore`` (module selection as in ``steps/select.py``; ``targets: null`` is
peft's default for the architecture, e.g. ``q_proj``/``v_proj`` on Llama) recover part of
the lost quality while training ~1 % of the parameters. ``method: qlora``
trains adapters on top of a 4-bit bitsandbytes model (put ``quantize: {method: bnb_nf4}``
before it). With ``merge: true`` (default) the adapters are folded into the weights
(``merge_and_unload``), so the result is a plain model with no LoRA modules; pruning masks are
re-applied after the merge so a pruned model stays sparse, which drops the part of the dense
adapter update that falls on pruned weights. ``final_loss`` in the stats is therefore measured
on the returned model (held-out batches if any, else the training batches); with masks,
``loss_before_remask`` is the same loss with the adapters still in place. Training runs in the
shared loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError, first_line, require
from .base import StepContext, StepSpec
from .select import check_patterns, select_modules
from .train import (
    TrainingStepConfig,
    autocast_context,
    causal_lm_loss,
    device_of,
    evaluate_loss,
    step_batches,
    train_loop,
)


@dataclass(frozen=True)
class LoraConfig(TrainingStepConfig):
    """``lora`` step settings (``greenllm.Lora``; validated on construction)."""

    method: Literal["lora", "qlora"] = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: list[str] | None = None  # globs; None: peft's default for the architecture
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    merge: bool = True
    lr: float = 2e-4

    def validate(self) -> None:
        TrainingStepConfig.validate(self)
        if self.r < 1:
            raise ConfigError(f"r: {self.r} must be >= 1")
        if self.alpha <= 0:
            raise ConfigError(f"alpha: {self.alpha} must be > 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: {self.dropout} must be in [0, 1)")
        check_patterns(self)
        if self.method == "qlora" and self.merge:
            raise ConfigError(
                "merge: merging adapters into 4-bit weights re-quantizes them and "
                "loses the recovery; set merge: false with method: qlora"
            )


def _is_4bit(model) -> bool:
    return any(type(m).__name__ == "Linear4bit" for m in model.modules())


def lora_module_count(model) -> int:
    """Modules carrying LoRA adapters (0 after a merge)."""
    return sum(1 for m in model.modules() if hasattr(m, "lora_A"))


def _adaptable(name: str, mod: Any) -> bool:
    import torch.nn as nn

    return isinstance(mod, nn.Linear) or type(mod).__name__ in ("Conv1D", "Linear8bitLt")


def lora_targets(model, cfg: LoraConfig) -> list[str]:
    """Full names of the modules that get adapters (``ConfigError`` when there are none)."""
    targets = cfg.targets
    if targets is None:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        model_type = getattr(getattr(model, "config", None), "model_type", None)
        targets = DEFAULTS.get(model_type)
        if not targets:
            raise ConfigError(
                f"lora.targets: peft has no default modules for model type "
                f"{model_type!r}; name them, e.g. targets: [q_proj, v_proj]"
            )
    chosen = select_modules(
        model, targets, cfg.ignore, candidate=_adaptable, required="lora.targets"
    )
    return [name for name, _ in chosen]


def _apply(model, cfg: LoraConfig, ctx: StepContext):
    autocast_context(cfg.precision, device_of(model))
    if cfg.method == "qlora" and not _is_4bit(model):
        raise ConfigError(
            "lora.method: qlora trains adapters on a 4-bit model; put "
            "{quantize: {method: bnb_nf4}} before this step, or use method: lora"
        )
    if lora_module_count(model):
        raise ConfigError(
            "lora: the model already carries LoRA adapters; merge them first "
            "(merge: true) before adding more"
        )
    peft = require("peft", "peft", "LoRA fine-tuning")
    target_names = lora_targets(model, cfg)
    train_b, eval_b = step_batches(cfg, ctx)
    if cfg.method == "qlora":
        require("bitsandbytes", "bnb", "QLoRA")
        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing
        )
    pcfg = peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=target_names,
        task_type="CAUSAL_LM",
        bias="none",
    )
    meta = getattr(model, "_greenllm", None)
    grad_state = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        pmodel = peft.get_peft_model(model, pcfg)
    except ValueError as exc:
        first = first_line(exc)
        raise ConfigError(
            f"lora.targets: {first} (name the Linear modules to adapt, e.g. "
            "[q_proj, v_proj] for Llama or [c_attn] for GPT-2)"
        ) from None
    trainable = sum(p.numel() for p in pmodel.parameters() if p.requires_grad)
    total = sum(p.numel() for p in pmodel.parameters())
    if cfg.gradient_checkpointing and cfg.method == "lora":
        # checkpointed blocks need an input that requires grad when the embeddings are frozen
        pmodel.enable_input_require_grads()
    report = train_loop(
        pmodel,
        train_b,
        causal_lm_loss,
        cfg.loop_config(),
        eval_b or None,
        ctx.extras.get("train_hooks"),
    )
    adapters = lora_module_count(pmodel)
    amp = autocast_context(cfg.precision, device_of(pmodel))
    loss_batches = eval_b or train_b
    extra: dict[str, Any] = {}
    if cfg.merge:
        from . import prune as prune_mod

        has_masks = bool(prune_mod.masks(pmodel))
        if has_masks:  # the loss of the dense-delta model, before the merge re-masks it
            extra["loss_before_remask"] = evaluate_loss(pmodel, loss_batches, causal_lm_loss, amp)
        out = pmodel.merge_and_unload()
        masked = prune_mod.reapply_masks(out)  # the merged delta is dense: re-prune it
        for n, p in out.named_parameters():  # peft froze the base weights
            p.requires_grad_(grad_state.get(n, True))
    else:
        out, masked = pmodel, 0
    # The loss of the model this step returns (after the merge and re-masking), so the
    # reported number belongs to the returned weights; the training-loop losses above it
    # (first_loss, last_loss, evals) are those of the model with the adapters in place.
    extra["final_loss"] = evaluate_loss(out, loss_batches, causal_lm_loss, amp)
    extra["final_loss_data"] = "eval" if eval_b else "train"
    if meta is not None:
        out._greenllm = meta
    out.eval()
    stats: dict[str, Any] = report.to_dict()
    stats.update(
        method=cfg.method,
        r=cfg.r,
        alpha=cfg.alpha,
        adapted_modules=adapters,
        trainable_params=trainable,
        total_params=total,
        trainable_fraction=trainable / max(total, 1),
        merged=cfg.merge,
        masks_reapplied=masked,
        remasked_after_merge=masked > 0,
        train_batches=len(train_b),
        eval_batches=len(eval_b),
        power_cap_w=cfg.power_cap_w,
        power_mode=cfg.power_mode,
        **extra,
    )
    return out, stats


SPEC = StepSpec(
    key="lora",
    config_cls=LoraConfig,
    apply=_apply,
    summary="LoRA / QLoRA recovery fine-tuning through peft, merged back on request",
)
