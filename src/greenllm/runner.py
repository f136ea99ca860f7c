"""The runner: the only module that composes everything.

``run(recipe, out_dir=None, resume=True, progress=True) -> RunSummary``. For the implicit
baseline and each variant: load the model -> apply the steps one at a time, each measured with
``greenllm.measure.measure`` (the energy the compression itself costs; under
``control.capped`` when the step asks for ``power_cap_w`` / ``power_mode``) -> evals -> bench ->
store, each finished unit committed before the next begins. Steps and evals never know they
are measured. Re-running resumes from the store and skips finished work; SIGINT / SIGTERM stop
at once (the current unit is abandoned, hardware settings are restored by ``capped``), mark the
run interrupted and re-raise KeyboardInterrupt (the CLI exits 130). Then the report is written.
No torch at module level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.metadata
import os
import platform
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import to_dict
from .errors import ConfigError, GreenLLMError
from .outdir import OutputLock, storage_error
from .recipe import BASELINE, Recipe, digest, load_recipe, variant_definition
from .store import STORE_FILENAME, Store

PACKAGES = (
    "greenllm",
    "torch",
    "transformers",
    "numpy",
    "optimum-quanto",
    "torchao",
    "peft",
    "bitsandbytes",
    "lm_eval",
    "datasets",
    "codecarbon",
    "nvidia-ml-py",
    "jetson-stats",
)


@dataclass
class RunSummary:
    out_dir: Path
    store_path: Path
    run_id: int
    status: str  # finished | interrupted | failed
    variants: list[str]
    done: dict[str, int] = field(default_factory=dict)  # units computed in this run
    skipped: dict[str, int] = field(default_factory=dict)  # units found in the store
    report_files: list[Path] = field(default_factory=list)
    duration_s: float = 0.0


@dataclass
class _Unit:
    name: str
    variant_key: str
    definition: dict
    steps: list[tuple[str, Any]]
    eval_keys: list[str]
    bench_key: str

    def plan_entry(self) -> dict:
        return {
            "name": self.name,
            "variant_key": self.variant_key,
            "eval_keys": self.eval_keys,
            "bench_key": self.bench_key,
            "steps": self.definition["steps"],
        }


_TRAINING_STEPS = ("train", "distill", "lora")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def plan(recipe: Recipe) -> list[_Unit]:
    """The units of work with their store keys (baseline first)."""
    bench_def = {
        "workload": to_dict(recipe.workload),
        "meters": recipe.meters,
        "measure": to_dict(recipe.measure),
    }
    units = []
    for name, steps in recipe.all_variants():
        definition = variant_definition(recipe, steps)
        vkey = digest(definition)
        ekeys = [digest({"variant": vkey, "eval": {k: to_dict(c)}}) for k, c in recipe.evals]
        units.append(
            _Unit(
                name, vkey, definition, steps, ekeys, digest({"variant": vkey, "bench": bench_def})
            )
        )
    return units


# ---------------------------------------------------------------- environment


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _driver_version() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module\s+([\d.]+)", text)
    return m.group(1) if m else text.splitlines()[0].strip()


def _jetpack() -> str | None:
    try:
        return Path("/etc/nv_tegra_release").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def collect_environment(
    recipe: Recipe, meter_factories: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Hardware / device profile, driver, package versions, meters and sampling settings.
    ``meter_factories`` is passed to ``detect_meters(factories=...)`` (tests inject meters)."""
    hardware: dict[str, Any] = {
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "cpu_count": os.cpu_count(),
        "model_device": recipe.model.device,
    }
    try:
        import psutil

        hardware["memory_bytes"] = int(psutil.virtual_memory().total)
    except Exception:  # psutil is a dependency; an exotic platform may still refuse
        pass
    try:
        from .devices import detect_device

        det = detect_device()
        hardware["device"] = det.to_dict()
        hardware["device_profile"] = det.profile.to_dict()
    except Exception as exc:  # detection never blocks a run
        hardware["device_error"] = str(exc)
    hardware["nvidia_driver"] = _driver_version()
    hardware["jetson_release"] = _jetpack()
    meters: dict[str, Any] = {"requested": recipe.meters}
    if recipe.meters == "auto":
        meters.update(_detected_meters(meter_factories))
    return {
        "hardware": hardware,
        "software": _versions(),
        "meters": meters,
        "sampling_hz": recipe.measure.hz,
        "idle_s": recipe.measure.idle_s,
    }


