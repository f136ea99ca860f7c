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
    comparison_key: str = ""
    prefix_keys: list[str] = field(default_factory=list)  # [k-1]: key of the first k steps
    model: str | None = None  # a study's model name (None: a plain one-model recipe)
    device: str | None = None  # a study's device name (None: this machine)
    skip: str | None = None  # why this cell is not run ("does not fit: ...")

    def plan_entry(self) -> dict:
        entry = {
            "name": self.name,
            "variant_key": self.variant_key,
            "eval_keys": self.eval_keys,
            "bench_key": self.bench_key,
            "comparison_key": self.comparison_key,
            "steps": self.definition["steps"],
        }
        if self.model is not None:  # a study: the cell's coordinates (and why it is skipped)
            entry["model"] = self.model
            entry["device"] = self.device or LOCAL_DEVICE
            if self.skip:
                entry["skip"] = self.skip
        return entry


LOCAL_DEVICE = "local"  # the device name of a study's cells when it names no devices


_TRAINING_STEPS = ("train", "distill", "lora")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def plan(recipe: Recipe) -> list[_Unit]:
    """The units of work with their store keys (baseline first). The bench key of every unit
    includes the comparison key (the workload and the set of variants measured together in
    rounds): a paired delta only means something between windows of the same rounds.

    A study (``models:`` / ``devices:``) plans one group per (model, device), each starting
    with its baseline. A variant's key does not depend on the device (it is compressed once
    and its steps are stored once); its eval, bench and comparison keys do."""
    if not recipe.is_study:
        return _plan_group(recipe)
    units: list[_Unit] = []
    for mname, spec in recipe.model_list():
        sub = recipe.for_model(spec)
        for dev in recipe.devices or [None]:
            units += _plan_group(sub, mname, dev)
    return units


def _plan_group(recipe: Recipe, model: str | None = None, device: Any = None) -> list[_Unit]:
    dkey = {"device": device.key()} if device is not None else {}
    bench_def = {
        "workload": to_dict(recipe.workload),
        "meters": recipe.meters,
        "measure": to_dict(recipe.measure),
    }
    units = []
    for name, steps in recipe.all_variants():
        definition = variant_definition(recipe, steps)
        vkey = digest(definition)
        ekeys = [
            digest({"variant": vkey, "eval": {k: to_dict(c)}, **dkey}) for k, c in recipe.evals
        ]
        prefixes = [digest(variant_definition(recipe, steps[:k])) for k in range(1, len(steps))]
        units.append(
            _Unit(
                name,
                vkey,
                definition,
                steps,
                ekeys,
                "",
                "",
                prefixes + [vkey] if steps else [],
                model=model,
                device=device.name if device is not None else None,
            )
        )
    cmp_key = digest({"bench": bench_def, "variants": [u.variant_key for u in units], **dkey})
    for u in units:
        u.comparison_key = cmp_key
        u.bench_key = digest({"variant": u.variant_key, "bench": bench_def, "comparison": cmp_key})
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
    try:
        from .conditions import default_probe

        hardware["power_settings"] = default_probe().power_settings()
    except Exception as exc:  # noqa: BLE001 - never blocks a run
        hardware["power_settings_error"] = str(exc)
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
    """``control.capped`` for a step config with power_cap_w / power_mode and / or locked
    ``clocks``, else a no-op. The journal and device lock live in the system-wide control
    directory, not in OUT; every setting is restored on exit, errors and signals included."""
    from .control.select import select_clocks, select_power_cap

    cap, value = select_power_cap(
        getattr(cfg, "power_cap_w", None), getattr(cfg, "power_mode", None)
    )
    clock_cap, clock_value = (
        select_clocks(cfg.clocks) if getattr(cfg, "clocks", None) else (None, None)
    )
    if cap is None and clock_cap is None:
        return contextlib.nullcontext()
    from .control.base import capped

    stack = contextlib.ExitStack()
    if cap is not None:
        stack.enter_context(capped(cap, value))
    if clock_cap is not None:
        stack.enter_context(capped(clock_cap, clock_value))
    return stack


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


def _check_clocks(recipe: Recipe) -> None:
    """A step's locked ``clocks`` must parse before any work (the device is checked when the
    step runs, under the journal)."""
    from .control.clocks import parse_clocks

    for name, steps in recipe.variants.items():
        for i, (key, cfg) in enumerate(steps):
            if getattr(cfg, "clocks", None):
                try:
                    parse_clocks(cfg.clocks)
                except GreenLLMError as exc:
                    raise ConfigError(f"variants.{name}[{i}] ({key}).clocks: {exc}") from None


def _check_model_source(recipe: Recipe) -> None:
    """A model given as a local path (absolute, ./, ../ or ~) must exist before any work (or
    any --fresh) starts; hub ids ("org/name") are checked when the model loads."""
    for i, (_, spec) in enumerate(recipe.model_list()):
        mid = str(spec.id)
        if not mid.startswith(("/", "./", "../", "~")):
            continue
        src = Path(_resolve_path(mid, recipe.base_dir)).expanduser()
        if not src.exists():
            field_ = f"models[{i}].id" if recipe.models else "model.id"
            raise ConfigError(
                f"{field_}: {mid!r} does not exist (resolved to {str(src)!r}); fix "
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
    *,
    probe: Any = None,
    cluster: str | None = None,
    only_device: str | None = None,
    shared_out: bool = False,
) -> RunSummary:
    """Run a recipe into ``out_dir`` (store + report); see the module docstring.

    The recipe is loaded and checked first (everything checkable from it, paths and the
    device too); then the output directory is locked for the whole run (a second run into it
    fails at once, naming this run's pid); only then does ``resume=False`` move the previous
    results aside (to ``OUT/previous-<time>/``). ``probe`` replaces the conditions probe of
    the metered windows (``greenllm.conditions.ConditionsProbe``; tests inject readings).

    A study: ``cluster`` (``"ray"``, ``"ray://HOST:PORT"``; ``RAY_ADDRESS`` is honoured) runs
    the groups of devices reached ``via: ray:<label>`` on those nodes; ``only_device`` runs
    one device's cells here instead (to be merged with ``greenllm compare``); ``shared_out``
    says OUT is mounted at the same path on every node (artifacts go by path)."""
    from .limits import check_writable_dir
    from .modelfiles import check_torch_device
    from .preflight import preflight

    recipe = load_recipe(recipe)
    preflight(recipe)  # everything checkable from the recipe, before any work
    _check_clocks(recipe)
    _check_model_source(recipe)
    study_opts = _study_options(recipe, cluster, only_device, shared_out)
    out = Path(out_dir or recipe.output or Path("runs") / slug(recipe.name))
    check_writable_dir(out, "output directory")  # creatable, writable, not full
    for dev in _local_torch_devices(recipe, study_opts):
        check_torch_device(dev)  # cuda on a CPU-only torch: now, not later
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, out, "create the output directory") from None
    log = _Log(progress)
    with OutputLock(out):
        if not resume:
            _move_aside(out, log)
        return _run_locked(recipe, out, log, probe, study_opts)


