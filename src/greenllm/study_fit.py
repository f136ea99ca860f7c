"""Will it fit? The memory check of a study's cells, before any work starts (no torch).

For every (model, variant, device) cell: the peak memory estimate of ``greenllm.memory`` for
inference (the stored weights after the variant's steps, the KV cache at the workload's
length and batch, activations, the runtime) against the device's usable memory (its profile
minus the stated reserve, or ``memory_gib``). A cell that does not fit is marked
"does not fit: needs ~X GiB, <device> has Y GiB" and skipped; the rest of the study runs. When
a group's baseline does not fit, its variants are skipped too (nothing to pair them with).
Compression runs on ``compress_on``: a training step's estimate is checked against that
machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
DEFAULT_PROMPT_TOKENS = 256  # when the prompts cannot be read: a stated assumption
CHARS_PER_TOKEN = 3.0  # conservative (English BPE averages ~4): over-estimates the context


@dataclass
class CellFit:
    model: str
    variant: str
    device: str
    estimate: Any | None  # greenllm.memory.MemoryEstimate
    usable_bytes: int | None
    usable_note: str
    verdict: str | None  # None: fits (or unknown); else "does not fit: ..."
    note: str = ""


def _prompt_tokens(recipe: Any) -> int:
    """The longest prompt's length in tokens, estimated from characters (no tokenizer)."""
    prompts = recipe.workload.prompts
    texts: list[str] = []
    try:
        if isinstance(prompts, list):
            texts = [str(p) for p in prompts]
        else:
            src = str(prompts)
            if src.startswith("builtin:"):
                from .builtin_data import resolve_data

                src = str(resolve_data(src, "workload.prompts"))
            p = Path(src)
            if not p.is_absolute() and not p.exists():
                p = recipe.base_dir / p
            texts = p.read_text(encoding="utf-8").splitlines()
    except Exception:  # noqa: BLE001 - an estimate: the prompts are checked where they load
        return DEFAULT_PROMPT_TOKENS
    longest = max((len(t) for t in texts if t.strip()), default=0)
    return max(1, int(longest / CHARS_PER_TOKEN) + 1) if longest else DEFAULT_PROMPT_TOKENS


def _eval_estimates(cfg: dict, spec: Any, steps: list, recipe: Any) -> list[tuple[str, Any]]:
    """The evaluations' forward passes (a batch of full windows, logits for every token)."""
    from .memory import estimate_inference

    out = []
    for key, ecfg in recipe.evals:
        length = getattr(ecfg, "max_length", None)
        if not length:
            continue  # the model's own window: not modelled (a note in the docs)
        est = estimate_inference(
            cfg,
            dtype=spec.dtype,
            steps=steps,
            batch_size=int(getattr(ecfg, "batch_size", 1) or 1),
            context_tokens=int(length),
            runtime=recipe.workload.runtime,
        )
        out.append((f"eval {key}", est))
    return out


def fit_cells(recipe: Any, units: list[Any], *, only_device: str | None = None) -> list[CellFit]:
    """The estimate of every planned cell (the units of ``runner.plan``): the larger of the
    benchmark (the workload's batch and length, logits of the last token) and the evaluations
    with a stated ``max_length``. A training step is checked against the machine it runs on
    (``compress_on``)."""
    from .devices import detect_device, get_profile
    from .memory import check_fit, estimate_inference, estimate_step, usable_memory_bytes
    from .modeldims import model_config

    devices = {d.name: d for d in recipe.devices}
    specs = dict(recipe.model_list())
    prompt = _prompt_tokens(recipe)
    context = prompt + int(recipe.workload.max_new_tokens)
    configs: dict[str, dict | None] = {}
    out: list[CellFit] = []

    def usable_on(dev: Any) -> tuple[int | None, str, str]:
        local = dev is None or dev.via == "local" or dev.name == only_device
        profile = get_profile(dev.profile) if dev is not None else detect_device().profile
        override = int(dev.memory_gib * GIB) if dev is not None and dev.memory_gib else None
        usable, note = usable_memory_bytes(profile, override_bytes=override, local=local)
        return usable, note, dev.name if dev is not None else "local"

    compress_dev = devices.get(recipe.compress_on)
    for u in units:
        mname = u.model
        spec = specs[mname]
        if mname not in configs:
            src = str(spec.id)
            p = Path(src).expanduser()
            if not p.is_absolute() and not p.exists() and (recipe.base_dir / p).exists():
                src = str(recipe.base_dir / p)
            configs[mname] = model_config(src)
        cfg = configs[mname]
        dev = devices.get(u.device) if u.device else None
        usable, unote, dname = usable_on(dev)
        if cfg is None:
            out.append(
                CellFit(
                    mname,
                    u.name,
                    dname,
                    None,
                    usable,
                    unote,
                    None,
                    f"no config.json for {spec.id!r}: fit not checked",
                )
            )
            continue
        cands = [
            (
                "bench",
                estimate_inference(
                    cfg,
                    dtype=spec.dtype,
                    steps=u.steps,
                    batch_size=int(recipe.workload.batch_size),
                    context_tokens=context,
                    prefill_tokens=prompt,
                    logits_tokens=1,
                    runtime=(dev.runtime if dev is not None and dev.runtime else None)
                    or recipe.workload.runtime,
                ),
            )
        ] + _eval_estimates(cfg, spec, u.steps, recipe)
        what, est = max(cands, key=lambda c: c[1].total_bytes)
        verdict = check_fit(est, usable, dname) if usable is not None else None
        note = f"peak: {what}" if usable is not None else "usable memory unknown: not checked"
        # compression: a training step must fit on the machine it runs on
        for i, (key, scfg) in enumerate(u.steps):
            tr = estimate_step(cfg, spec.dtype, key, scfg, prior_steps=u.steps[:i])
            if tr is None:
                continue
            c_usable, _, c_name = usable_on(compress_dev)
            t_verdict = check_fit(tr, c_usable, c_name) if c_usable is not None else None
            if t_verdict and not verdict:
                verdict, est, note = f"{t_verdict} (step {i + 1}, {key})", tr, f"peak: {key}"
        out.append(CellFit(mname, u.name, dname, est, usable, unote, verdict, note))
    return out


def mark_unfit(recipe: Any, units: list[Any], log: Any, *, only_device: str | None = None) -> None:
    """Set ``unit.skip`` on the cells that will not fit (and on the variants of a group whose
    baseline does not), logging each; the rest of the study runs."""
    fits = fit_cells(recipe, units, only_device=only_device)
    base_skip: dict[tuple, str] = {}
    for u, f in zip(units, fits):
        if f.verdict:
            u.skip = f.verdict
            log(f"{u.name} [{u.model} @ {f.device}]: {f.verdict} (not run)")
            if u.name == "baseline":
                base_skip[(u.model, u.device)] = f.verdict
    for u in units:
        b = base_skip.get((u.model, u.device))
        if b and not u.skip:
            u.skip = f"skipped: the baseline {b}"


__all__ = ["CellFit", "fit_cells", "mark_unfit"]