def _detected_meters(factories: dict[str, Any] | None) -> dict[str, Any]:
    """What ``meters: auto`` finds here, as JSON (``Detection.to_json()``: the chosen meters,
    each meter's availability and reason). Every meter the detection opened is closed again,
    also when describing it fails: the measurements open their own."""
    from .meters.detect import close_meters, detect_meters

    try:
        det = detect_meters(factories=factories)
    except Exception as exc:  # detection never blocks a run; measure() reports it properly
        return {"detect_error": str(exc)}
    try:
        return {"detected": det.to_json()}
    finally:
        close_meters(det.meters)


# ---------------------------------------------------------------- resolution of paths

_PATH_FIELDS = ("data", "path", "prompts", "file")


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or value.startswith("builtin:") or "://" in value:
        return value
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists():
        return value
    cand = base / p
    return str(cand) if cand.exists() else value


def _resolve_cfg(cfg: Any, base: Path) -> Any:
    if not dataclasses.is_dataclass(cfg):
        return cfg
    changes = {
        f.name: _resolve_path(getattr(cfg, f.name), base)
        for f in dataclasses.fields(cfg)
        if f.name in _PATH_FIELDS
    }
    changes = {k: v for k, v in changes.items() if v != getattr(cfg, k)}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _calibration_source(source: str | None, base: Path) -> str | None:
    """The recipe's calibration text as a path: builtin:NAME through the evals data sets."""
    if not source:
        return None
    if source.startswith("builtin:"):
        from .builtin_data import resolve_data

        return str(resolve_data(source, "calibration"))
    return _resolve_path(source, base)


def _model_source(recipe: Recipe) -> str:
    return _resolve_path(recipe.model.id, recipe.base_dir)


# ---------------------------------------------------------------- signals and power control


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C while the run is in progress (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _power_setting(cfg: Any):
    """``control.capped`` for a step config with power_cap_w / power_mode, else a no-op.
    The journal and device lock live in the system-wide control directory, not in OUT."""
    from .control.select import select_power_cap

    cap, value = select_power_cap(
        getattr(cfg, "power_cap_w", None), getattr(cfg, "power_mode", None)
    )
    if cap is None:
        return contextlib.nullcontext()
    from .control.base import capped

    return capped(cap, value)


# ---------------------------------------------------------------- the run


class _Log:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(
                f"[greenllm {time.perf_counter() - self.t0:7.1f}s] {msg}",
                file=sys.stderr,
                flush=True,
            )


def _unit_done(store: Store, unit: _Unit) -> bool:
    return (
        len(store.steps(unit.variant_key)) == len(unit.steps)
        and all(store.get_eval(k) is not None for k in unit.eval_keys)
        and store.get_bench(unit.bench_key) is not None
    )


def _check_model_source(recipe: Recipe) -> None:
    """A model given as a local path (absolute, ./, ../ or ~) must exist before any work (or
    any --fresh) starts; hub ids ("org/name") are checked when the model loads."""
    mid = str(recipe.model.id)
    if not mid.startswith(("/", "./", "../", "~")):
        return
    src = Path(_model_source(recipe)).expanduser()
    if not src.exists():
        raise ConfigError(
            f"model.id: {mid!r} does not exist (resolved to {str(src)!r}); fix "
            "the path in the recipe"
        )


def _move_aside(out: Path, log: _Log) -> Path | None:
    """--fresh: move the previous store and report files to OUT/previous-<time>/ (never
    deleted). Called with the output lock held."""
    from .report.build import finish_swap, report_files_in

    finish_swap(out)
    names = [STORE_FILENAME + s for s in ("", "-wal", "-shm")]
    found = [out / n for n in names if (out / n).exists()] + report_files_in(out)
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = out / f"previous-{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = out / f"previous-{stamp}-{n}"
    try:
        dest.mkdir()
        for p in found:
            os.rename(p, dest / p.name)
    except OSError as exc:
        raise storage_error(exc, dest, "move the previous results aside (--fresh)") from None
    log(f"--fresh: the previous results were moved to {dest}")
    return dest


def run(
    recipe: Recipe | str | Path | dict,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
) -> RunSummary:
    """Run a recipe into ``out_dir`` (store + report); see the module docstring.

    The recipe is loaded and checked first (everything checkable from it, paths and the
    device too); then the output directory is locked for the whole run (a second run into it
    fails at once, naming this run's pid); only then does ``resume=False`` move the previous
    results aside (to ``OUT/previous-<time>/``)."""
    from .limits import check_writable_dir
    from .modelfiles import check_torch_device
    from .preflight import preflight

    recipe = load_recipe(recipe)
    preflight(recipe)  # everything checkable from the recipe, before any work
    _check_model_source(recipe)
    out = Path(out_dir or recipe.output or Path("runs") / slug(recipe.name))
    check_writable_dir(out, "output directory")  # creatable, writable, not full
    check_torch_device(recipe.model.device)  # cuda on a CPU-only torch: now, not later
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, out, "create the output directory") from None
    log = _Log(progress)
    with OutputLock(out):
        if not resume:
            _move_aside(out, log)
        return _run_locked(recipe, out, log)