def _study_options(
    recipe: Recipe, cluster: str | None, only_device: str | None, shared_out: bool
) -> dict[str, Any]:
    """Check the study flags against the recipe (before any work)."""
    names = [d.name for d in recipe.devices]
    if only_device is not None and only_device not in names:
        from .registry import did_you_mean

        hint = did_you_mean(only_device, names)
        raise ConfigError(
            f"--only-device: {only_device!r} is not a device of this recipe"
            + (f"; did you mean {hint!r}?" if hint else "")
            + f" (devices: {', '.join(names) or 'none'})"
        )
    if cluster is not None and not recipe.devices:
        raise ConfigError(
            "--cluster: this recipe names no devices; add 'devices:' with "
            "via: 'ray:<label>' (see docs/devices.md) or run without --cluster"
        )
    if cluster is not None and not (cluster in ("ray", "auto") or cluster.startswith("ray://")):
        raise ConfigError(
            f"--cluster: {cluster!r} is not a cluster address; use 'ray' (RAY_ADDRESS or the "
            "local Ray cluster) or 'ray://HOST:PORT'"
        )
    remote = [d.name for d in recipe.devices if d.ray_label and d.name != only_device]
    if only_device is None and remote and cluster is None:
        raise ConfigError(
            f"devices {', '.join(remote)} are reached through Ray: run with --cluster ray "
            "(or ray://HOST:PORT), or with --only-device NAME to run one device's cells on "
            "this machine"
        )
    cdev = next((d for d in recipe.devices if d.name == recipe.compress_on), None)
    if cdev is not None and cdev.ray_label and only_device is None and cluster is None:
        raise ConfigError(
            f"compress_on: {recipe.compress_on!r} is a Ray device: run with --cluster ray"
        )
    return {"cluster": cluster, "only_device": only_device, "shared_out": shared_out}


def _local_torch_devices(recipe: Recipe, opts: dict[str, Any]) -> list[str]:
    """The torch devices this machine will use (the model's, and its local devices')."""
    out = [recipe.model.device]
    for d in recipe.devices:
        local = d.via == "local" or d.name == opts.get("only_device")
        if local and d.torch_device and (opts.get("only_device") in (None, d.name)):
            out.append(d.torch_device)
    return sorted(set(out))


def _run_locked(
    recipe: Recipe, out: Path, log: _Log, probe: Any = None, study_opts: dict | None = None
) -> RunSummary:
    units = plan(recipe)
    only = (study_opts or {}).get("only_device")
    if only is not None:  # this store holds that device's cells only (compare merges them)
        units = [u for u in units if u.device == only]
    if recipe.is_study:
        from .study_fit import mark_unfit

        mark_unfit(recipe, units, log, only_device=(study_opts or {}).get("only_device"))
    t0 = time.perf_counter()
    store = Store(out)
    summary = _new_summary(out, store.path, units)
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
                if recipe.is_study:
                    _run_study(recipe, units, store, run_id, out, log, summary, probe, study_opts)
                else:
                    runner = _Runner(recipe, store, run_id, out, log, summary, probe=probe)
                    runner.run_all(units)
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


SCHEMES = ("resident", "reload", "bracket")
MEMORY_HEADROOM_BYTES = 1 << 30  # free memory kept beyond the models' own sizes


