"""Energy-efficient training (runner layer): per-epoch energy, a Trainer callback, and the
energy-aware batch-size / power-cap search.

- ``EpochEnergyHook(handle)``: a ``train_loop`` hook that adds ``energy_j``, ``mean_power_w``,
  ``energy_per_token_j`` (and ``emissions_g`` with a carbon intensity) to every epoch record,
  from a running ``greenllm.measure.measure`` handle's ``snapshot()``. The runner passes it to
  steps through ``ctx.extras["train_hooks"]``.
- ``EnergyCallback``: the same per-epoch energy and carbon records for users who train with
  their own Hugging Face ``Trainer`` (``Trainer(..., callbacks=[EnergyCallback()])``).
- ``search(candidates, profile_fn, eta)``: profile each (batch size, power cap or Jetson power
  mode) candidate for a few steps, pick the lowest Zeus cost ``eta*E + (1-eta)*P_max*T`` per
  training sample, and project the savings against the default. ``make_profiler`` is the real
  profiling function (measure + control.capped); tests inject their own measurements.
- ``energy_aware_train``: search, then train with the choice under its power setting.

Steps never import this module. No torch at module level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError, GreenLLMError, HardwareControlError, MissingDependencyError

# ----------------------------------------------------------------------------- energy records


def _energy_delta(snap, last: tuple[float, float]) -> tuple[float, float]:
    return max(snap.energy_j - last[0], 0.0), max(snap.duration_s - last[1], 0.0)


class EpochEnergyHook:
    """``train_loop`` hook: energy of each epoch from a running measure() handle."""

    def __init__(self, handle, intensity_g_per_kwh: float | None = None, pue: float = 1.0):
        self.handle = handle
        self.intensity_g_per_kwh = intensity_g_per_kwh
        self.pue = pue
        self._last = (0.0, 0.0)

    def on_train_begin(self) -> None:
        snap = self.handle.snapshot()
        self._last = (snap.energy_j, snap.duration_s)

    def on_epoch_end(self, epoch: int, record: dict) -> dict:
        snap = self.handle.snapshot()
        energy, dt = _energy_delta(snap, self._last)
        self._last = (snap.energy_j, snap.duration_s)
        out = {
            "energy_j": energy,
            "energy_window_s": dt,
            "mean_power_w": energy / dt if dt > 0 else None,
            "energy_per_token_j": energy / record["tokens"] if record.get("tokens") else None,
            "energy_estimated": bool(snap.estimated),
        }
        if self.intensity_g_per_kwh is not None:
            from .carbon import emissions_g

            out["emissions_g"] = emissions_g(energy, self.intensity_g_per_kwh, self.pue)
        return out


def _callback_base():
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise MissingDependencyError("transformers", "torch", "EnergyCallback") from None
    return TrainerCallback


def _make_energy_callback_class():
    base = _callback_base()

    class EnergyCallback(base):
        """Per-epoch energy and carbon records for a Hugging Face ``Trainer``.

        ``records`` holds one dict per epoch (epoch, global_step, energy_j, duration_s,
        mean_power_w, emissions_g when a region or intensity is given, estimated);
        ``report`` is the whole run's ``EnergyReport`` after training ends. ``measure_factory``
        (default ``greenllm.measure.measure``) is injectable for tests.
        """

        def __init__(
            self,
            meters: Any = "auto",
            hz: float = 10.0,
            region: str | None = None,
            intensity_g_per_kwh: float | None = None,
            pue: float = 1.0,
            measure_factory: Callable[..., Any] | None = None,
        ):
            if measure_factory is None:
                from .measure import measure as measure_factory
            self._factory = measure_factory
            self.meters, self.hz, self.pue = meters, hz, pue
            self.intensity = None
            if region is not None or intensity_g_per_kwh is not None:
                from .carbon import grid_intensity

                self.intensity = grid_intensity(region, intensity_g_per_kwh)
            self.records: list[dict[str, Any]] = []
            self.report = None
            self._m = None
            self._last = (0.0, 0.0)

        def on_train_begin(self, args, state, control, **kwargs):
            self.records, self.report = [], None
            self._m = self._factory(meters=self.meters, hz=self.hz)
            self._m.__enter__()
            self._last = (0.0, 0.0)

        def on_epoch_end(self, args, state, control, **kwargs):
            if self._m is None:
                return
            snap = self._m.snapshot()
            energy, dt = _energy_delta(snap, self._last)
            self._last = (snap.energy_j, snap.duration_s)
            rec = {
                "epoch": state.epoch,
                "global_step": state.global_step,
                "energy_j": energy,
                "duration_s": dt,
                "mean_power_w": energy / dt if dt > 0 else None,
                "estimated": bool(snap.estimated),
            }
            if self.intensity is not None:
                from .carbon import emissions_g

                rec["emissions_g"] = emissions_g(energy, self.intensity.g_per_kwh, self.pue)
                rec["intensity_g_per_kwh"] = self.intensity.g_per_kwh
            self.records.append(rec)

        def on_train_end(self, args, state, control, **kwargs):
            if self._m is None:
                return
            self._m.__exit__(None, None, None)
            self.report = self._m.report
            self._m = None

    return EnergyCallback


_LAZY_CLASSES: dict[str, Any] = {}


def __getattr__(name: str):
    # EnergyCallback subclasses transformers.TrainerCallback, built on first use so that
    # importing greenllm.training does not import torch/transformers.
    if name == "EnergyCallback":
        if name not in _LAZY_CLASSES:
            _LAZY_CLASSES[name] = _make_energy_callback_class()
        return _LAZY_CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- the search
@dataclass(frozen=True)
class Candidate:
    """One training configuration to profile. ``power_cap_w`` / ``power_mode`` None = leave
    the hardware as it is."""

    batch_size: int
    power_cap_w: float | None = None
    power_mode: str | int | None = None
    clocks: str | None = None  # locked GPU clocks (control.clocks value), None = as is

    def label(self) -> str:
        p = (
            f"{self.power_cap_w:g} W"
            if self.power_cap_w is not None
            else f"mode {self.power_mode}"
            if self.power_mode is not None
            else "as is"
        )
        return f"bs={self.batch_size}, {p}" + (f", clocks {self.clocks}" if self.clocks else "")


@dataclass(frozen=True)
class Profile:
    """What profiling a candidate measured: ``samples`` training samples in ``duration_s``
    seconds using ``energy_j`` joules."""

    candidate: Candidate
    samples: int
    duration_s: float
    energy_j: float
    estimated: bool = False

    @property
    def time_per_sample_s(self) -> float:
        return self.duration_s / self.samples

    @property
    def energy_per_sample_j(self) -> float:
        return self.energy_j / self.samples

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0


def zeus_cost(energy_j: float, duration_s: float, eta: float, p_max_w: float) -> float:
    """The Zeus energy-time cost ``eta*E + (1-eta)*P_max*T`` (joules)."""
    return eta * energy_j + (1.0 - eta) * p_max_w * duration_s


@dataclass
class SearchResult:
    choice: Candidate
    default: Candidate
    eta: float
    p_max_w: float
    power_control: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    projected_energy_saving: float = 0.0  # fraction of the default's energy per sample
    projected_time_change: float = 0.0  # fraction (+ = slower than the default)
    projected_cost_saving: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        lines = [
            "| candidate | s/sample | J/sample | mean W | cost J/sample | |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            mark = ("chosen" if r["chosen"] else "") + (" default" if r["default"] else "")
            lines.append(
                f"| {r['label']} | {r['time_per_sample_s']:.4g} | "
                f"{r['energy_per_sample_j']:.4g} | {r['mean_power_w']:.4g} | "
                f"{r['cost_per_sample_j']:.4g} | {mark.strip()} |"
            )
        return "\n".join(lines)


def candidates_from(
    batch_sizes: Sequence[int],
    power_caps_w: Sequence[float] = (),
    power_modes: Sequence[str | int] = (),
    clocks: Sequence[str] = (),
) -> list[Candidate]:
    """The grid of batch sizes x power settings x locked clocks (none = leave as is)."""
    if not batch_sizes:
        raise ConfigError("batch_sizes: give at least one candidate batch size")
    if any(int(b) < 1 for b in batch_sizes):
        raise ConfigError(f"batch_sizes: {list(batch_sizes)} must all be >= 1")
    if power_caps_w and power_modes:
        raise ConfigError("give power caps (W, discrete GPUs) or power modes (Jetson), not both")
    out = []
    for b in batch_sizes:
        if power_caps_w:
            out.extend(Candidate(int(b), power_cap_w=float(p)) for p in power_caps_w)
        elif power_modes:
            out.extend(Candidate(int(b), power_mode=m) for m in power_modes)
        else:
            out.append(Candidate(int(b)))
    if clocks:
        out = [dataclasses.replace(c, clocks=str(k)) for c in out for k in clocks]
    return out


def search(
    candidates: Sequence[Candidate],
    profile_fn: Callable[[Candidate], Profile],
    *,
    eta: float = 0.5,
    default: Candidate | None = None,
    p_max_w: float | None = None,
    power_control: bool = True,
) -> SearchResult:
    """Profile every candidate (and the default) and choose by the Zeus cost per sample.

    ``p_max_w``: the device's maximum power limit (Zeus's P_max); when not given, the largest
    power cap among the candidates, else the highest mean power measured. With
    ``power_control=False`` candidates with a power setting are refused (batch size only).
    """
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta: {eta} must be in [0, 1] (1 = energy only, 0 = time only)")
    cands = list(dict.fromkeys(candidates))
    if not cands:
        raise ConfigError("candidates: nothing to search")
    if not power_control and any(
        c.power_cap_w is not None or c.power_mode is not None or c.clocks is not None for c in cands
    ):
        raise HardwareControlError(
            "this device has no power control here; search batch sizes "
            "only (drop the power caps / modes)"
        )
    default = default or Candidate(max(c.batch_size for c in cands))
    if default not in cands:
        cands.append(default)
    profiles = {}
    for c in cands:
        p = profile_fn(c)
        if p.samples <= 0 or p.duration_s <= 0 or p.energy_j < 0 or not math.isfinite(p.energy_j):
            raise GreenLLMError(
                f"profiling {c.label()} measured {p.samples} samples in "
                f"{p.duration_s} s using {p.energy_j} J; profile more steps"
            )
        profiles[c] = p
    if p_max_w is None:
        limits = [c.power_cap_w for c in cands if c.power_cap_w is not None]
        p_max_w = max(limits) if limits else max(p.mean_power_w for p in profiles.values())
    cost = {
        c: zeus_cost(p.energy_per_sample_j, p.time_per_sample_s, eta, p_max_w)
        for c, p in profiles.items()
    }
    choice = min(cands, key=lambda c: (cost[c], cands.index(c)))
    d, ch = profiles[default], profiles[choice]
    rows = [
        {
            "label": c.label(),
            "batch_size": c.batch_size,
            "power_cap_w": c.power_cap_w,
            "power_mode": c.power_mode,
            "clocks": c.clocks,
            "samples": p.samples,
            "duration_s": p.duration_s,
            "energy_j": p.energy_j,
            "time_per_sample_s": p.time_per_sample_s,
            "energy_per_sample_j": p.energy_per_sample_j,
            "mean_power_w": p.mean_power_w,
            "cost_per_sample_j": cost[c],
            "estimated": p.estimated,
            "chosen": c == choice,
            "default": c == default,
        }
        for c, p in profiles.items()
    ]
    note = (
        "projections assume the same number of training samples (epochs) for every "
        "candidate; a batch size that changes how many epochs reach the target accuracy "
        "changes the real saving"
    )
    if not power_control:
        note = "no power control on this device: searched batch size only; " + note
    if any(p.estimated for p in profiles.values()):
        note += "; energy is an estimate (no energy meter here)"
    return SearchResult(
        choice=choice,
        default=default,
        eta=eta,
        p_max_w=p_max_w,
        power_control=power_control,
        rows=rows,
        projected_energy_saving=1.0 - ch.energy_per_sample_j / d.energy_per_sample_j
        if d.energy_per_sample_j > 0
        else 0.0,
        projected_time_change=ch.time_per_sample_s / d.time_per_sample_s - 1.0,
        projected_cost_saving=1.0 - cost[choice] / cost[default] if cost[default] > 0 else 0.0,
        note=note,
    )


# ----------------------------------------------------------------------------- real profiling
def power_setting(cap, candidate: Candidate, journal=None, clock_cap=None):
    """``control.capped`` for the candidate's power setting and locked clocks (each held with
    the journal and restored), or a no-op context. ``journal``: the control directory for the
    devices' journals and locks (default: ``greenllm.control.journal.control_dir()``)."""
    value = candidate.power_cap_w if candidate.power_cap_w is not None else candidate.power_mode
    if value is None and candidate.clocks is None:
        return contextlib.nullcontext()
    if value is not None and cap is None:
        raise HardwareControlError(f"{candidate.label()}: no power control on this device")
    if candidate.clocks is not None and clock_cap is None:
        raise HardwareControlError(f"{candidate.label()}: no clock control on this device")
    from .control.base import capped

    stack = contextlib.ExitStack()
    with stack:
        if value is not None:
            stack.enter_context(capped(cap, value, control_dir=journal))
        if candidate.clocks is not None:
            stack.enter_context(capped(clock_cap, candidate.clocks, control_dir=journal))
        return stack.pop_all()