def _run_locked(recipe: Recipe, out: Path, log: _Log) -> RunSummary:
    units = plan(recipe)
    t0 = time.perf_counter()
    store = Store(out)
    summary = RunSummary(
        out_dir=out,
        store_path=store.path,
        run_id=-1,
        status="running",
        variants=[u.name for u in units],
        done={"steps": 0, "evals": 0, "benches": 0},
        skipped={"variants": 0, "steps": 0, "evals": 0, "benches": 0},
    )
    try:
        stale = store.mark_interrupted()
        if stale:
            log(
                f"run(s) {', '.join(map(str, stale))} ended without finishing (killed); "
                "marked interrupted"
            )
        summary.run_id = run_id = store.begin_run(
            recipe.name, recipe.to_dict(), [u.plan_entry() for u in units]
        )
        store.set_environment(run_id, **collect_environment(recipe))
        status = "failed"
        try:
            with _sigterm_as_interrupt():
                runner = _Runner(recipe, store, run_id, out, log, summary)
                for unit in units:
                    runner.run_unit(unit)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            log("interrupted: finished results are in the store; run again to resume")
            raise
        finally:
            summary.status = status
            store.finish_run(run_id, status)
    finally:
        store.close()
    log("writing the report")
    from .report.build import write_report

    summary.report_files = write_report(out, out)
    summary.duration_s = time.perf_counter() - t0
    log(f"done in {summary.duration_s:.1f} s: {out}")
    return summary


