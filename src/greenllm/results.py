"""Frozen result records, stdlib only. Each has ``to_dict()`` / ``from_dict()``.

Numbers carry their unit in the field name (``energy_j``, ``duration_s``, ``size_bytes``).
``SCHEMA_VERSION`` is written into every serialised record set (store, results.json).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

SCHEMA_VERSION = 1


class Record:
    """Mixin: dataclass <-> plain dict, nested records and tuples included."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: _load(hints.get(k, Any), v) for k, v in data.items() if k in names}
        return cls(**kwargs)


def _dump(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_dump(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _dump(x) for k, x in v.items()}
    return v


def _load(tp: Any, v: Any) -> Any:
    if v is None:
        return None
    origin = get_origin(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        for arg in get_args(tp):
            if arg is not type(None):
                return _load(arg, v)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(v)
    if origin is tuple:
        args = get_args(tp)
        item = args[0] if args else Any
        return tuple(_load(item, x) for x in v)
    if origin is list:
        args = get_args(tp)
        item = args[0] if args else Any
        return [_load(item, x) for x in v]
    return v


@dataclass(frozen=True)
class DomainEnergy(Record):
    """Energy of one domain of one meter over a window (e.g. rapl/package-0, tegrastats/VDD_IN)."""

    meter: str  # registry key: nvml, rapl, jetson, tegrastats, jtop, estimate, replay
    domain: str  # e.g. "gpu0", "package-0", "dram", "VDD_IN", "cpu"
    energy_j: float
    mean_power_w: float
    samples: int
    method: str  # "counter" | "power_integration" | "estimate"
    in_total: bool = True  # counted in EnergyReport.energy_j (False for sub-rails)
    estimated: bool = False
    idle_power_w: float | None = None
    net_energy_j: float | None = None  # energy_j - idle_power_w * duration_s


@dataclass(frozen=True)
class EnergyReport(Record):
    """What measure() returns for one window of work."""

    duration_s: float
    energy_j: float  # gross: sum of in_total domains
    mean_power_w: float
    domains: tuple[DomainEnergy, ...]
    samples: int
    sampling_hz: float
    method: str  # "counter", "power_integration", "estimate" or "mixed"
    estimated: bool  # True if any in_total domain is an estimate
    meters: tuple[str, ...] = ()
    idle_power_w: float | None = None
    net_energy_j: float | None = None
    flags: tuple[str, ...] = ()  # e.g. "meter_vanished:nvml", "negative_power_clamped:VDD_IN"
    trace_path: str | None = None
    started_at_unix_s: float | None = None

    def domain(self, meter: str, domain: str) -> DomainEnergy:
        for d in self.domains:
            if d.meter == meter and d.domain == domain:
                return d
        raise KeyError(f"{meter}/{domain}")


@dataclass(frozen=True)
class StepResult(Record):
    """One compression/training step applied to a model."""

    step: str  # registry key: quantize, prune, distill, lora, train, cast
    method: str
    config: dict[str, Any]
    duration_s: float
    size_bytes_before: int
    size_bytes_after: int
    stats: dict[str, Any] = field(default_factory=dict)  # e.g. sparsity, per-layer stats, loss
    energy: EnergyReport | None = None  # filled by the runner, never by the step
    peak_memory_bytes: int | None = None


@dataclass(frozen=True)
class EvalResult(Record):
    """One evaluation. ``metrics`` keys: acc, acc_norm, acc_stderr, acc_norm_stderr, em, f1,
    perplexity, word_perplexity, byte_perplexity, bits_per_byte (those that apply)."""

    task: str
    n: int
    metrics: dict[str, float | None]
    duration_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    # the metered window the evaluation ran in (set by the runner / `greenllm eval`), and the
    # per-item cost derived from it (greenllm.evals.metered.eval_cost)
    energy: EnergyReport | None = None
    cost: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The flat form printed by ``greenllm eval --json``."""
        out: dict[str, Any] = {"task": self.task, "n": self.n}
        out.update(self.metrics)
        out["duration_s"] = self.duration_s
        out["settings"] = dict(self.settings)
        if self.cost:
            out["cost"] = dict(self.cost)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        skip = {"task", "n", "duration_s", "settings", "cost"}
        return cls(
            task=data["task"],
            n=int(data["n"]),
            metrics={k: v for k, v in data.items() if k not in skip},
            duration_s=float(data["duration_s"]),
            settings=dict(data.get("settings") or {}),
            cost=dict(data.get("cost") or {}),
        )


@dataclass(frozen=True)
class BenchResult(Record):
    """One inference benchmark. ``metrics`` holds the means (ttft_s, tpot_s, e2e_latency_s,
    prefill_tokens_per_s, decode_tokens_per_s, energy_per_request_j, energy_per_token_j,
    tokens_per_wh, edp_js, edp_js_per_b_params, wh_per_b_params, size_bytes,
    peak_memory_bytes, cuda_max_allocated_bytes, gpu_util_mean_pct, roofline_fraction, ...);
    ``ci95`` the half-width of the 95 % confidence interval over repeats for those repeated."""

    metrics: dict[str, float | None]
    ci95: dict[str, float | None]
    meter: str
    estimated: bool
    repeats: int
    workload: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    energy: EnergyReport | None = None
    per_repeat: tuple[dict[str, float | None], ...] = ()
    warnings: tuple[str, ...] = ()  # e.g. a repeat rerun / excluded because a meter failed

    def to_json(self) -> dict[str, Any]:
        """The flat form printed by ``greenllm bench --json``."""
        out: dict[str, Any] = dict(self.metrics)
        for k, v in self.ci95.items():
            out[f"{k}_ci95"] = v
        out.update(
            meter=self.meter,
            estimated=self.estimated,
            repeats=self.repeats,
            workload=dict(self.workload),
            device=dict(self.device),
            warnings=list(self.warnings),
        )
        return out