class _Runner:
    """Prepares every variant (steps, metered evals), then measures them in rounds."""

    def __init__(
        self,
        recipe: Recipe,
        store: Store,
        run_id: int,
        out: Path,
        log: _Log,
        summary: RunSummary,
        probe: Any = None,
        *,
        device_name: str | None = None,
        artifacts_root: Path | None = None,
        from_artifacts: bool = False,
    ):
        self.recipe, self.store, self.run_id, self.out = recipe, store, run_id, out
        # a study group: its device (environment, idle power and power settings are that
        # device's), where the compressed models are, and whether to start from them
        self.device_name = device_name
        self.artifacts_root = artifacts_root or out / "artifacts"
        self.from_artifacts = from_artifacts
        self._scheme: str | None = None
        self.log, self.summary = log, summary
        self.base = recipe.base_dir
        self.calibration = _calibration_source(recipe.calibration, self.base)
        self._teacher = None
        if probe is None:
            from .conditions import default_probe

            probe = default_probe()
        self._probe = probe
        self.meter_objs: list[Any] = []
        self.idle_w: float | None = None
        # prefix key -> (model, donor variant name, whether the model is a private copy)
        self._snapshots: dict[str, tuple[Any, str, bool]] = {}
        self._all_units: list[_Unit] = []
        self._needed: dict[str, int] = {}  # prefix key -> units still to start from it
        self.warnings: list[str] = []

    # ------------------------------------------------------------ loading
    def _load(self):
        from .models import load_model

        m = self.recipe.model
        base = getattr(self, "_base_key", None)
        if self.from_artifacts and base and (self.artifacts_root / base / "greenllm.json").exists():
            # a study device: the baseline as the driver saved it (what every variant of
            # this model was compressed from), not a second download on the node
            return load_model(str(self.artifacts_root / base), device=m.device)
        return load_model(
            _model_source(self.recipe),
            dtype=m.dtype,
            device=m.device,
            trust_remote_code=m.trust_remote_code,
        )

    def _source_name(self) -> str:
        base = getattr(self, "_base_key", None)
        if self.from_artifacts and base and (self.artifacts_root / base / "greenllm.json").exists():
            return f"{self.recipe.model.id} (as saved for the devices)"
        return str(self.recipe.model.id)

    def _teacher_model(self):
        if self._teacher is None:
            self.log("loading the baseline model as the distillation teacher")
            self._teacher, _ = self._load()
        return self._teacher

    # ------------------------------------------------------------ the whole run
    def run_all(self, units: list[_Unit]) -> None:
        from .measure import resolve_meters

        store = self.store
        self._base_key = units[0].variant_key
        for u in units:
            store.ensure_variant(u.variant_key, u.name, u.definition, len(u.steps), self.run_id)
        if all(_unit_done(store, u) for u in units):
            self.summary.skipped["variants"] += len(units)
            self.log("every variant is already in the store; nothing to measure")
            return
        self._all_units = units
        self._plan_prefixes(units)
        self.meter_objs, created = resolve_meters(self.recipe.meters)
        try:
            self._measure_idle(units)
            need_rounds = any(store.get_bench(u.bench_key) is None for u in units)
            scheme = self.recipe.workload.scheme
            if scheme == "bracket" and need_rounds:
                self._run_bracketed(units)
                return
            models: dict[str, Any] = {}
            tok = None
            for u in units:
                model, tok = self._prepare(u)
                if not need_rounds:
                    del model
                    gc.collect()
                    continue
                if u.name == BASELINE and scheme == "auto":
                    scheme = self._choose_scheme(model, len(units))
                    self.log(f"rounds: scheme {scheme}")
                self._scheme = scheme
                if scheme == "reload" and u.name != BASELINE and model is not None:
                    why = self._can_save(model)
                    if why:  # neither resident nor reloadable: the baseline brackets them
                        self.log(f"{u.name} cannot be reloaded ({why}): scheme bracket")
                        del model
                        models.clear()
                        self._drop_snapshots()
                        self._run_bracketed(units)
                        return
                    self._save_artifact(u, model, tok)
                    del model
                    gc.collect()
                    continue
                if scheme == "reload":
                    del model  # the baseline reloads from its source each round
                    gc.collect()
                    continue
                models[u.name] = model
            self._drop_snapshots()
            if need_rounds:
                self._run_rounds(units, models, tok, scheme)
        finally:
            for m in created:
                m.close()
            self._drop_snapshots()

    def _measure_idle(self, units: list[_Unit]) -> None:
        """Idle power, once, before anything loads (the default: 10 s with a real meter)."""
        from .bench import measure_idle_power

        idle_s = self.recipe.measure.idle_s
        real = any(not all(d.estimated for d in m.domains() if d.in_total) for m in self.meter_objs)
        if idle_s is None:
            idle_s = 10.0 if real else 0.0
        if idle_s <= 0:
            return
        if not real:
            self.log(
                "idle power not measured: the estimate meter models power from utilisation, "
                "so an idle baseline means nothing for it (the methodology says so)"
            )
            return
        self.log(f"measuring idle power for {idle_s:g} s")
        self.idle_w = measure_idle_power(self.meter_objs, idle_s, self.recipe.measure.hz)
        env = self._env()
        meters = dict(env.get("meters") or {})
        meters["idle_power_w"] = self.idle_w
        meters["idle_measured_s"] = idle_s
        self._set_env({**env, "meters": meters, "idle_s": idle_s})

    def _choose_scheme(self, baseline_model, n_units: int) -> str:
        """resident when every model fits in memory with headroom, else reload."""
        from .models import model_size_bytes

        size = model_size_bytes(baseline_model)
        need = size * (n_units - 1) * 1.1 + MEMORY_HEADROOM_BYTES
        free = _free_memory_bytes(self.recipe.model.device)
        if free is None or free >= need:
            return "resident"
        self.log(
            f"the {n_units} models need about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB "
            "is free: each variant is saved once and reloaded per round"
        )
        return "reload"

    # ------------------------------------------------------------ shared step prefixes
    def _plan_prefixes(self, units: list[_Unit]) -> None:
        """Prefix keys that more than one unit starts with (or that are another unit)."""
        count: dict[str, int] = {}
        for u in units:
            for k in u.prefix_keys:
                count[k] = count.get(k, 0) + 1
        self._needed = {k: n - 1 for k, n in count.items() if n > 1}

    def _drop_snapshots(self) -> None:
        self._snapshots.clear()
        gc.collect()

    def _start_from_prefix(self, unit: _Unit):
        """(model, k, donor name) for the longest stored snapshot of unit's first k steps."""
        import copy

        for k in range(len(unit.steps), 0, -1):
            key = unit.prefix_keys[k - 1]
            if key in self._snapshots:
                model, donor, private = self._snapshots[key]
                self._needed[key] -= 1
                if self._needed[key] <= 0:
                    del self._snapshots[key]
                    if private:  # the last user takes the private copy itself
                        return model, k, donor
                return copy.deepcopy(model), k, donor
        return None, 0, None

    # ------------------------------------------------------------ preparing one variant
    def _prepare(self, unit: _Unit):
        """The variant's model (steps applied or shared, evals run); returns (model, tok)."""
        import torch

        torch.manual_seed(self.recipe.seed)
        artifact = self._artifact_path(unit)
        ready = (
            unit.name != BASELINE
            and (artifact / "greenllm.json").exists()
            and len(self.store.steps(unit.variant_key)) == len(unit.steps)
        )
        evals_done = all(self.store.get_eval(k) is not None for k in unit.eval_keys)
        if ready and evals_done and "reload" in (self._scheme, self.recipe.workload.scheme):
            self.log(f"{unit.name}: compressed model found in {artifact.parent}")
            return None, self._tokenizer()
        if ready and (self.from_artifacts or self._scheme is not None):
            # the model as compressed (a study's artifact, or a resumed reload-scheme run now
            # resident): loaded, not recomputed
            self.log(f"{unit.name}: loading the compressed model from {artifact}")
            model = self._load_artifact(unit)
            tok = self._tokenizer()
            self._evals(unit, model, tok)
            return model, tok
        model, k, donor = self._start_from_prefix(unit)
        if model is None:
            self.log(f"{unit.name}: loading {self._source_name()}")
            model, tok = self._load()
        else:
            tok = self._tokenizer()
            self.log(f"{unit.name}: steps 1-{k} shared with {donor} (not recomputed)")
            self._copy_shared_steps(unit, k, donor)
        self._tok = tok
        model = self._apply_steps(unit, model, tok, start=k)
        self._evals(unit, model, tok)
        return model, tok

    def _tokenizer(self):
        """The tokenizer of the model source (set when the baseline, always prepared first,
        loads; loaded with the model only if that did not happen)."""
        if getattr(self, "_tok", None) is None:
            self._tok = self._load()[1]
        return self._tok

    def _copy_shared_steps(self, unit: _Unit, k: int, donor: str | None) -> None:
        """The shared prefix's step results, charged to this variant too (payback stays per
        variant), marked as shared."""
        src = next((u for u in self._all_units if u.name == donor), None)
        if src is None:
            return
        for i, res in enumerate(self.store.steps(src.variant_key)[:k]):
            shared = dataclasses.replace(res, stats={**res.stats, "shared_with": donor})
            if self.store.add_step(unit.variant_key, i, shared, self.run_id):
                self.summary.done["steps"] += 1
            else:
                self.summary.skipped["steps"] += 1

    def _apply_steps(self, unit: _Unit, model, tok, start: int = 0):
        import copy

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
            if i < start:
                continue
            cfg = _resolve_cfg(cfg, self.base)
            self.log(
                f"{unit.name}: step {i + 1}/{len(unit.steps)} {key}"
                + (" (re-applied; its measurement is already stored)" if i < stored else "")
            )
            try:
                with _power_setting(cfg):
                    with measure(self.meter_objs, hz=self.recipe.measure.hz) as m:
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
            pkey = unit.prefix_keys[i]
            if self._needed.get(pkey, 0) > 0 and pkey not in self._snapshots:
                # later variants start from here: keep a copy (the last step's model is kept
                # as it is: variants only ever deep-copy a snapshot)
                last = i == len(unit.steps) - 1
                snap = model if last else copy.deepcopy(model)
                self._snapshots[pkey] = (snap, unit.name, not last)
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
        """Every evaluation inside a metered window (greenllm.metered)."""
        from .evals import EVALS
        from .metered import run_eval_metered

        for (key, cfg), ekey in zip(self.recipe.evals, unit.eval_keys):
            if self.store.get_eval(ekey) is not None:
                self.summary.skipped["evals"] += 1
                continue
            rcfg = _resolve_cfg(cfg, self.base)
            extra: dict[str, Any] = {}
            if key == "fidelity" and getattr(rcfg, "reference", None) == "baseline":
                # fidelity scores against the baseline's stored next-token distributions
                extra["reference"] = self._fidelity_reference(unit, rcfg, model, tok)
            rt_name = self.recipe.workload.runtime
            self.log(f"{unit.name}: eval {key} (metered, runtime {rt_name})")
            if rt_name == "torch" or extra:
                ev = EVALS.get(key)

                def spec(progress: bool = False, ev=ev, rcfg=rcfg, extra=extra):
                    return ev.run(model, tok, rcfg, progress=progress, **extra)
            else:  # scored through the deployment runtime's logits (greenllm.runtimes)
                from .evals.base import run_with_runtime

                wl = self.recipe.workload

                def spec(progress: bool = False, key=key, rcfg=rcfg, wl=wl):
                    return run_with_runtime(
                        key, rcfg, model, tok, wl.runtime, wl.threads, progress=progress
                    )

            result = run_eval_metered(
                spec,
                model,
                tok,
                rcfg,
                self.meter_objs,
                self.recipe.measure.hz,
                idle_power_w=self.idle_w,
            )
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

    # ------------------------------------------------------------ artifacts (reload scheme)
    def _artifact_path(self, unit: _Unit) -> Path:
        return self.artifacts_root / unit.variant_key

    def _can_save(self, model) -> str | None:
        from .models.checkpoint import save_blocker

        return save_blocker(model)

    def _save_artifact(self, unit: _Unit, model, tok) -> None:
        """The compressed model, saved once into OUT/artifacts/<variant key>/ with greenllm's
        own checkpoint format (safetensors + greenllm.json, written under a temporary name and
        renamed): the reload scheme loads it before each of its windows (outside the window)."""
        from .models.checkpoint import save

        path = self._artifact_path(unit)
        if (path / "greenllm.json").exists():
            return
        save(model, path, tok, overwrite=path.exists())

    def _load_artifact(self, unit: _Unit):
        if unit.name == BASELINE:
            return self._load()[0]
        from .models import load_model

        return load_model(str(self._artifact_path(unit)), device=self.recipe.model.device)[0]

    # ------------------------------------------------------------ a study: compression
    def compress(self, units: list[_Unit], save_baseline: bool) -> dict[str, str]:
        """Apply every variant's steps once (metered, stored) and save each compressed model
        as an artifact; returns {variant key: why it cannot be saved} for those that
        cannot (they are compressed again on a local device; a Ray device refuses them)."""
        from .measure import resolve_meters
        from .models.checkpoint import save

        store = self.store
        self._base_key = units[0].variant_key
        for u in units:
            store.ensure_variant(u.variant_key, u.name, u.definition, len(u.steps), self.run_id)
        self._all_units = units
        self._plan_prefixes(units)
        unsaveable: dict[str, str] = {}
        self.meter_objs, created = resolve_meters(self.recipe.meters)
        try:
            for u in units:
                art = self._artifact_path(u)
                if (art / "greenllm.json").exists() and len(store.steps(u.variant_key)) == len(
                    u.steps
                ):
                    continue
                if u.name == BASELINE:
                    if save_baseline:
                        self.log(f"baseline: saving {self.recipe.model.id} for the devices")
                        model, tok = self._load()
                        save(model, art, tok, overwrite=art.exists())
                        del model
                    continue
                import torch

                torch.manual_seed(self.recipe.seed)
                model, k, donor = self._start_from_prefix(u)
                if model is None:
                    self.log(f"{u.name}: loading {self.recipe.model.id}")
                    model, tok = self._load()
                    self._tok = tok
                else:
                    tok = self._tokenizer()
                    self.log(f"{u.name}: steps 1-{k} shared with {donor} (not recomputed)")
                    self._copy_shared_steps(u, k, donor)
                model = self._apply_steps(u, model, tok, start=k)
                why = self._can_save(model)
                if why:
                    unsaveable[u.variant_key] = why
                    self.log(f"{u.name}: cannot be saved ({why}): compressed again on each device")
                else:
                    self._save_artifact(u, model, tok)
                del model
                gc.collect()
        finally:
            for m in created:
                m.close()
            self._drop_snapshots()
        return unsaveable

    # ------------------------------------------------------------ a study: the device's record
    def _env(self) -> dict:
        if self.device_name is None:
            return self.store.environment(self.run_id) or {}
        return self.store.device_environments(self.run_id).get(self.device_name) or {}

    def _set_env(self, env: dict) -> None:
        if self.device_name is None:
            self.store.set_environment(
                self.run_id,
                hardware=env.get("hardware") or {},
                software=env.get("software") or {},
                meters=env.get("meters") or {},
                sampling_hz=env.get("sampling_hz"),
                idle_s=env.get("idle_s"),
            )
        else:
            self.store.set_device_environment(self.run_id, self.device_name, env)

    def record_device(self, device: Any, node: dict | None) -> None:
        """The device's own environment (hardware, software, meters, the node it ran on)."""
        env = collect_environment(self.recipe)
        env["node"] = node or {"hostname": platform.node(), "ray_node_id": None}
        if device is not None:
            from .study import device_to_dict

            env["device"] = device_to_dict(device)
        self._set_env(env)

    # ------------------------------------------------------------ windows
    def _session(self, model, tok):
        from .bench import BenchSession

        sess = BenchSession(
            model,
            tok,
            _resolve_cfg(self.recipe.workload, self.base),
            self.meter_objs,
            self.recipe.model.device,
            self.recipe.measure.hz,
            probe=self._probe,
            idle_power_w=self.idle_w,
            max_other_cpu_share=self.recipe.measure.max_other_cpu_share,
        )
        sess.warmup()
        return sess

    def _new_round(self) -> None:
        self._persistent = False  # disturbance outlasted a window's reruns in this round

    def _window(self, sess, label: str) -> dict[str, Any]:
        """One window under the recipe's disturbance policy (rerun / discard / flag). When a
        disturbance outlasts one window's ``max_reruns``, the rest of the round keeps its
        windows flagged instead of rerunning them (a persistent load is not waited out window
        by window: the pairing within the round absorbs it, the flags report it)."""
        ms = self.recipe.measure
        reruns = 0
        while True:
            row = sess.window()
            if row["invalid"] and reruns < ms.max_reruns:
                reruns += 1
                self.warnings.append(
                    f"{label}: energy window invalid ({'; '.join(row['invalid'])}); rerun"
                )
                continue
            if (
                row["flags"]
                and ms.on_disturbance == "rerun"
                and not getattr(self, "_persistent", False)
            ):
                if reruns < ms.max_reruns:
                    reruns += 1
                    self.log(f"{label}: {'; '.join(row['flags'])}: rerun")
                    continue
                self._persistent = True
                self.log(f"{label}: the disturbance persists: this round's windows are flagged")
            break
        row["reruns"] = reruns
        if row["invalid"]:
            self.warnings.append(
                f"{label}: energy window invalid ({'; '.join(row['invalid'])}); its energy "
                "is excluded"
            )
        if row["flags"] and ms.on_disturbance == "discard":
            row["excluded"] = "discarded: " + "; ".join(row["flags"])
        self.summary.done["windows"] += 1
        return row

    def _power_settings(self) -> dict:
        env = self._env()
        return dict((env.get("hardware") or {}).get("power_settings") or {})

    def _headline_metric(self) -> str:
        h = self.recipe.measure.headline
        if h == "gross" or self.idle_w is None:
            return "energy_per_token_j"
        return "net_energy_per_token_j"

    def _enough(
        self, rows: dict[str, list[dict]], units: list[_Unit], n_rounds: int, elapsed_s: float
    ) -> str | None:
        """Why the rounds may stop now, or None to go on."""
        from .report.analysis import paired_delta, paired_ratios

        wl = self.recipe.workload
        if wl.repeats != "auto":
            return f"fixed: {wl.repeats} rounds" if n_rounds >= int(wl.repeats) else None
        if n_rounds >= wl.max_rounds:
            return f"max_rounds ({wl.max_rounds}) reached"
        if wl.max_time_s is not None and elapsed_s >= wl.max_time_s and n_rounds >= wl.min_rounds:
            # (never before min_rounds: with 2 rounds t_0.975 is 12.7, no verdict survives)
            return f"max_time_s ({wl.max_time_s:g} s) reached"
        if n_rounds < wl.min_rounds:
            return None
        metric = self._headline_metric()
        base = rows[units[0].variant_key]
        widths = []
        if len(units) == 1:
            from .bench import relative_half_width

            widths.append(relative_half_width([r.get(metric) for r in base if _usable(r)]))
        for u in units[1:]:
            ratios = paired_ratios(base, rows[u.variant_key], metric)
            widths.append(paired_delta(ratios)[1])
        if all(w is not None and w <= wl.precision for w in widths):
            worst = max(w for w in widths if w is not None)
            return f"precision reached (±{worst:.1%} <= ±{wl.precision:.0%})"
        return None

    def _run_rounds(self, units: list[_Unit], models: dict[str, Any], tok, scheme: str) -> None:
        """Rounds: each round measures every unit once, in a seeded random order."""
        import random

        store, ckey = self.store, units[0].comparison_key
        rows: dict[str, list[dict]] = {u.variant_key: [] for u in units}
        by_round: dict[int, dict[str, dict]] = {}
        for w in store.windows(ckey):
            by_round.setdefault(w["round"], {})[w["variant_key"]] = w["row"]
        done_rounds = 0
        prior_s = 0.0
        for r in sorted(by_round):
            if len(by_round[r]) < len(units) or r != done_rounds + 1:
                n = store.drop_round(ckey, r)
                self.log(f"round {r} was not finished: its {n} window(s) are measured again")
                continue
            done_rounds = r
            for vkey, row in by_round[r].items():
                rows[vkey].append(row)
                prior_s += float(row.get("duration_s") or 0.0)
                self.summary.skipped["windows"] += 1
        if done_rounds:
            self.log(f"resuming after {done_rounds} finished round(s)")
        sessions: dict[str, Any] = {}
        last: dict[str, Any] = {}
        t0 = time.monotonic()
        stop = self._enough(rows, units, done_rounds, prior_s)
        r = done_rounds
        while stop is None:
            r += 1
            order = list(units)
            random.Random(f"{self.recipe.seed}:{r}").shuffle(order)
            self._new_round()
            self.log(f"round {r}: " + ", ".join(u.name for u in order))
            for pos, u in enumerate(order):
                if scheme == "reload":
                    model = self._load_artifact(u)
                    sess = self._session(model, tok)
                else:
                    sess = sessions.get(u.name)
                    if sess is None:
                        sess = sessions[u.name] = self._session(models[u.name], tok)
                row = self._window(sess, f"{u.name} round {r}")
                row.update(round=r, order=pos)
                store.add_window(ckey, r, u.variant_key, 0, _jsonable(row), self.run_id)
                rows[u.variant_key].append(row)
                last[u.name] = sess
                if scheme == "reload":
                    sess.release()
                    del model, sess
                    gc.collect()
            stop = self._enough(rows, units, r, prior_s + time.monotonic() - t0)
        self.log(f"rounds stopped: {stop}")
        for u in units:
            sess = last.get(u.name) or self._session(
                models.get(u.name) if scheme != "reload" else self._load_artifact(u), tok
            )
            self._store_bench(u, units[0], rows, sess, scheme, stop, r)

    def _run_bracketed(self, units: list[_Unit]) -> None:
        """The baseline brackets each variant: B V B V ... B, one variant at a time (the
        baseline stays loaded, each variant is held only while its windows run)."""
        from .recipe import digest as _digest

        base_unit = units[0]
        base_model, tok = self._prepare(base_unit)
        base_sess = self._session(base_model, tok)
        all_base_rows: list[dict] = []
        stops = []
        for u in units[1:]:
            model, _ = self._prepare(u)
            sess = self._session(model, tok)
            ckey = _digest({"comparison": u.comparison_key, "bracket": u.variant_key})
            seq = [w for w in self.store.windows(ckey)]
            b_rows = [w["row"] for w in seq if w["variant_key"] == base_unit.variant_key]
            v_rows = [w["row"] for w in seq if w["variant_key"] == u.variant_key]
            t0 = time.monotonic()
            prior_s = sum(float(x.get("duration_s") or 0.0) for x in b_rows + v_rows)
            while True:
                if len(b_rows) == len(v_rows) + 1:
                    self._new_round()  # a bracket pair is a round
                n_pairs = min(len(v_rows), max(len(b_rows) - 1, 0))
                rows = {
                    base_unit.variant_key: _bracket_means(b_rows, len(v_rows)),
                    u.variant_key: v_rows,
                }
                stop = self._enough(rows, [base_unit, u], n_pairs, prior_s + time.monotonic() - t0)
                if stop is not None and len(b_rows) == len(v_rows) + 1:
                    break
                if len(b_rows) <= len(v_rows):  # a baseline window comes next
                    row = self._window(base_sess, f"baseline (bracketing {u.name})")
                    row.update(round=len(b_rows), bracket=u.name)
                    self.store.add_window(
                        ckey, len(b_rows), base_unit.variant_key, 0, _jsonable(row), self.run_id
                    )
                    b_rows.append(row)
                else:
                    row = self._window(sess, f"{u.name} bracket {len(v_rows) + 1}")
                    row.update(round=len(v_rows) + 1)
                    self.store.add_window(
                        ckey, len(v_rows) + 1, u.variant_key, 1, _jsonable(row), self.run_id
                    )
                    v_rows.append(row)
            stops.append(f"{u.name}: {stop}")
            self.log(f"{u.name}: bracket stopped: {stop}")
            rows = {
                base_unit.variant_key: _bracket_means(b_rows, len(v_rows)),
                u.variant_key: v_rows,
            }
            self._store_bench(u, base_unit, rows, sess, "bracket", stop, len(v_rows))
            all_base_rows += b_rows
            sess.release()
            del model, sess
            gc.collect()
        rows = {base_unit.variant_key: all_base_rows}
        self._store_bench(
            base_unit, base_unit, rows, base_sess, "bracket", "; ".join(stops), len(all_base_rows)
        )

    def _store_bench(self, unit, base_unit, rows, sess, scheme: str, stop: str, n_rounds: int):
        """Aggregate a unit's windows (flags from the whole run, paired ratios against the
        baseline's windows of the same round) into its BenchResult and store it."""
        from .conditions import clock_throttle_flags
        from .report.analysis import PAIRED_METRICS, outlier_flags, paired_ratios

        if self.store.get_bench(unit.bench_key) is not None:
            self.summary.skipped["benches"] += 1
            return
        mine = [dict(r) for r in rows[unit.variant_key]]
        everything = [r for rs in rows.values() for r in rs]
        clock = dict(
            zip(
                map(id, everything),
                clock_throttle_flags([r.get("conditions") or {} for r in everything]),
            )
        )
        originals = rows[unit.variant_key]
        for new, old in zip(mine, originals):
            extra = clock.get(id(old), []) + outlier_flags(originals, old)
            new["flags"] = list(new.get("flags") or []) + [f for f in extra if f]
        if unit is not base_unit:
            base = rows[base_unit.variant_key]
            for metric in PAIRED_METRICS:
                for new, ratio in zip(mine, paired_ratios(base, originals, metric, keep=True)):
                    new.setdefault("paired", {})[metric] = ratio
        warnings = [w for w in self.warnings if w.startswith(unit.name)]
        result = sess.result(
            mine,
            warnings,
            scheme=scheme,
            rounds=n_rounds,
            stopped=stop,
            headline_metric=self._headline_metric(),
            on_disturbance=self.recipe.measure.on_disturbance,
            comparison_key=unit.comparison_key,
            round_order_seed=self.recipe.seed,
            power_settings=self._power_settings(),
        )
        self.store.add_bench(unit.bench_key, unit.variant_key, result, self.run_id)
        self.summary.done["benches"] += 1