class _Runner:
    def __init__(
        self, recipe: Recipe, store: Store, run_id: int, out: Path, log: _Log, summary: RunSummary
    ):
        self.recipe, self.store, self.run_id, self.out = recipe, store, run_id, out
        self.log, self.summary = log, summary
        self.base = recipe.base_dir
        self.calibration = _calibration_source(recipe.calibration, self.base)
        self._teacher = None

    def _load(self):
        from .models import load_model

        m = self.recipe.model
        return load_model(
            _model_source(self.recipe),
            dtype=m.dtype,
            device=m.device,
            trust_remote_code=m.trust_remote_code,
        )

    def _teacher_model(self):
        if self._teacher is None:
            self.log("loading the baseline model as the distillation teacher")
            self._teacher, _ = self._load()
        return self._teacher

    def run_unit(self, unit: _Unit) -> None:
        store, summary = self.store, self.summary
        store.ensure_variant(
            unit.variant_key, unit.name, unit.definition, len(unit.steps), self.run_id
        )
        if _unit_done(store, unit):
            summary.skipped["variants"] += 1
            self.log(f"{unit.name}: already in the store, skipped")
            return
        import torch

        torch.manual_seed(self.recipe.seed)
        self.log(f"{unit.name}: loading {self.recipe.model.id}")
        model, tok = self._load()
        try:
            model = self._apply_steps(unit, model, tok)
            self._evals(unit, model, tok)
            self._bench(unit, model, tok)
        finally:
            del model
            gc.collect()

    def _apply_steps(self, unit: _Unit, model, tok):
        from .measure import measure
        from .steps.base import StepContext, apply_step

        if not unit.steps:
            return model
        teacher = self._teacher_model() if any(k == "distill" for k, _ in unit.steps) else None
        ctx = StepContext(
            tokenizer=tok,
            calibration=self.calibration,
            teacher=teacher,
            device=self.recipe.model.device,
            seed=self.recipe.seed,
            progress=False,
        )
        stored = len(self.store.steps(unit.variant_key))
        for i, (key, cfg) in enumerate(unit.steps):
            cfg = _resolve_cfg(cfg, self.base)
            self.log(
                f"{unit.name}: step {i + 1}/{len(unit.steps)} {key}"
                + (" (re-applied; its measurement is already stored)" if i < stored else "")
            )
            try:
                with _power_setting(cfg):
                    with measure(
                        self.recipe.meters,
                        hz=self.recipe.measure.hz,
                        idle_s=self.recipe.measure.idle_s,
                    ) as m:
                        # training steps get per-epoch energy (and carbon) in their records
                        ctx.extras["train_hooks"] = (
                            [self._epoch_hook(m)] if key in _TRAINING_STEPS else None
                        )
                        model, result = apply_step(model, key, cfg, ctx)
            except GreenLLMError as exc:
                hint = ""
                if self.calibration is None and "calibration" in str(exc):
                    hint = (
                        "; add 'calibration: builtin:wiki-sample' (or a text file) at the "
                        "top level of the recipe"
                    )
                raise GreenLLMError(f"variants.{unit.name}[{i}] ({key}): {exc}{hint}") from exc
            result = dataclasses.replace(result, energy=m.report)
            if self.store.add_step(unit.variant_key, i, result, self.run_id):
                self.summary.done["steps"] += 1
            else:
                self.summary.skipped["steps"] += 1
        return model

    def _epoch_hook(self, handle):
        from .carbon import grid_intensity
        from .training import EpochEnergyHook

        c = self.recipe.carbon
        intensity = grid_intensity(
            region=c.region, intensity_g_per_kwh=c.intensity_g_per_kwh
        ).g_per_kwh
        return EpochEnergyHook(handle, intensity_g_per_kwh=intensity, pue=c.pue)

    def _evals(self, unit: _Unit, model, tok) -> None:
        from .evals import EVALS

        for (key, cfg), ekey in zip(self.recipe.evals, unit.eval_keys):
            if self.store.get_eval(ekey) is not None:
                self.summary.skipped["evals"] += 1
                continue
            self.log(f"{unit.name}: eval {key}")
            cfg = _resolve_cfg(cfg, self.base)
            extra = {}
            if key == "fidelity" and cfg.reference == "baseline":
                # fidelity scores against the baseline's stored next-token distributions
                extra["reference"] = self._fidelity_reference(unit, cfg, model, tok)
            result = EVALS.get(key).run(model, tok, cfg, **extra)
            self.store.add_eval(ekey, unit.variant_key, result, self.run_id)
            self.summary.done["evals"] += 1

    def _fidelity_reference(self, unit: _Unit, cfg, model, tok) -> Path:
        """The baseline's fidelity reference for ``cfg`` (built once per output folder: from
        ``model`` when this unit is the baseline, else from a freshly loaded baseline)."""
        from .evals.fidelity import build_reference, reference_name

        path = self.out / "references" / reference_name(cfg)
        if not path.exists():
            if unit.name == BASELINE:
                build_reference(model, tok, cfg, path)
            else:
                self.log(f"{unit.name}: loading the baseline for the fidelity reference")
                base, base_tok = self._load()
                build_reference(base, base_tok, cfg, path)
                del base
        return path

    def _bench(self, unit: _Unit, model, tok) -> None:
        from .bench import bench

        if self.store.get_bench(unit.bench_key) is not None:
            self.summary.skipped["benches"] += 1
            return
        self.log(f"{unit.name}: bench")
        result = bench(
            model,
            tok,
            _resolve_cfg(self.recipe.workload, self.base),
            meters=self.recipe.meters,
            device=self.recipe.model.device,
            hz=self.recipe.measure.hz,
        )
        self.store.add_bench(unit.bench_key, unit.variant_key, result, self.run_id)
        self.summary.done["benches"] += 1


__all__ = ["RunSummary", "run", "plan", "collect_environment", "BASELINE"]