def train_with_setting(
    model,
    batches,
    loss_fn,
    loop_cfg,
    candidate: Candidate,
    *,
    cap=None,
    meters: Any = "auto",
    hz: float = 10.0,
    eval_batches=None,
    hooks=(),
    journal=None,
    clock_cap=None,
):
    """Train under the candidate's power setting (restored on return, error and signals),
    measuring the whole run and each epoch. Returns ``(TrainReport, EnergyReport)``."""
    from .measure import measure
    from .steps.train import train_loop

    with power_setting(cap, candidate, journal, clock_cap):
        with measure(meters, hz=hz) as m:
            report = train_loop(
                model, batches, loss_fn, loop_cfg, eval_batches, [EpochEnergyHook(m), *hooks]
            )
    return report, m.report


def make_profiler(
    model,
    tokenizer,
    cfg,
    *,
    steps: int = 3,
    warmup_steps: int = 1,
    cap=None,
    meters: Any = "auto",
    hz: float = 10.0,
    journal=None,
    clock_cap=None,
) -> Callable[[Candidate], Profile]:
    """A profile function: train ``steps`` measured steps (after ``warmup_steps`` unmeasured
    ones) with the candidate's batch size under its power setting, then put the weights back.

    ``cfg`` is a ``TrainConfig`` (data, task, seq_len, precision, lr...)."""
    import dataclasses

    from .steps.data import build_batches
    from .steps.train import causal_lm_loss

    if steps < 1:
        raise ConfigError(f"steps: {steps} must be >= 1")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    source = cfg.data
    loop = dataclasses.replace(
        cfg.loop_config(),
        early_stopping=None,
        grad_accum=1,
        eval_every_steps=None,
        log_every_steps=10**9,
    )

    def profile(c: Candidate) -> Profile:
        from .measure import measure
        from .steps.train import train_loop

        batches, _ = build_batches(
            tokenizer,
            source,
            task=cfg.task,
            seq_len=cfg.seq_len,
            batch_size=c.batch_size,
            seed=cfg.seed,
            max_examples=None,
        )
        full = [b for b in batches if b["input_ids"].shape[0] == c.batch_size]
        if len(full) < steps + warmup_steps:
            raise ConfigError(
                f"data: {len(full)} full batches of {c.batch_size}; profiling "
                f"needs {steps + warmup_steps}; give more data or fewer steps"
            )
        try:
            with power_setting(cap, c, journal, clock_cap):
                if warmup_steps:
                    train_loop(
                        model,
                        full[:warmup_steps],
                        causal_lm_loss,
                        dataclasses.replace(loop, max_steps=warmup_steps, epochs=1, shuffle=False),
                    )
                with measure(meters, hz=hz) as m:
                    train_loop(
                        model,
                        full[warmup_steps : warmup_steps + steps],
                        causal_lm_loss,
                        dataclasses.replace(loop, max_steps=steps, epochs=1, shuffle=False),
                    )
        finally:
            model.load_state_dict(state)
        r = m.report
        return Profile(
            c,
            samples=steps * c.batch_size,
            duration_s=r.duration_s,
            energy_j=r.energy_j,
            estimated=r.estimated,
        )

    return profile