# ---------------------------------------------------------------- studies


def _groups(units: list[_Unit]) -> dict[tuple[str | None, str | None], list[_Unit]]:
    out: dict[tuple[str | None, str | None], list[_Unit]] = {}
    for u in units:
        out.setdefault((u.model, u.device), []).append(u)
    return out


def _run_study(
    recipe: Recipe,
    units: list[_Unit],
    store: Store,
    run_id: int,
    out: Path,
    log: _Log,
    summary: RunSummary,
    probe: Any,
    opts: dict | None,
) -> None:
    """models x variants x devices: compress each (model, variant) once (here), save it, then
    run each (model, device) group on its device: here, or on a Ray node (greenllm.cluster),
    the records of remote groups committed by this process as they arrive."""
    opts = opts or {}
    only = opts.get("only_device")
    devices = {d.name: d for d in recipe.devices}
    specs = dict(recipe.model_list())
    groups = {k: g for k, g in _groups(units).items() if only is None or k[1] == only}
    for (mname, dname), g in groups.items():
        for u in g:
            store.ensure_variant(u.variant_key, u.name, u.definition, len(u.steps), run_id)
            if u.skip:
                log(f"{u.name} [{mname} @ {dname or LOCAL_DEVICE}]: skipped: {u.skip}")
    groups = {k: g for k, g in groups.items() if not g[0].skip}

    def remote(dname: str | None) -> bool:
        return bool(dname and devices[dname].ray_label and dname != only)

    # 1. compression, once per (model, variant): here, or on the compress_on device
    unsaveable: dict[str, str] = {}
    cdev = devices.get(recipe.compress_on) if only is None else None
    remote_jobs = []
    for mname, spec in specs.items():
        mine = [g for (m, _), g in groups.items() if m == mname]
        if not mine:
            continue
        needed: dict[str, _Unit] = {}
        for g in mine:
            for u in g:
                if not u.skip:
                    needed.setdefault(u.variant_key, u)
        where = cdev.name if cdev is not None else "here"
        log(
            f"[{mname}] compressing {len(needed) - 1} variant(s) once ({where}) for "
            f"{len(mine)} device(s)"
        )
        if cdev is not None and cdev.ray_label:
            remote_jobs.append(
                (mname, cdev, _device_recipe(recipe.for_model(spec), cdev), list(needed.values()))
            )
            continue
        r = _Runner(
            _device_recipe(recipe.for_model(spec), cdev),
            store,
            run_id,
            out,
            log,
            summary,
            probe=probe,
        )
        unsaveable.update(
            r.compress(
                list(needed.values()),
                save_baseline=any(remote(d) for (m, d) in groups if m == mname),
            )
        )
    if remote_jobs:
        unsaveable.update(_compress_remotely(remote_jobs, store, run_id, out, log, summary, opts))
    # 2. each (model, device) group on its device
    jobs = []
    for (mname, dname), g in groups.items():
        name = f"{mname} @ {dname or LOCAL_DEVICE}"
        dev = devices.get(dname) if dname else None
        sub = _device_recipe(recipe.for_model(specs[mname]), dev)
        bad = [u for u in g if u.variant_key in unsaveable and not u.skip]
        if remote(dname) and bad:
            raise ConfigError(
                f"{name}: variant(s) {', '.join(u.name for u in bad)} cannot be saved as a "
                f"checkpoint ({unsaveable[bad[0].variant_key]}), so they cannot reach a Ray "
                "device; measure them on a local device"
            )
        runnable = [u for u in g if not u.skip]
        if not remote(dname) and opts.get("cluster") is None:
            log(f"[{name}] evaluating and benchmarking here")
            r = _Runner(
                sub,
                store,
                run_id,
                out,
                log,
                summary,
                probe=probe,
                device_name=dname or LOCAL_DEVICE,
                from_artifacts=True,
            )
            r.record_device(dev, None)
            r.run_all(runnable)
            continue
        jobs.append((name, dname, sub, runnable))
    if jobs:
        _run_cluster_jobs(jobs, devices, store, run_id, out, log, summary, opts)


