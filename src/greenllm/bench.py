"""Inference benchmark: latency, TTFT, tokens/s, J/token, tokens/Wh, EDP, memory, roofline.

``bench(model, tokenizer, workload)`` runs greedy decoding with a manual prefill + decode loop
over the KV cache (so the time to the first token and every decode step are timed exactly,
and the same loop works for any Hugging Face causal LM). End-of-sequence tokens are ignored:
every request produces exactly ``max_new_tokens`` tokens, so runs of different models (or of a
model before and after compression) do the same amount of work. Each repeat is one pass over
the prompts, metered as one ``greenllm.measure.measure`` window; the means over repeats are
reported with the half-width of their 95 % Student-t confidence interval. A window in which
a meter failed (``measure.invalid_window_reasons``) is rerun (at most ``repeats`` reruns in
all), else its energy is excluded from the means; never counted as 0 J. Each case is a line
in ``BenchResult.warnings``; a benchmark with no valid window raises MeterError. Definitions and
formulas: docs/benchmark.md.

torch is imported inside functions only, so a workload validates on a machine without torch.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import parse_config, to_dict
from .decode import sync as _sync
from .errors import ConfigError, DataError, MeterError
from .grad_mode import no_autograd
from .results import BenchResult, EnergyReport
from .stats import mean_ci95, t_critical_95  # noqa: F401 (t_critical_95: re-exported)
from .units import J_PER_WH

COPY_PROBE_BYTES = 256 * 1024**2


# sane bounds of the workload's integers (a longer generation than any context is a typo)
WORKLOAD_BOUNDS = {
    "max_new_tokens": (1, 1_000_000),
    "batch_size": (1, 65_536),
    "warmup": (0, 100_000),
    "min_rounds": (2, 100_000),
    "max_rounds": (1, 100_000),
}


@dataclass
class Workload:
    """An inference workload.

    ``prompts``: a text file (one prompt per line; ``.jsonl`` with a ``prompt`` or ``text``
    field), a list of strings, or ``builtin:prompts``. A request is one prompt; ``batch_size``
    prompts are decoded together. ``warmup`` untimed batches run first; ``repeats`` timed,
    metered passes over all prompts follow. ``limit`` keeps only the first N prompts.
    ``compile``: decode with a static KV cache and a ``torch.compile``'d decode step
    (``greenllm.decode.CompiledDecoder``; at least one warm-up batch runs, it compiles).

    Rounds (the runner): ``repeats`` is a number of rounds or ``auto`` (until every paired
    delta's 95 % CI half-width is at most ``precision``, after ``min_rounds``, at most
    ``max_rounds`` / ``max_time_s``). Each metered window lasts at least ``min_window_s`` and
    20 sampling periods of the slowest meter (the prompts repeat inside it). ``scheme``: how
    the variants take turns: ``resident`` (all models stay loaded), ``reload`` (each
    compressed model is saved once to OUT/artifacts as a greenllm checkpoint and reloaded
    before its window), ``bracket``
    (one variant at a time, each window between two baseline windows), ``auto`` (resident
    when the models fit in memory with headroom, else reload).

    ``runtime``: the engine that runs the requests (``torch``, ``llama.cpp``, ``onnxruntime``;
    see ``greenllm.runtimes``); ``threads``: its thread count (None: the runtime's default;
    the count used is recorded in the result's ``device``).
    """

    prompts: str | list[str] = "builtin:prompts"
    max_new_tokens: int = 64
    batch_size: int = 1
    warmup: int = 2
    repeats: int | Literal["auto"] = "auto"  # rounds
    limit: int | None = None
    compile: bool = False
    precision: float = 0.05
    min_rounds: int = 3
    max_rounds: int = 30
    max_time_s: float | None = 600.0
    min_window_s: float = 1.0
    scheme: Literal["auto", "resident", "reload", "bracket"] = "auto"
    runtime: str = "torch"
    threads: int | None = None

    def validate(self) -> None:
        from .runtimes.base import check_runtime

        check_runtime(self.runtime)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(
                f"threads: must be >= 1 (or null for the default), got {self.threads}"
            )
        if isinstance(self.prompts, str):
            if not self.prompts.strip():
                raise ConfigError(
                    "prompts: no prompts given; use a file path, a list of "
                    "strings or builtin:prompts"
                )
        elif not [p for p in self.prompts if isinstance(p, str) and p.strip()]:
            raise ConfigError(
                "prompts: no prompts (the list is empty or blank); give at "
                "least one prompt, a file, or builtin:prompts"
            )
        from .limits import check_number

        for name, (low, high) in WORKLOAD_BOUNDS.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name}: must be >= {low}, got {getattr(self, name)}")
            check_number(getattr(self, name), name, low, high, integer=True)
        if self.repeats != "auto":
            check_number(self.repeats, "repeats", 1, 100_000, integer=True)
        check_number(self.precision, "precision", 0.001, 10.0, unit="fraction (0.05 = ±5 %)")
        check_number(self.min_window_s, "min_window_s", 0.0, 86_400.0, unit="seconds")
        if self.max_time_s is not None:
            check_number(self.max_time_s, "max_time_s", 1.0, 604_800.0, unit="seconds")
        if self.min_rounds > self.max_rounds:
            raise ConfigError(
                f"min_rounds: {self.min_rounds} is more than max_rounds ({self.max_rounds})"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: must be >= 1 (or null for all prompts), got {self.limit}")


def parse_workload(mapping: Any, path: str = "workload") -> Workload:
    if isinstance(mapping, Workload):
        mapping.validate()
        return mapping
    return parse_config(Workload, mapping, path)


def load_prompts(spec: str | list[str], limit: int | None = None) -> list[str]:
    """The prompts of a workload as a list of non-empty strings."""
    import json

    if isinstance(spec, (list, tuple)):
        prompts = [p.strip() for p in spec if isinstance(p, str) and p.strip()]
        where = "workload.prompts"
    else:
        from .builtin_data import text_source

        path = text_source(spec, "workload.prompts")
        if not path.is_file():
            raise DataError(
                f"prompts file {str(path)!r} does not exist; give a text file with "
                "one prompt per line, or builtin:prompts"
            )
        if path.suffix == ".jsonl":
            prompts = []
            from .limits import read_text

            for i, line in enumerate(read_text(path, "prompts file").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = row.get("prompt", row.get("text")) if isinstance(row, dict) else None
                except ValueError:
                    text = None
                if not isinstance(text, str):
                    raise DataError(
                        f"{path}:{i}: expected a JSON object with a 'prompt' or 'text' string"
                    )
                if text.strip():
                    prompts.append(text.strip())
        else:
            prompts = _read_lines(path)
        where = str(path)
    if not prompts:
        raise ConfigError(
            f"workload.prompts: no prompts in {where}; give at least one non-empty prompt"
        )
    return prompts[:limit] if limit else prompts


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read prompts file {str(path)!r}: {exc}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


# --- hardware probes ---------------------------------------------------------------------


def measure_copy_bandwidth(
    device: Any = "cpu", size_bytes: int = COPY_PROBE_BYTES, repeats: int = 5
) -> float:
    """Copy bandwidth in bytes/s: best of ``repeats`` copies of a ``size_bytes`` float32 buffer,
    counting read + write (2 x size_bytes per copy, the STREAM "copy" convention)."""
    import torch

    dev = torch.device(device)
    n = max(1, size_bytes // 4)
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = math.inf
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * n * 4 / best


def weight_bytes_per_token(model) -> int:
    """Bytes of weights one decode step reads: all stored weights, except an input embedding
    table that is not tied to the output head (a lookup reads one row, not the table)."""
    from .models import model_size_bytes

    total = model_size_bytes(model)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        tied = out is not None and getattr(out, "weight", None) is emb.weight
        if not tied:
            total -= model_size_bytes(emb)
    return int(total)


def _tokenize_batches(tokenizer, prompts: list[str], batch_size: int, device) -> list[dict]:
    old_side = getattr(tokenizer, "padding_side", "right")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only batching: pad on the left
    try:
        batches = []
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True)
            batches.append(
                {
                    "input_ids": enc["input_ids"].to(device),
                    "attention_mask": enc["attention_mask"].to(device),
                }
            )
    finally:
        tokenizer.padding_side = old_side
    return batches


def _gpu_util(report: EnergyReport | None, handle: Any) -> float | None:
    for obj in (report, handle):
        v = getattr(obj, "gpu_util_mean_pct", None)
        if v is not None:
            return float(v)
    return None


def _resolve_bandwidth(profile, device, bandwidth_bytes_per_s) -> tuple[float, str, str]:
    """(bytes/s, source, profile name)."""
    from .devices import detect_device, get_profile

    if isinstance(profile, str):
        profile = get_profile(profile)
    if profile is None:
        profile = detect_device().profile
    name = profile.name
    if bandwidth_bytes_per_s:
        return float(bandwidth_bytes_per_s), "given", name
    if profile.memory_bandwidth_bytes_per_s:
        return profile.memory_bandwidth_bytes_per_s, f"profile:{profile.name}", name
    return measure_copy_bandwidth(device), f"measured:copy:{device.type}", name


# per-window metrics that come from the energy window (None for an excluded window)
ENERGY_METRICS = (
    "energy_j",
    "net_energy_j",
    "mean_power_w",
    "energy_per_request_j",
    "energy_per_token_j",
    "net_energy_per_token_j",
    "tokens_per_wh",
    "edp_js",
    "edp_js_per_b_params",
    "wh_per_b_params",
)


def window_floor_s(min_window_s: float, hz: float, meters: list[Any]) -> float:
    """The shortest a metered window may be: ``min_window_s`` and at least 20 sampling periods
    of the slowest meter in use (the sampler's ``hz`` or a meter's own ``update_hz``, e.g. a
    1 Hz tegrastats -> 20 s). MLPerf Power's rule is the anchor: power is measured over the
    whole performance run, whose minimum duration (600 s in MLPerf Inference) guarantees
    hundreds of analyzer samples; 20 periods bounds the error of integrating a sampled power
    signal at a few percent for a short on-device window."""
    rates = [float(hz)] if hz and hz > 0 else []
    for m in meters:
        r = getattr(m, "update_hz", None)
        if r:
            rates.append(float(r))
    if not rates:  # hz=0 (no sampler: samples only at the window's edges) and no meter rate
        return float(min_window_s)
    return max(float(min_window_s), 20.0 / min(rates))


class BenchSession:
    """One model prepared for metered windows of its workload: batches tokenized, the decode
    function chosen, sizes counted. ``window()`` runs one metered window (the workload's
    prompts, repeated until the window lasts at least ``floor_s``) and returns its row;
    ``result(rows)`` turns rows into a ``BenchResult``. ``bench()`` and the runner's rounds
    both use it, so a standalone bench and a paired comparison measure the same thing."""

    def __init__(
        self,
        model,
        tokenizer,
        wl: Workload,
        meter_objs: list[Any],
        device: Any = None,
        hz: float = 10.0,
        *,
        profile: Any = None,
        bandwidth_bytes_per_s: float | None = None,
        probe: Any = None,
        idle_power_w: float | None = None,
        max_other_cpu_share: float | None = None,
    ):
        import torch

        from .conditions import DEFAULT_MAX_OTHER_CPU_SHARE, default_probe
        from .models import model_size_bytes, param_count

        self.wl = wl
        prompts = load_prompts(wl.prompts, wl.limit)
        self.n_prompts = len(prompts)
        # --- runtime (issue 14): torch runs the model in memory; llama.cpp / onnxruntime run
        # an exported file (``model`` may be that file's path or an open runtime) -------------
        from .runtimes import is_runtime, open_runtime

        other = wl.runtime != "torch" or is_runtime(model) or isinstance(model, (str, Path))
        if other:
            dev = torch.device("cpu")
            rt, owned = open_runtime(wl.runtime, model, tokenizer, threads=wl.threads)
            model = rt
            self.n_params, self.size_bytes = rt.n_params, rt.size_bytes
            self.wbytes = rt.weight_bytes_per_token
        else:
            try:
                model_device = next(model.parameters()).device
            except StopIteration:
                model_device = torch.device("cpu")
            dev = torch.device(device) if device is not None else model_device
            if dev != model_device:
                model = model.to(dev)
            self.n_params = param_count(model)
            self.size_bytes = model_size_bytes(model)
            self.wbytes = weight_bytes_per_token(model)
        self.model, self.dev, self.hz = model, dev, hz
        self.meters = meter_objs
        self.b_params = self.n_params / 1e9
        self.bandwidth, self.bw_source, self.profile_name = _resolve_bandwidth(
            profile, dev, bandwidth_bytes_per_s
        )
        self.batches = _tokenize_batches(tokenizer, prompts, wl.batch_size, dev)
        if not other:
            rt, owned = open_runtime(
                "torch",
                model,
                tokenizer,
                threads=wl.threads,
                device=dev,
                compile=wl.compile,
                max_cache_len=max(b["input_ids"].shape[1] for b in self.batches)
                + wl.max_new_tokens,
            )
        self.rt, self._owned = rt, owned
        self._one = lambda batch: self.rt.run_request(batch, wl.max_new_tokens)
        # --- end runtime ------------------------------------------------------------------
        self.cuda = dev.type == "cuda"
        self.probe = probe if probe is not None else default_probe()
        self.idle_power_w = idle_power_w
        self.max_other_cpu_share = (
            DEFAULT_MAX_OTHER_CPU_SHARE if max_other_cpu_share is None else max_other_cpu_share
        )
        self.floor_s = window_floor_s(wl.min_window_s, hz, meter_objs)
        self.warmup_s = 0.0
        self.last_report: EnergyReport | None = None

    def warmup(self) -> None:
        import torch

        with self._eval_mode():
            t0 = time.perf_counter()
            for i in range(max(self.wl.warmup, 1 if self.wl.compile else 0)):
                self._one(self.batches[i % len(self.batches)])
            self.warmup_s = time.perf_counter() - t0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.dev)

    @contextlib.contextmanager
    def _eval_mode(self):
        was = self.model.training
        self.model.eval()
        try:
            with no_autograd(self.model):
                yield
        finally:
            if was:
                self.model.train()

    def window(self) -> dict[str, Any]:
        """One metered window. The row holds the metrics, ``passes``, ``conditions``,
        ``flags`` (disturbances) and ``invalid`` (why the energy cannot be trusted, [] if it
        can). A row with ``invalid`` has None for every energy metric."""
        from .conditions import window_flags
        from .measure import invalid_window_reasons, measure

        runs: list[dict] = []
        passes = 0
        with self._eval_mode():
            token = self.probe.start()
            t0 = time.perf_counter()
            with measure(self.meters, hz=self.hz) as handle:
                while True:
                    for b in self.batches:
                        runs.append(self._one(b))
                    passes += 1
                    if time.perf_counter() - t0 >= self.floor_s:
                        break
            cond = self.probe.stop(token)
        win = handle.report
        row = _window_metrics(runs, win, self.wl, self.wbytes, self.bandwidth, self.b_params)
        row["passes"] = passes
        if self.idle_power_w is not None and row["energy_j"] is not None:
            net = max(row["energy_j"] - self.idle_power_w * row["duration_s"], 0.0)
            tokens = row["output_tokens"] or 0.0
            row["net_energy_j"] = net
            row["net_energy_per_token_j"] = net / tokens if tokens else None
        row["gpu_util_mean_pct"] = _gpu_util(win, handle)
        bad = invalid_window_reasons(win)
        if bad:
            row.update(dict.fromkeys(ENERGY_METRICS))
        else:
            self.last_report = win
        row["invalid"] = bad
        row["flags"] = window_flags(cond, self.max_other_cpu_share)
        row["conditions"] = cond
        row["started_at_unix_s"] = win.started_at_unix_s if win is not None else None
        return row

    def release(self) -> None:
        """Drop the model and its batches (the session keeps what result() needs); a runtime
        this session opened is closed."""
        if self._owned and self.rt is not None:
            self.rt.close()
        self._decoding, self._rt_info = self.rt.decoding, self.rt.info()
        self.model = None
        self.rt = None
        self.batches = []
        self._one = None

    def result(self, rows: list[dict[str, Any]], warnings: list[str] | None = None, **extra):
        """A BenchResult from rows (the valid ones give the means and CIs)."""
        import torch

        valid = [r for r in rows if usable(r)]
        if not valid or self.last_report is None:
            raise MeterError(
                "the energy meter failed in every benchmark window; no energy figure can be "
                "given: check the meter (greenllm detect) and run again"
            )
        metrics: dict[str, float | None] = {}
        ci95: dict[str, float | None] = {}
        for k in valid[0]:
            if k in ROW_META:
                continue
            src = valid if k in ENERGY_METRICS else rows
            metrics[k], ci95[k] = mean_ci95([r.get(k) for r in src])
        metrics["peak_memory_bytes"] = max(r.get("peak_memory_bytes") or 0 for r in rows)
        ci95.pop("peak_memory_bytes", None)
        metrics["cuda_max_allocated_bytes"] = (
            float(torch.cuda.max_memory_allocated(self.dev)) if self.cuda else None
        )
        metrics["size_bytes"] = self.size_bytes
        metrics["params"] = self.n_params
        metrics["weight_bytes_per_token"] = self.wbytes
        report = self.last_report
        from .meters.base import boundary_of

        wl = self.wl
        return BenchResult(
            metrics=metrics,
            ci95={k: v for k, v in ci95.items() if k in metrics},
            meter="+".join(report.meters) if report.meters else report.method,
            estimated=bool(report.estimated),
            repeats=len(rows),
            workload={
                **to_dict(wl),
                "n_prompts": self.n_prompts,
                "n_batches": len(self.batches),
                "decoding": self.rt.decoding if self.rt is not None else self._decoding,
                "warmup_s": self.warmup_s,
                "window_floor_s": self.floor_s,
                **extra,
            },
            device={
                "torch_device": str(self.dev),
                "profile": self.profile_name,
                "memory_bandwidth_bytes_per_s": self.bandwidth,
                "bandwidth_source": self.bw_source,
                "torch_threads": torch.get_num_threads(),
                "boundary": boundary_of(self.meters),
                "idle_power_w": self.idle_power_w,
                **{
                    f"runtime_{k}" if k != "runtime" else k: v
                    for k, v in (self.rt.info() if self.rt is not None else self._rt_info).items()
                },
            },
            energy=report,
            per_repeat=tuple(_slim(r) for r in rows),
            warnings=tuple(warnings or ()),
        )


# row keys that are bookkeeping, not metrics
ROW_META = frozenset(
    {
        "round",
        "position",
        "passes",
        "started_at_unix_s",
        "excluded",
        "invalid",
        "flags",
        "conditions",
        "variant",
        "order",
        "attempt",
        "reruns",
        "paired",
        "bracket",
    }
)


def usable(row: dict[str, Any]) -> bool:
    """A window whose energy counts: no meter failure, not excluded (discarded disturbance)."""
    return not row.get("invalid") and not row.get("excluded") and row.get("energy_j") is not None


def _slim(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row: metrics, round bookkeeping, flags and conditions (JSON-able)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}


def measure_idle_power(meter_objs: list[Any], idle_s: float, hz: float) -> float | None:
    """Mean total power (W) of the meters over ``idle_s`` seconds of doing nothing; None for
    idle_s <= 0 or when every meter is an estimate (idle subtraction means nothing there)."""
    from .measure import invalid_window_reasons, measure

    if idle_s <= 0:
        return None
    if meter_objs and all(all(d.estimated for d in m.domains() if d.in_total) for m in meter_objs):
        return None
    with measure(meter_objs, hz=hz) as h:
        time.sleep(idle_s)
    rep = h.report
    if rep is None or invalid_window_reasons(rep) or rep.duration_s <= 0:
        return None
    return rep.energy_j / rep.duration_s


def relative_half_width(values: list[float | None]) -> float | None:
    """95 % CI half-width of the mean, relative to the mean; None below 2 values."""
    m, hw = mean_ci95(values)
    if m is None or hw is None or m == 0:
        return None
    return abs(hw / m)


def bench(
    model,
    tokenizer,
    workload: Workload | dict | None = None,
    meters: Any = "auto",
    device: Any = None,
    hz: float = 10.0,
    *,
    profile: Any = None,
    bandwidth_bytes_per_s: float | None = None,
    idle_s: float = 0.0,
    probe: Any = None,
) -> BenchResult:
    """Run ``workload`` on ``model`` and return a BenchResult (means and 95 % CIs over its
    windows).

    ``meters`` is passed to ``greenllm.measure.measure`` (``"auto"``, names or Meter objects);
    ``device`` defaults to the model's device (the model is moved there if it differs).
    ``workload.repeats``: a number of windows, or ``auto``: windows continue until the 95 % CI
    of the energy per token is within ``workload.precision`` of its mean (at least
    ``min_rounds``, at most ``max_rounds`` windows or ``max_time_s``). A window in which a
    meter failed is rerun (at most ``max_rounds`` reruns), else excluded; never counted as 0 J.
    ``idle_s`` > 0 measures idle power first (net energy figures). The roofline bandwidth comes
    from ``bandwidth_bytes_per_s``, else the device profile, else a measured copy bandwidth.
    """
    from .measure import resolve_meters

    wl = parse_workload(workload if workload is not None else {})
    meter_objs, created = resolve_meters(meters)  # once, reused by every window
    warnings: list[str] = []
    sess: BenchSession | None = None
    try:
        idle_w = measure_idle_power(meter_objs, idle_s, hz)
        sess = BenchSession(
            model,
            tokenizer,
            wl,
            meter_objs,
            device,
            hz,
            profile=profile,
            bandwidth_bytes_per_s=bandwidth_bytes_per_s,
            probe=probe,
            idle_power_w=idle_w,
        )
        sess.warmup()
        rows: list[dict[str, Any]] = []
        t0 = time.monotonic()
        reruns_left = wl.max_rounds
        while True:
            row = sess.window()
            if row["invalid"]:
                why = "; ".join(row["invalid"])
                what = f"repeat {len(rows) + 1}: energy window invalid ({why})"
                if reruns_left > 0:
                    reruns_left -= 1
                    warnings.append(f"{what}; rerun")
                    continue
                warnings.append(f"{what}; its energy is excluded")
            row["round"] = len(rows) + 1
            rows.append(row)
            if _enough(rows, wl, time.monotonic() - t0):
                break
        result = sess.result(rows, warnings, stopped=_stop_reason(rows, wl, time.monotonic() - t0))
    finally:
        for m in created:
            m.close()
        if sess is not None:
            sess.release()
    return result


def _enough(rows: list[dict[str, Any]], wl: Workload, elapsed_s: float) -> bool:
    n = len(rows)
    if wl.repeats != "auto":
        return n >= int(wl.repeats)
    if n >= wl.max_rounds or (wl.max_time_s is not None and elapsed_s >= wl.max_time_s and n >= 2):
        return True
    if n < wl.min_rounds:
        return False
    rel = relative_half_width([r.get("energy_per_token_j") for r in rows])
    return rel is not None and rel <= wl.precision


def _stop_reason(rows: list[dict[str, Any]], wl: Workload, elapsed_s: float) -> str:
    if wl.repeats != "auto":
        return f"fixed: {wl.repeats} windows"
    rel = relative_half_width([r.get("energy_per_token_j") for r in rows])
    if rel is not None and rel <= wl.precision and len(rows) >= wl.min_rounds:
        return f"precision reached (±{rel:.1%} <= {wl.precision:.0%})"
    if len(rows) >= wl.max_rounds:
        return f"max_rounds ({wl.max_rounds}) reached"
    return f"max_time_s ({wl.max_time_s:g} s) reached"


def _window_metrics(
    runs: list[dict],
    report: EnergyReport,
    wl: Workload,
    wbytes: int,
    bandwidth: float,
    b_params: float,
) -> dict[str, Any]:
    n_req = sum(r["batch"] for r in runs)
    prefill_s = sum(r["prefill_s"] for r in runs)
    decode_s = sum(r["decode_s"] for r in runs)
    out_tokens = sum(r["new_tokens"] for r in runs)
    decode_tokens = sum(r["decode_tokens"] for r in runs)
    steps = wl.max_new_tokens - 1
    e2e = sum(r["e2e_s"] * r["batch"] for r in runs) / n_req  # latency a request sees
    ttft = sum(r["prefill_s"] * r["batch"] for r in runs) / n_req
    tpot = (sum(r["decode_s"] * r["batch"] for r in runs) / n_req / steps) if steps else None
    energy = float(report.energy_j)
    e_req = energy / n_req
    # roofline: each decode step reads the weights once, whatever the batch size
    ideal_decode_s = len(runs) * steps * wbytes / bandwidth
    return {
        "ttft_s": ttft,
        "tpot_s": tpot,
        "e2e_latency_s": e2e,
        "prefill_tokens_per_s": sum(r["prompt_tokens"] for r in runs) / prefill_s,
        "decode_tokens_per_s": decode_tokens / decode_s if steps and decode_s > 0 else None,
        "output_tokens": float(out_tokens),
        "requests": float(n_req),
        "energy_j": energy,
        "net_energy_j": None,
        "duration_s": float(report.duration_s),
        "mean_power_w": float(report.mean_power_w),
        "energy_per_request_j": e_req,
        "energy_per_token_j": energy / out_tokens,
        "net_energy_per_token_j": None,
        "tokens_per_wh": out_tokens / (energy / J_PER_WH) if energy > 0 else None,
        "edp_js": e_req * e2e,
        "edp_js_per_b_params": e_req * e2e / b_params if b_params else None,
        "wh_per_b_params": e_req / J_PER_WH / b_params if b_params else None,
        "roofline_fraction": ideal_decode_s / decode_s if steps and decode_s > 0 else None,
        "peak_memory_bytes": float(max(r["peak_rss_bytes"] for r in runs)),
    }
