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

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import parse_config, to_dict
from .decode import sync as _sync
from .errors import ConfigError, DataError, MeterError
from .grad_mode import no_autograd
from .results import BenchResult, EnergyReport
from .units import J_PER_WH

COPY_PROBE_BYTES = 256 * 1024**2


# sane bounds of the workload's integers (a longer generation than any context is a typo)
WORKLOAD_BOUNDS = {
    "max_new_tokens": (1, 1_000_000),
    "batch_size": (1, 65_536),
    "repeats": (1, 100_000),
    "warmup": (0, 100_000),
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
    ``runtime``: the engine that runs the requests (``torch``, ``llama.cpp``, ``onnxruntime``;
    see ``greenllm.runtimes``); ``threads``: its thread count (None: the runtime's default;
    the count used is recorded in the result's ``device``).
    """

    prompts: str | list[str] = "builtin:prompts"
    max_new_tokens: int = 64
    batch_size: int = 1
    warmup: int = 2
    repeats: int = 5
    limit: int | None = None
    compile: bool = False
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


# --- statistics --------------------------------------------------------------------------

# two-sided 95 % Student-t critical values t_{0.975, df}
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t_critical_95(df: int) -> float:
    """t_{0.975, df}: exact table to 30, then linear in 1/df towards 1.960."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975) + [math.inf]
    vals = [_T975[k] for k in sorted(_T975)] + [1.959964]
    for (k0, v0), (k1, v1) in zip(zip(keys, vals), zip(keys[1:], vals[1:])):
        if k0 < df < k1:
            x0, x1, x = 1 / k0, (0.0 if k1 == math.inf else 1 / k1), 1 / df
            return v1 + (v0 - v1) * (x - x1) / (x0 - x1)
    return 1.959964


def mean_ci95(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, half-width of the 95 % CI of the mean); CI None for fewer than 2 values."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, t_critical_95(len(xs) - 1) * math.sqrt(var) / math.sqrt(len(xs))


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
) -> BenchResult:
    """Run ``workload`` on ``model`` and return a BenchResult (means and 95 % CIs over repeats).

    ``meters`` is passed to ``greenllm.measure.measure`` (``"auto"``, names or Meter objects);
    ``device`` defaults to the model's device (the model is moved there if it differs).
    The roofline bandwidth comes from ``bandwidth_bytes_per_s``, else the device profile
    (``profile`` or the detected one), else a measured copy bandwidth;
    ``device["bandwidth_source"]``
    says which.
    """
    import torch

    from .measure import invalid_window_reasons, measure, resolve_meters
    from .models import model_size_bytes, param_count

    wl = parse_workload(workload if workload is not None else {})
    prompts = load_prompts(wl.prompts, wl.limit)
    # --- runtime (issue 14): torch runs the model in memory; llama.cpp / onnxruntime run an
    # exported file (``model`` may be that file's path or an open runtime) ---------------------
    from .runtimes import is_runtime, open_runtime

    other = wl.runtime != "torch" or is_runtime(model) or isinstance(model, (str, Path))
    if other:
        dev = torch.device("cpu")
        rt, owned = open_runtime(wl.runtime, model, tokenizer, threads=wl.threads)
        model = rt
        n_params, size_bytes, wbytes = rt.n_params, rt.size_bytes, rt.weight_bytes_per_token
    else:
        try:
            model_device = next(model.parameters()).device
        except StopIteration:
            model_device = torch.device("cpu")
        dev = torch.device(device) if device is not None else model_device
        if dev != model_device:
            model = model.to(dev)
        n_params = param_count(model)
        size_bytes = model_size_bytes(model)
        wbytes = weight_bytes_per_token(model)
    b_params = n_params / 1e9
    bandwidth, bw_source, profile_name = _resolve_bandwidth(profile, dev, bandwidth_bytes_per_s)
    batches = _tokenize_batches(tokenizer, prompts, wl.batch_size, dev)
    if not other:
        rt, owned = open_runtime(
            "torch",
            model,
            tokenizer,
            threads=wl.threads,
            device=dev,
            compile=wl.compile,
            max_cache_len=max(b["input_ids"].shape[1] for b in batches) + wl.max_new_tokens,
        )

    def one(batch):
        return rt.run_request(batch, wl.max_new_tokens)

    # --- end runtime --------------------------------------------------------------------------
    cuda = dev.type == "cuda"

    meter_objs, created = resolve_meters(meters)  # once, reused by every repeat's window
    was_training = model.training
    model.eval()
    per_repeat: list[dict[str, float | None]] = []
    report: EnergyReport | None = None  # the last valid window
    gpu_utils: list[float | None] = []
    warnings: list[str] = []
    reruns_left = wl.repeats  # a window a meter failed in is rerun, at most this often
    try:
        with no_autograd(model):
            t_warm = time.perf_counter()
            for i in range(max(wl.warmup, 1 if wl.compile else 0)):
                one(batches[i % len(batches)])
            warmup_s = time.perf_counter() - t_warm
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            for rep in range(wl.repeats):
                while True:
                    runs = []
                    with measure(meter_objs, hz=hz) as handle:
                        for b in batches:
                            runs.append(one(b))
                    win = handle.report
                    row = _repeat_metrics(runs, win, wl, wbytes, bandwidth, b_params)
                    bad = invalid_window_reasons(win)
                    if not bad:
                        report = win
                        break
                    what = f"repeat {rep + 1}: energy window invalid ({'; '.join(bad)})"
                    if reruns_left > 0:
                        reruns_left -= 1
                        warnings.append(f"{what}; rerun")
                        continue
                    warnings.append(f"{what}; its energy is excluded")
                    row.update(dict.fromkeys(ENERGY_METRICS))
                    break
                gpu_utils.append(_gpu_util(win, handle))
                per_repeat.append(row)
    finally:
        if was_training:
            model.train()
        for m in created:
            m.close()
        if owned:  # issue 14: the runtime this call opened
            rt.close()
    if report is None:
        raise MeterError(
            "the energy meter failed in every benchmark window ("
            + "; ".join(invalid_window_reasons(win))[:300]
            + "); no energy figure "
            "can be given: check the meter (greenllm detect) and run again"
        )

    keys = list(per_repeat[0])
    metrics: dict[str, float | None] = {}
    ci95: dict[str, float | None] = {}
    for k in keys:
        metrics[k], ci95[k] = mean_ci95([r[k] for r in per_repeat])
    metrics["gpu_util_mean_pct"], ci95["gpu_util_mean_pct"] = mean_ci95(gpu_utils)
    metrics["peak_memory_bytes"] = max(r["peak_memory_bytes"] or 0 for r in per_repeat)
    ci95.pop("peak_memory_bytes", None)
    metrics["cuda_max_allocated_bytes"] = (
        float(torch.cuda.max_memory_allocated(dev)) if cuda else None
    )
    metrics["size_bytes"] = size_bytes
    metrics["params"] = n_params
    metrics["weight_bytes_per_token"] = wbytes
    return BenchResult(
        metrics=metrics,
        ci95={k: v for k, v in ci95.items() if k in metrics},
        meter="+".join(report.meters) if report.meters else report.method,
        estimated=bool(report.estimated),
        repeats=wl.repeats,
        workload={
            **to_dict(wl),
            "n_prompts": len(prompts),
            "n_batches": len(batches),
            "decoding": rt.decoding,
            "warmup_s": warmup_s,
        },
        device={
            "torch_device": str(dev),
            "profile": profile_name,
            "memory_bandwidth_bytes_per_s": bandwidth,
            "bandwidth_source": bw_source,
            "torch_threads": torch.get_num_threads(),
            **{f"runtime_{k}" if k != "runtime" else k: v for k, v in rt.info().items()},
        },
        energy=report,
        per_repeat=tuple(per_repeat),
        warnings=tuple(warnings),
    )


# per-repeat metrics that come from the energy window (None for an excluded window)
ENERGY_METRICS = (
    "energy_j",
    "mean_power_w",
    "energy_per_request_j",
    "energy_per_token_j",
    "tokens_per_wh",
    "edp_js",
    "edp_js_per_b_params",
    "wh_per_b_params",
)


def _repeat_metrics(
    runs: list[dict],
    report: EnergyReport,
    wl: Workload,
    wbytes: int,
    bandwidth: float,
    b_params: float,
) -> dict[str, float | None]:
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
        "energy_j": energy,
        "duration_s": float(report.duration_s),
        "mean_power_w": float(report.mean_power_w),
        "energy_per_request_j": e_req,
        "energy_per_token_j": energy / out_tokens,
        "tokens_per_wh": out_tokens / (energy / J_PER_WH) if energy > 0 else None,
        "edp_js": e_req * e2e,
        "edp_js_per_b_params": e_req * e2e / b_params if b_params else None,
        "wh_per_b_params": e_req / J_PER_WH / b_params if b_params else None,
        "roofline_fraction": ideal_decode_s / decode_s if steps and decode_s > 0 else None,
        "peak_memory_bytes": float(max(r["peak_rss_bytes"] for r in runs)),
    }