def _device_recipe(recipe: Recipe, dev: Any) -> Recipe:
    """The one-model recipe as a device runs it (its torch device, its runtime)."""
    if dev is None:
        return recipe
    if dev.torch_device:
        recipe = dataclasses.replace(
            recipe, model=dataclasses.replace(recipe.model, device=dev.torch_device)
        )
    changes = {}
    if getattr(dev, "runtime", None):
        changes["runtime"] = dev.runtime
    if getattr(dev, "threads", None):
        changes["threads"] = dev.threads
    if changes:
        recipe = dataclasses.replace(
            recipe, workload=dataclasses.replace(recipe.workload, **changes)
        )
    return recipe


def _window_keys(units: list[_Unit]) -> list[str]:
    """The comparison keys a group's windows are stored under (rounds, and bracket pairs)."""
    keys = {u.comparison_key for u in units}
    keys |= {digest({"comparison": u.comparison_key, "bracket": u.variant_key}) for u in units[1:]}
    return sorted(keys)


_COUNTERS = {
    "add_step": "steps",
    "add_eval": "evals",
    "add_bench": "benches",
    "add_window": "windows",
}


def _connect(log, opts):
    from .cluster import RayCluster

    cluster = RayCluster(
        opts.get("cluster") or "ray", log=log, shared_out=bool(opts.get("shared_out"))
    )
    cluster.connect()
    return cluster