def energy_aware_train(
    model,
    tokenizer,
    cfg,
    *,
    batch_sizes: Sequence[int],
    power_caps_w: Sequence[float] = (),
    power_modes: Sequence[Any] = (),
    eta: float = 0.5,
    profile_steps: int = 3,
    meters: Any = "auto",
    cap: Any = "auto",
    profile_fn=None,
    train: bool = True,
    clocks: Sequence[str] = (),
    clock_cap: Any = "auto",
):
    """Search batch size x power setting, then train with the choice.

    ``cap="auto"`` selects the power control for ``power_caps_w`` (NVML) or ``power_modes``
    (Jetson) with ``control.select.select_power_cap``; None means none (batch size only).
    Returns ``(SearchResult, TrainReport | None, EnergyReport | None)``.
    """
    import dataclasses

    from .steps.data import build_batches
    from .steps.train import causal_lm_loss

    if cap == "auto":  # the adapter for this device; every setting is checked before profiling
        from .control.select import select_power_cap

        cap, _ = select_power_cap(
            list(power_caps_w), list(power_modes), names=("power_caps_w", "power_modes")
        )
    wants_power = bool(power_caps_w or power_modes)
    if wants_power and cap is None:
        raise HardwareControlError(
            "power caps/modes were asked for, but no power control was "
            "given (cap=None); search batch sizes only"
        )
    if clock_cap == "auto":
        clock_cap = None
        if clocks:
            from .control.select import select_clocks

            clock_cap, _ = select_clocks(list(clocks), names="clocks")
    if clocks and clock_cap is None:
        raise HardwareControlError("clocks were asked for, but no clock control was given")
    cands = candidates_from(batch_sizes, power_caps_w, power_modes, clocks)
    p_max = None
    if cap is not None and power_caps_w:
        allowed = cap.allowed()
        if isinstance(allowed, (tuple, list)) and len(allowed) == 2:
            p_max = float(allowed[1])
    profile_fn = profile_fn or make_profiler(
        model, tokenizer, cfg, steps=profile_steps, cap=cap, meters=meters, clock_cap=clock_cap
    )
    default = Candidate(cfg.batch_size)
    result = search(
        cands,
        profile_fn,
        eta=eta,
        default=default,
        p_max_w=p_max,
        power_control=cap is not None or clock_cap is not None,
    )
    if not train:
        return result, None, None
    choice = result.choice
    tcfg = dataclasses.replace(cfg, batch_size=choice.batch_size)
    source = tcfg.data
    train_b, eval_b = build_batches(
        tokenizer,
        source,
        task=tcfg.task,
        seq_len=tcfg.seq_len,
        batch_size=tcfg.batch_size,
        eval_fraction=tcfg.eval_fraction,
        seed=tcfg.seed,
        max_examples=tcfg.max_examples,
    )
    report, energy = train_with_setting(
        model,
        train_b,
        causal_lm_loss,
        tcfg.loop_config(),
        choice,
        cap=cap,
        meters=meters,
        eval_batches=eval_b or None,
        clock_cap=clock_cap,
    )
    return result, report, energy


__all__ = [
    "EpochEnergyHook",
    "EnergyCallback",  # noqa: F822 - built on first access (module __getattr__)
    "Candidate",
    "Profile",
    "SearchResult",
    "zeus_cost",
    "candidates_from",
    "search",
    "power_setting",
    "train_with_setting",
    "make_profiler",
    "energy_aware_train",
]