def _compress_remotely(jobs, store, run_id, out, log, summary, opts) -> dict[str, str]:
    """compress_on a Ray device: each model's variants are compressed there (steps metered
    there, committed here), and the checkpoints come back into OUT/artifacts/."""
    from .cluster import Job, unpack_dir
    from .store_proxy import apply_record, snapshot

    unsaveable: dict[str, str] = {}
    todo = []
    for mname, dev, sub, units in jobs:

        def snap(units=units, dname=dev.name):
            return snapshot(store, units, run_id, dname, [])

        payload = {
            "recipe": sub,
            "units": units,
            "device_name": dev.name,
            "run_id": run_id,
            "snapshot": snap(),
            "artifacts_dir": str(out / "artifacts"),
        }
        todo.append(
            Job(
                f"{mname} compress @ {dev.name}",
                "greenllm.runner:_compress_worker",
                payload,
                label=dev.ray_label,
                resnapshot=snap,
            )
        )

    def apply(job, rec) -> None:
        kind, args = rec
        if kind == "log":
            log(f"[{job.name}] {args['msg']}")
        elif kind == "unsaveable":
            unsaveable.update(args)
        elif kind == "artifact":
            dest = out / "artifacts" / args["variant_key"]
            tmp = out / "artifacts" / f".incoming-{args['variant_key']}"
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            unpack_dir(args["tar"], tmp)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        elif apply_record(store, run_id, rec) and kind in _COUNTERS:
            summary.done[_COUNTERS[kind]] += 1

    cluster = _connect(log, opts)
    try:
        failures = cluster.run_jobs(todo, apply)
    finally:
        cluster.close()
    if failures:
        raise GreenLLMError("compression failed: " + " | ".join(failures))
    return unsaveable


def _compress_worker(payload: dict, emit, artifacts_dir: Path) -> None:
    """compress_on a Ray device: the variants' steps on this node, then each checkpoint sent
    back as a record (the driver writes it into OUT/artifacts/)."""
    from .cluster import pack_dir
    from .store_proxy import RecordingStore

    store = RecordingStore(payload["snapshot"], emit)
    work = Path(payload.get("work_dir") or Path(artifacts_dir).parent)
    units = payload["units"]
    r = _Runner(
        payload["recipe"],
        store,  # type: ignore[arg-type]
        payload["run_id"],
        work,
        lambda msg: emit(("log", {"msg": msg})),  # type: ignore[arg-type]
        _worker_summary(units, artifacts_dir),
        device_name=payload["device_name"],
        artifacts_root=work / "compressed",
    )
    emit(("unsaveable", r.compress(units, save_baseline=True)))
    for u in units:
        art = work / "compressed" / u.variant_key
        if (art / "greenllm.json").exists():
            emit(("artifact", {"variant_key": u.variant_key, "tar": pack_dir(art)}))


def _new_summary(out: Path, store_path: Path, units: list[_Unit]) -> RunSummary:
    return RunSummary(
        out_dir=out,
        store_path=store_path,
        run_id=-1,
        status="running",
        variants=[u.name for u in units],
        done={"steps": 0, "evals": 0, "benches": 0, "windows": 0},
        skipped={"variants": 0, "steps": 0, "evals": 0, "benches": 0, "windows": 0},
    )


def _worker_summary(units, artifacts_dir) -> RunSummary:
    """A node's own tally (the driver counts what it commits)."""
    out = Path(artifacts_dir).parent
    return _new_summary(out, out / STORE_FILENAME, units)


def _run_cluster_jobs(jobs, devices, store, run_id, out, log, summary, opts) -> None:
    from .cluster import Job
    from .store_proxy import apply_record, snapshot

    counters = _COUNTERS
    cluster = _connect(log, opts)
    try:
        todo = []
        for name, dname, sub, g in jobs:
            dev = devices.get(dname) if dname else None
            arts = {
                u.variant_key: out / "artifacts" / u.variant_key
                for u in g
                if (out / "artifacts" / u.variant_key / "greenllm.json").exists()
            }

            def snap(g=g, dname=dname):
                return snapshot(store, g, run_id, dname or LOCAL_DEVICE, _window_keys(g))

            label = (
                dev.ray_label if dev is not None and dev.name != opts.get("only_device") else None
            )
            payload = {
                "recipe": sub,
                "units": g,
                "device": dev,
                "device_name": dname or LOCAL_DEVICE,
                "run_id": run_id,
                "snapshot": snap(),
                "artifacts_dir": str(out / "artifacts"),
            }
            todo.append(
                Job(
                    name,
                    "greenllm.runner:_group_worker",
                    payload,
                    artifacts=arts if label else {},
                    label=label,
                    resnapshot=snap,
                )
            )
            log(f"[{name}] " + (f"submitted to a Ray node with {label!r}" if label else "here"))

        def apply(job, rec) -> None:
            kind, args = rec
            if kind == "log":
                log(f"[{job.name}] {args['msg']}")
                return
            if apply_record(store, run_id, rec) and kind in counters:
                summary.done[counters[kind]] += 1

        failures = cluster.run_jobs(todo, apply)
    finally:
        cluster.close()
    if failures:
        raise GreenLLMError(
            "some cells failed (the finished ones are in the store; run again to resume): "
            + " | ".join(failures)
        )


def _group_worker(payload: dict, emit, artifacts_dir: Path) -> None:
    """One (model, device) group on its node (a Ray task, or a driver thread), against a
    RecordingStore: every write becomes a record for the driver."""
    from .store_proxy import RecordingStore

    store = RecordingStore(payload["snapshot"], emit)
    units = payload["units"]
    summary = _worker_summary(units, artifacts_dir)

    def log(msg: str) -> None:
        emit(("log", {"msg": msg}))

    work = Path(payload.get("work_dir") or Path(artifacts_dir).parent)
    r = _Runner(
        payload["recipe"],
        store,  # type: ignore[arg-type]
        payload["run_id"],
        work,
        log,  # type: ignore[arg-type]
        summary,
        device_name=payload["device_name"],
        artifacts_root=Path(artifacts_dir),
        from_artifacts=True,
    )
    r.record_device(payload["device"], payload.get("node"))
    r.run_all(units)


def _usable(row: dict) -> bool:
    from .bench import usable

    return usable(row)


def _bracket_means(b_rows: list[dict], n_variant: int) -> list[dict]:
    """For bracket pairing: the baseline 'row' of variant window k (1-based) is the mean of
    the baseline windows before (k-1) and after (k) it, metric by metric."""
    from .report.analysis import PAIRED_METRICS

    out = []
    for k in range(1, n_variant + 1):
        around = [b for b in b_rows[k - 1 : k + 1] if _usable(b)]
        row: dict[str, Any] = {"round": k}
        for m in PAIRED_METRICS:
            vals = [b.get(m) for b in around if b.get(m) is not None]
            row[m] = sum(vals) / len(vals) if vals else None
        energies = [b["energy_j"] for b in around]
        row["energy_j"] = sum(energies) / len(energies) if around else None
        out.append(row)
    return out


def _jsonable(row: dict) -> dict:
    import json

    return json.loads(json.dumps(row, default=str))


def _free_memory_bytes(device: str) -> float | None:
    try:
        if str(device).startswith("cuda"):
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(device))
            return float(free)
        import psutil

        return float(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - unknown: assume it fits (resident)
        return None


__all__ = ["RunSummary", "run", "plan", "collect_environment", "BASELINE"]
