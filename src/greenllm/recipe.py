"""Recipes: the YAML a user writes, parsed strictly into dataclasses. No torch here.

A recipe is one model, an implicit ``baseline`` plus named variants (each an ordered list of
single-key step mappings), evaluations, an inference workload, meters, carbon settings and
targets. ``load_recipe(path | mapping) -> Recipe`` uses ``yaml.safe_load`` only and rejects
unknown keys and unknown registry names (steps, step methods, evaluators, meters) with the
field path and a did-you-mean. ``Recipe.to_dict()`` round-trips through ``load_recipe``.
``schema_markdown()`` generates the recipe reference in docs/recipes.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import parse_config, to_dict
from .errors import ConfigError, DataError, UnknownNameError
from .limits import check_safe_name, excerpt, short
from .study import DeviceSpec

RECIPE_SCHEMA_VERSION = 1
BASELINE = "baseline"
TOP_LEVEL_KEYS = (
    "schema_version",
    "name",
    "model",
    "variants",
    "evals",
    "workload",
    "meters",
    "measure",
    "carbon",
    "targets",
    "calibration",
    "seed",
    "output",
    "schedule",
    "models",
    "devices",
    "compress_on",
)


@dataclass
class ModelSpec:
    """The one model of a recipe: every variant starts from it."""

    id: str
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False

    def validate(self):
        if not self.id.strip():
            raise ConfigError(
                "id: empty model id; give a hub id, a local directory or a .gguf file"
            )
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise ConfigError(
                f"device: {excerpt(self.device)} is not a device; use cpu, cuda or cuda:N"
            )


@dataclass
class MeasureSpec:
    """How energy is sampled during every measured window (steps, evals and bench), what is
    done with a disturbed window, and the idle baseline."""

    hz: float = 10.0
    # seconds of idle power measured once before the rounds; null = auto: 10 s with a real
    # meter, 0 with the estimate (idle subtraction means nothing for a model-based estimate)
    idle_s: float | None = None
    on_disturbance: Literal["flag", "discard", "rerun"] = "rerun"
    max_reruns: int = 3  # reruns of disturbed windows per variant and round
    max_other_cpu_share: float = 0.10  # other processes above this share of the CPU: contended
    headline: Literal["auto", "gross", "net"] = "auto"  # auto: net when idle was measured

    def validate(self):
        if not 0.1 <= self.hz <= 1000:
            raise ConfigError(f"hz: {self.hz} is outside 0.1..1000 samples per second")
        if self.idle_s is not None and self.idle_s < 0:
            raise ConfigError(f"idle_s: {self.idle_s} is negative; use 0 to skip idle subtraction")
        if self.idle_s is not None and self.idle_s > 3600:
            raise ConfigError(f"idle_s: {self.idle_s} is more than an hour")
        if not 0 <= self.max_reruns <= 100:
            raise ConfigError(f"max_reruns: {self.max_reruns} is outside 0..100")
        if not 0 < self.max_other_cpu_share <= 1:
            raise ConfigError(
                f"max_other_cpu_share: {self.max_other_cpu_share} is a fraction in (0, 1]"
            )


@dataclass
class CarbonSpec:
    """Grid carbon intensity (a region code or an explicit g/kWh), data-centre PUE, an optional
    time-resolved intensity (a series file or a provider), and the embodied-carbon settings."""

    region: str | None = None
    intensity_g_per_kwh: float | None = None
    pue: float = 1.0
    intensity_series: str | None = None
    provider: str | None = None
    zone: str | None = None
    signal: Literal["average", "marginal"] = "average"
    fallback: Literal["none", "table"] = "none"
    accounting: Literal["location", "market"] = "location"
    device: str | None = None
    embodied_kg_co2e: float | None = None
    die_area_mm2: float | None = None
    service_life_years: float | None = None
    utilisation: float | None = None
    reference_g_per_kwh: float | None = None

    def validate(self):
        if self.region is None and self.intensity_g_per_kwh is None:
            raise ConfigError(
                "region: give region (an ISO-3 country code such as KOR) or "
                "intensity_g_per_kwh (gCO2e/kWh)"
            )
        if self.region is not None and self.intensity_g_per_kwh is not None:
            raise ConfigError("region: give either region or intensity_g_per_kwh, not both")
        if self.intensity_g_per_kwh is not None and not 0 <= self.intensity_g_per_kwh <= 3000:
            raise ConfigError(
                f"intensity_g_per_kwh: {self.intensity_g_per_kwh} is outside 0..3000 gCO2e/kWh"
            )
        if not 1.0 <= self.pue <= 5.0:
            raise ConfigError(f"pue: {self.pue} is outside 1.0..5.0 (1.0 = no facility overhead)")
        if self.intensity_series is not None and self.provider is not None:
            raise ConfigError(
                "intensity_series: give either intensity_series (a file) or provider, not both"
            )
        if self.provider is not None:
            from .intensity import PROVIDERS
            from .registry import did_you_mean

            if self.provider not in PROVIDERS:
                hint = did_you_mean(self.provider, sorted(PROVIDERS))
                raise ConfigError(
                    f"provider: unknown intensity provider {excerpt(self.provider)}"
                    + (f"; did you mean {hint!r}?" if hint else "")
                    + f" (known: {', '.join(sorted(PROVIDERS))})"
                )
            if self.provider != "uk-national-grid" and not self.zone:
                raise ConfigError(f"zone: provider {self.provider} needs a zone / region code")
        if self.accounting == "market" and self.intensity_g_per_kwh is None:
            raise ConfigError(
                "accounting: market-based needs your supplier's contractual intensity as "
                "intensity_g_per_kwh (a region's grid mix is location-based)"
            )
        if self.accounting == "market" and (self.intensity_series or self.provider):
            raise ConfigError(
                "accounting: market-based figures come from your supplier's contractual "
                "intensity (intensity_g_per_kwh); a grid series or provider is location-based"
            )
        for name in ("embodied_kg_co2e", "die_area_mm2", "reference_g_per_kwh"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ConfigError(f"{name}: {v} must be >= 0")
        if self.service_life_years is not None and not 0 < self.service_life_years <= 50:
            raise ConfigError(f"service_life_years: {self.service_life_years} is outside (0, 50]")
        if self.utilisation is not None and not 0 < self.utilisation <= 1:
            raise ConfigError(f"utilisation: {self.utilisation} is a fraction in (0, 1]")
        if self.device is not None:
            from .devices import PROFILES

            if self.device not in PROFILES:
                from .registry import did_you_mean

                hint = did_you_mean(self.device, sorted(PROFILES))
                raise ConfigError(
                    f"device: unknown device profile {excerpt(self.device)}"
                    + (f"; did you mean {hint!r}?" if hint else "")
                )
        if self.region is not None:
            try:
                from . import carbon
            except ImportError:  # pragma: no cover - carbon module is part of the package
                return
            try:
                carbon.grid_intensity(region=self.region)
            except Exception as exc:  # GreenLLMError from the carbon table
                raise ConfigError(f"region: {exc}") from None


@dataclass
class ScheduleSpec:
    """Carbon-aware start: ``when: low-carbon`` waits (at most ``deadline``) for the start with
    the lowest expected emissions in the forecast of ``carbon.intensity_series`` /
    ``carbon.provider``."""

    when: Literal["now", "low-carbon"] = "now"
    deadline: str = "8h"
    expected_duration_s: float | None = None
    expected_power_w: float | None = None
    step_s: float = 300.0

    def validate(self):
        from .schedule import parse_duration

        parse_duration(self.deadline, "deadline")
        for name in ("expected_duration_s", "expected_power_w"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"{name}: {v} must be > 0")
        if not 1 <= self.step_s <= 86400:
            raise ConfigError(f"step_s: {self.step_s} is outside 1..86400 s")


@dataclass
class TargetsSpec:
    """Pass/fail targets checked for every variant against the baseline."""

    max_accuracy_drop_pp: float | None = None
    min_energy_saving: float | None = None  # fraction: 0.2 = 20 % less energy per token

    def validate(self):
        if self.max_accuracy_drop_pp is not None and self.max_accuracy_drop_pp < 0:
            raise ConfigError(f"max_accuracy_drop_pp: {self.max_accuracy_drop_pp} is negative")
        if self.min_energy_saving is not None and not -1 < self.min_energy_saving < 1:
            raise ConfigError(
                f"min_energy_saving: {self.min_energy_saving} is a fraction "
                "between -1 and 1 (0.2 = 20 % saving), not a percentage"
            )


@dataclass
class Recipe:
    schema_version: int
    name: str
    model: ModelSpec
    variants: dict[str, list[tuple[str, Any]]]  # name -> [(step key, step config)]
    evals: list[tuple[str, Any]]  # [(evaluator key, eval config)]
    workload: Any  # greenllm.bench.Workload
    meters: str | list[str] = "auto"
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    carbon: CarbonSpec = field(default_factory=CarbonSpec)
    targets: TargetsSpec = field(default_factory=TargetsSpec)
    calibration: str | None = None
    seed: int = 0
    output: str | None = None
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    source: str | None = None  # the file it came from, if any
    # a study (greenllm.study): [(name, ModelSpec)] when `models:` is given (then `model` is
    # the first of them), the devices, and where compression runs
    models: list[tuple[str, ModelSpec]] = field(default_factory=list)
    devices: list[Any] = field(default_factory=list)  # [greenllm.study.DeviceSpec]
    compress_on: str = "local"

    @property
    def is_study(self) -> bool:
        """models x variants x devices (``models:`` or ``devices:`` given)."""
        return bool(self.models or self.devices)

    def model_list(self) -> list[tuple[str, ModelSpec]]:
        """[(model name, spec)]: the ``models:`` list, or the one ``model:`` (named after the
        last part of its id)."""
        if self.models:
            return list(self.models)
        import re

        tail = str(self.model.id).rstrip("/").split("/")[-1]
        return [(re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.") or "model", self.model)]

    def for_model(self, spec: ModelSpec) -> Recipe:
        """This recipe with one model and no study fields (what one group runs)."""
        return dataclasses.replace(self, model=spec, models=[], devices=[], compress_on="local")

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    def all_variants(self) -> list[tuple[str, list[tuple[str, Any]]]]:
        """The implicit baseline first, then the variants in recipe order."""
        return [(BASELINE, [])] + list(self.variants.items())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "name": self.name,
            "model": to_dict(self.model),
            "variants": {
                n: [{k: to_dict(c)} for k, c in steps] for n, steps in self.variants.items()
            },
            "evals": [{k: to_dict(c)} for k, c in self.evals],
            "workload": to_dict(self.workload),
            "meters": self.meters if isinstance(self.meters, str) else list(self.meters),
            "measure": to_dict(self.measure),
            "carbon": to_dict(self.carbon),
            "targets": to_dict(self.targets),
            "calibration": self.calibration,
            "seed": self.seed,
            "output": self.output,
        }
        if self.schedule != ScheduleSpec():  # only when set: older stores keep their digest
            out["schedule"] = to_dict(self.schedule)
        if self.models:  # study fields only when given: a plain recipe's dict is unchanged
            del out["model"]
            out["models"] = [{"name": n, **to_dict(m)} for n, m in self.models]
        if self.devices:
            from .study import device_to_dict

            out["devices"] = [device_to_dict(d) for d in self.devices]
        if self.compress_on != "local":
            out["compress_on"] = self.compress_on
        return out


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able definition (store keys)."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:20]


def variant_definition(recipe: Recipe, steps: list[tuple[str, Any]]) -> dict[str, Any]:
    """What determines the model a variant produces (its store key is a hash of this)."""
    needs_cal = bool(steps)
    return {
        "model": to_dict(recipe.model),
        "steps": [{k: to_dict(c)} for k, c in steps],
        "calibration": recipe.calibration if needs_cal else None,
        "seed": recipe.seed,
    }


# ---------------------------------------------------------------------------- parsing


def _workload_cls():
    from .bench import Workload

    return Workload


def _with_path(exc: UnknownNameError, path: str) -> ConfigError:
    return ConfigError(f"{path}: {exc}")


def _parse_single_key(entry: Any, path: str, what: str, example: str) -> tuple[str, Any]:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(
            f"{path}: each {what} is a mapping with exactly one key, such as "
            f"{example}; got {excerpt(entry)}"
        )
    ((key, body),) = entry.items()
    return str(key), body


def _parse_variants(raw: Any) -> dict[str, list[tuple[str, Any]]]:
    from .steps import STEPS
    from .steps.base import parse_step

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"variants: expected a mapping of variant name -> list of steps, got "
            f"{type(raw).__name__}"
        )
    out: dict[str, list[tuple[str, Any]]] = {}
    for name, steps in raw.items():
        name = str(name)
        path = f"variants.{name}"
        if name == BASELINE:
            raise ConfigError(
                f"{path}: the baseline is implicit (the model with no steps); rename this variant"
            )
        if not name.strip():
            raise ConfigError(f"{path}: empty variant name")
        check_safe_name(name, path)  # names become directory names
        if not isinstance(steps, list) or not steps:
            raise ConfigError(
                f"{path}: expected a non-empty list of steps, such as "
                f"[{{quantize: {{method: int8_weight}}}}]; got {excerpt(steps)}"
            )
        parsed = []
        for i, entry in enumerate(steps):
            spath = f"{path}[{i}]"
            key, _ = _parse_single_key(entry, spath, "step", "{prune: {method: wanda}}")
            try:
                STEPS.check(key)
            except UnknownNameError as exc:
                raise _with_path(exc, spath) from None
            parsed.append(parse_step(entry, spath))
        out[name] = parsed
    return out


def _parse_evals(raw: Any) -> list[tuple[str, Any]]:
    from .evals import EVALS

    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(
            f"evals: expected a list of evaluations, such as "
            f"[{{perplexity: {{data: builtin:wiki-sample}}}}]; got {excerpt(raw)}"
        )
    out = []
    for i, entry in enumerate(raw):
        path = f"evals[{i}]"
        key, body = _parse_single_key(
            entry, path, "evaluation", "{perplexity: {data: builtin:wiki-sample}}"
        )
        try:
            EVALS.check(key)
        except UnknownNameError as exc:
            raise _with_path(exc, path) from None
        spec = EVALS.get(key)
        out.append((key, parse_config(spec.config_cls, body, f"{path}.{key}")))
    return out


def _parse_meters(raw: Any) -> str | list[str]:
    from .meters import METERS

    if raw is None or raw == "auto":
        return "auto"
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"meters: expected 'auto' or a list of meter names, got {excerpt(raw)}")
    for i, name in enumerate(raw):
        if not isinstance(name, str):
            raise ConfigError(f"meters[{i}]: expected a meter name, got {excerpt(name)}")
        try:
            METERS.check(name)
        except UnknownNameError as exc:
            raise _with_path(exc, f"meters[{i}]") from None
    if len(set(raw)) != len(raw):
        raise ConfigError(f"meters: {excerpt(raw)} names a meter twice")
    return list(raw)


def _check_builtin(source: str, field: str) -> None:
    from .builtin_data import check_builtin

    check_builtin(source, field, ConfigError)


def _req_str(data: dict, key: str) -> str:
    v = data.get(key)
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{key}: expected a non-empty string, got {excerpt(v)}")
    return v


def parse_recipe(data: Any, source: str | None = None) -> Recipe:
    """Build a Recipe from a mapping (strict)."""
    from .registry import did_you_mean

    if not isinstance(data, dict):
        raise ConfigError(
            f"<root>: a recipe is a mapping of {', '.join(TOP_LEVEL_KEYS[:4])}, "
            f"...; got {type(data).__name__}"
        )
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            hint = did_you_mean(str(key), list(TOP_LEVEL_KEYS))
            raise ConfigError(
                f"{short(key)}: unknown key"
                + (f"; did you mean {hint!r}?" if hint else "")
                + f" (allowed: {', '.join(TOP_LEVEL_KEYS)})"
            )
    version = data.get("schema_version", None)
    if version is None:
        raise ConfigError(f"schema_version: missing; add 'schema_version: {RECIPE_SCHEMA_VERSION}'")
    if isinstance(version, bool) or version != RECIPE_SCHEMA_VERSION:
        raise ConfigError(
            f"schema_version: {excerpt(version)} is not supported "
            f"(this greenllm reads version {RECIPE_SCHEMA_VERSION})"
        )
    name = check_safe_name(_req_str(data, "name"), "name")
    from . import study

    models: list[tuple[str, ModelSpec]] = []
    if "models" in data:
        if "model" in data:
            raise ConfigError(
                "model: give either 'model' (one model) or 'models' (a list), not both"
            )
        models = study.parse_models(data["models"], ModelSpec)
        model_spec = models[0][1]
    elif "model" not in data:
        raise ConfigError("model: missing; add 'model: {id: HuggingFaceTB/SmolLM2-135M-Instruct}'")
    else:
        model = data["model"]
        if isinstance(model, str):
            model = {"id": model}
        model_spec = parse_config(ModelSpec, model, "model")
    devices = study.parse_devices(data["devices"]) if "devices" in data else []
    compress_on = study.check_compress_on(data.get("compress_on", study.LOCAL), devices)
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {excerpt(seed)}")
    calibration = data.get("calibration")
    if calibration is not None and (not isinstance(calibration, str) or not calibration.strip()):
        raise ConfigError(
            f"calibration: expected a text source (a file path or builtin:NAME), "
            f"got {excerpt(calibration)}"
        )
    if isinstance(calibration, str) and calibration.startswith("builtin:"):
        _check_builtin(calibration, "calibration")
    output = data.get("output")
    if output is not None and (not isinstance(output, str) or not output.strip()):
        raise ConfigError(f"output: expected a directory path, got {excerpt(output)}")
    variants = _parse_variants(data.get("variants"))
    evals = _parse_evals(data.get("evals"))
    workload = parse_config(_workload_cls(), data.get("workload") or {}, "workload")
    return Recipe(
        schema_version=version,
        name=name,
        model=model_spec,
        variants=variants,
        evals=evals,
        workload=workload,
        meters=_parse_meters(data.get("meters", "auto")),
        measure=parse_config(MeasureSpec, data.get("measure"), "measure"),
        carbon=parse_config(CarbonSpec, data.get("carbon"), "carbon"),
        targets=parse_config(TargetsSpec, data.get("targets"), "targets"),
        calibration=calibration,
        seed=seed,
        output=output,
        schedule=parse_config(ScheduleSpec, data.get("schedule"), "schedule"),
        source=source,
        models=models,
        devices=devices,
        compress_on=compress_on,
    )


def load_recipe(source: str | Path | dict | Recipe) -> Recipe:
    """Load a recipe from a YAML file path or a mapping. Errors name the field path."""
    if isinstance(source, Recipe):
        return source
    if isinstance(source, dict):
        return parse_recipe(source)
    from .limits import load_yaml

    path = Path(source)
    if not path.is_file():
        raise DataError(f"recipe file {str(path)!r} does not exist")
    data = load_yaml(path)  # size, depth and alias-expansion limits; UTF-8 only
    if data is None:
        raise ConfigError(f"{path}: the recipe is empty")
    try:
        return parse_recipe(data, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc}") from None


# ---------------------------------------------------------------------------- docs

FIELD_DOCS = {
    "schema_version": "Recipe format version; must be 1.",
    "name": "Name of the study; used in the report title and the default output directory.",
    "model": "The one model every variant starts from (a string is shorthand for `{id: ...}`).",
    "variants": "Variant name -> ordered list of single-key step mappings. The baseline "
    "(no steps) is implicit and named `baseline`; a variant may not use that name.",
    "evals": "List of single-key evaluator mappings, run on the baseline and every variant.",
    "workload": "The timed, metered inference workload (greenllm.bench.Workload).",
    "meters": "`auto` (best meters found on this machine) or a list of meter names.",
    "measure": "Sampling settings for every measured window (compression steps and bench).",
    "carbon": "Grid intensity and PUE used for every emissions figure.",
    "targets": "Pass/fail targets per variant versus the baseline.",
    "schedule": "Carbon-aware start (`when: low-carbon`, `deadline`); `greenllm run --when "
    "low-carbon --deadline 8h` overrides it.",
    "calibration": "Text source for steps that need calibration data (a text file path or "
    "builtin:NAME); relative paths are resolved against the recipe's folder.",
    "seed": "Seed passed to every step (sampling of calibration data, training).",
    "output": "Output directory (relative to the working directory); `--out` overrides it. "
    "Default: runs/<name>.",
    "models": "A study's models (instead of `model`): a list of `{name, id, dtype, device, "
    "trust_remote_code}`; every variant is built from each of them.",
    "devices": "A study's devices: a list of `{name, profile, via, torch_device, memory_gib}`; "
    "`via` is `local` or `ray:<resource label>` (run with `--cluster`). Every (model, variant) "
    "is benchmarked and evaluated on each device.",
    "compress_on": "Where the variants are compressed: `local` or a device name; the "
    "compressed model reaches each device as a greenllm checkpoint.",
    "devices.name": "The device's name in the report (unique).",
    "devices.profile": "A profile from `greenllm devices` (memory, power modes, embodied carbon).",
    "devices.via": "`local` (this machine) or `ray:<label>`: a Ray node started with "
    '`--resources=\'{"<label>": 1, "greenllm_meter": 1}\'`.',
    "devices.torch_device": "torch device on that machine (cpu, cuda); default: the model's.",
    "devices.memory_gib": "Usable memory override for the will-it-fit check.",
    "devices.runtime": "The runtime this target runs the model in (`torch`, `llama.cpp`, "
    "`llama-server`, `onnxruntime`); default: `workload.runtime`. Several runtimes on one "
    "machine are several devices, each with its own baseline in its own rounds.",
    "devices.threads": "The runtime's thread count on this target; default: `workload.threads`.",
    "model.id": "Hub id, local Hugging Face directory or .gguf file.",
    "model.dtype": "Weights dtype at load time.",
    "model.device": "cpu, cuda or cuda:N.",
    "model.trust_remote_code": "Allow custom model code from the hub (off by default).",
    "workload.prompts": "builtin:prompts, a text file (one prompt a line) or a list of strings.",
    "workload.max_new_tokens": "Tokens generated per request (greedy).",
    "workload.batch_size": "Prompts decoded together in one batch (a request is one prompt).",
    "workload.warmup": "Untimed, unmetered batches run before the rounds.",
    "workload.repeats": "Rounds (each round measures the baseline and every variant once, in "
    "a seeded random order): a number, or `auto` to continue until every variant's paired "
    "energy-per-token delta is within `precision` (95 % CI), or `max_rounds`/`max_time_s`.",
    "workload.precision": "Target 95 % CI half-width of the paired deltas, as a fraction of the "
    "baseline (0.05 = ±5 percentage points); with `repeats: auto`.",
    "workload.min_rounds": "Rounds before `repeats: auto` may stop (at least 2: a CI needs 2).",
    "workload.max_rounds": "Most rounds `repeats: auto` runs.",
    "workload.max_time_s": "Seconds of rounds after which `repeats: auto` stops, once "
    "`min_rounds` are done (null = no limit).",
    "workload.scheme": "How variants take turns in a round: `resident` (all stay loaded), "
    "`reload` (saved once to OUT/artifacts, reloaded outside the window), `bracket` (one "
    "variant at a time between two baseline windows) or `auto` (resident if they fit in "
    "memory, else reload).",
    "workload.min_window_s": "Shortest metered window in seconds; a window also lasts at least "
    "20 sampling periods of the slowest meter (the prompts repeat inside it until it does).",
    "workload.limit": "Use only the first N prompts (null = all).",
    "workload.compile": "Decode with a static KV cache and a torch.compile'd decode step "
    "(compiled during the warm-up; needs a C++ compiler on CPU).",
    "workload.runtime": "The engine that runs the requests: torch, llama.cpp (a GGUF file), "
    "llama-server (a GGUF file served by llama.cpp's own binary, `GREENLLM_LLAMA_SERVER`; no "
    "evaluators) or onnxruntime (an ONNX decoder); a variant's last export step names the "
    "file, else the model is exported first (GGUF Q8_0 / ONNX int8 for int8_weight, F16 / "
    "fp32 otherwise).",
    "workload.threads": "Threads of the runtime (null = its default: torch one per core, "
    "llama.cpp half the cores); the count used is recorded with the result.",
    "measure.hz": "Meter sampling rate in samples per second.",
    "measure.idle_s": "Seconds of idle power measured once before the rounds (null = 10 s with "
    "a real meter, 0 with the estimate); every energy figure is then also given net of idle.",
    "measure.on_disturbance": "What to do with a contended or throttled window: `flag` (keep, "
    "count), `discard` (drop it) or `rerun` (measure again, up to `max_reruns`, then flag).",
    "measure.max_reruns": "Reruns of disturbed windows per variant and round.",
    "measure.max_other_cpu_share": "A window is contended when other processes used more than "
    "this share of the CPU during it.",
    "measure.headline": "Energy the report's headline uses: `gross`, `net` (idle-subtracted) or "
    "`auto` (net when idle power was measured).",
    "carbon.region": "Region code of the offline grid-intensity table (e.g. KOR, USA, FRA).",
    "carbon.intensity_g_per_kwh": "Explicit grid intensity in gCO2e/kWh (instead of region).",
    "carbon.pue": "Power usage effectiveness multiplier (1.0 for a device on your desk).",
    "carbon.intensity_series": "CSV of `timestamp,g_per_kwh[,marginal_g_per_kwh]` (ISO 8601 "
    "with a time zone): every window's emissions integrate its energy against it.",
    "carbon.provider": "Live intensity: `uk-national-grid` (no key), `electricitymaps` "
    "($ELECTRICITYMAPS_API_KEY), `watttime` ($WATTTIME_USERNAME / $WATTTIME_PASSWORD).",
    "carbon.zone": "The provider's zone / region code (e.g. DE, CAISO_NORTH).",
    "carbon.signal": "`average` or `marginal` intensity; every figure names which.",
    "carbon.fallback": "`table`: use the region's annual figure when the provider cannot be "
    "reached (the report says so); `none`: fail with one clear error.",
    "carbon.accounting": "`location` (grid mix) or `market` (your supplier's contractual "
    "intensity, given as intensity_g_per_kwh); never mixed in one report.",
    "carbon.device": "Device profile for embodied carbon (default: the detected device).",
    "carbon.embodied_kg_co2e": "Embodied kg CO2e of the device (a vendor figure); replaces the "
    "profile's published figure or ACT estimate.",
    "carbon.die_area_mm2": "Logic die area for the ACT estimate where the profile has none.",
    "carbon.service_life_years": "Service life the embodied carbon is amortised over "
    "(default: the profile's, else 4 years, a stated assumption).",
    "carbon.utilisation": "Fraction of its service life the device does such work (default "
    "1.0: the smallest embodied share, a lower bound).",
    "carbon.reference_g_per_kwh": "Reference grid for the normalised line (default: the world "
    "average of the offline table).",
    "schedule.when": "`now` or `low-carbon`.",
    "schedule.deadline": "The run must end within this (e.g. 8h, 90m).",
    "schedule.expected_duration_s": "Expected run duration (default: from the previous run in "
    "the store).",
    "schedule.expected_power_w": "Expected mean power (default: from the previous run).",
    "schedule.step_s": "Spacing of the candidate start times in seconds.",
    "targets.max_accuracy_drop_pp": "Largest allowed accuracy drop in percentage points.",
    "targets.min_energy_saving": "Smallest required saving in energy per token, as a fraction "
    "(0.2 = 20 %).",
}


_TOP_LEVEL_TABLE = (
    ("schema_version", "int", "required"),
    ("name", "str", "required"),
    ("model", "ModelSpec or str", "required"),
    ("variants", "mapping of name -> list of steps", "`{}` (baseline only)"),
    ("evals", "list of evaluations", "`[]`"),
    ("workload", "Workload", "the defaults below"),
    ("meters", "`auto` or list of str", '`"auto"`'),
    ("measure", "MeasureSpec", "see below"),
    ("carbon", "CarbonSpec", "see below"),
    ("targets", "TargetsSpec", "none"),
    ("calibration", "str or null", "`null`"),
    ("seed", "int", "`0`"),
    ("output", "str or null", "`null`"),
    ("schedule", "ScheduleSpec", "`when: now`"),
    ("models", "list of {name, ModelSpec fields}", "none (use `model`)"),
    ("devices", "list of DeviceSpec", "none (this machine)"),
    ("compress_on", "`local` or a device name", '`"local"`'),
)


def _type_str(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (typing.Union, __import__("types").UnionType):
        return " or ".join(_type_str(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_str(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp.__name__
    return getattr(tp, "__name__", str(tp))


def _default_str(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{json.dumps(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{json.dumps(to_dict(f.default_factory()))}`"
    return "required"


def _fields_table(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        doc = FIELD_DOCS.get(f"{prefix}{f.name}", "")
        if not doc and f.metadata.get("doc"):
            doc = f.metadata["doc"]
        rows.append(
            f"| `{f.name}` | {_type_str(hints.get(f.name, Any))} | {_default_str(f)} | {doc} |"
        )
    return rows


def _spec_or_none(registry, key: str):
    try:
        return registry.get(key)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("greenllm."):
            return None
        raise


def _registry_sections(registry, prefix: str) -> list[str]:
    """One ``### `key` `` section per registered step/evaluator: summary + settings table."""
    lines: list[str] = []
    for key in registry.names():
        spec = _spec_or_none(registry, key)
        lines += [f"### `{key}`", ""]
        if spec is None:
            lines += ["(not built into this version)", ""]
            continue
        if getattr(spec, "summary", ""):
            lines += [spec.summary, ""]
        lines += _fields_table(spec.config_cls, f"{prefix}{key}.") + [""]
    return lines


def schema_markdown() -> str:
    """The recipe reference (docs/recipes.md), generated from the dataclasses and registries."""
    from .evals import EVALS
    from .meters import METERS
    from .steps import STEPS

    lines = [
        "# Recipe reference",
        "",
        "<!-- generated by greenllm.recipe.schema_markdown(); do not edit by hand. "
        'Regenerate: python -c "import greenllm.recipe as r; print(r.schema_markdown(), '
        "end='')\" > docs/recipes.md -->",
        "",
        "A recipe is a YAML file read with `yaml.safe_load`. Unknown keys and unknown names "
        "(steps, methods, evaluators, meters) are errors that name the field path and "
        "suggest the closest known name. Check one with `greenllm validate RECIPE`; run it "
        "with `greenllm run RECIPE [--out DIR] [--resume/--fresh]`.",
        "",
        "```yaml",
        "schema_version: 1",
        "name: smollm2-int8-vs-wanda",
        "model: {id: HuggingFaceTB/SmolLM2-135M-Instruct, dtype: float32}",
        "variants:",
        "  int8:         [{quantize: {method: int8_weight}}]",
        "  wanda50:      [{prune: {method: wanda, sparsity: 0.5}}]",
        "  wanda50-int8: [{prune: {method: wanda, sparsity: 0.5}}, "
        "{quantize: {method: int8_weight}}]",
        "evals:",
        "  - perplexity: {data: builtin:wiki-sample}",
        "workload: {prompts: builtin:prompts, max_new_tokens: 32, batch_size: 1, "
        "warmup: 1, repeats: 3}",
        "meters: auto",
        "carbon: {region: KOR, pue: 1.0}",
        "targets: {max_accuracy_drop_pp: 1.0, min_energy_saving: 0.2}",
        "```",
        "",
        "## Limits and checks before any work",
        "",
        "A recipe file is at most 1 MiB of UTF-8 YAML, nested at most 64 levels deep and "
        "at most 100,000 nodes once aliases are expanded (a YAML alias bomb fails at once); "
        "error messages quote at most about 80 characters of a value. Numbers must be "
        "finite (no `.nan` / `.inf`) and within sane bounds (e.g. "
        "`workload.max_new_tokens` <= 1,000,000). The recipe `name` and every variant name "
        "become directory and file names: they may not be empty, `.` or `..`, or contain "
        "`/`, `\\` or control characters; any other character is kept and escaped in "
        "every report format.",
        "",
        "`greenllm validate` (and `greenllm run`, before it touches the store or loads a "
        "model) also checks that every step that needs calibration text has a top-level "
        "`calibration` (prune `wanda`, `sparsegpt`, `layers`; `distill`, `train`, `lora` "
        "without their own `data`) and that local paths exist: `model.id`, `calibration`, "
        "eval `data`, `workload.prompts` and step `data`. A string is a local path when it "
        "is absolute, starts with `./`, `../` or `~`, ends in a file extension greenllm "
        "reads (`.txt .json .jsonl .csv .parquet .gguf .safetensors .bin .yaml .yml`), or "
        "exists; `builtin:NAME`, URLs and anything else (a hub id such as `org/name`) are "
        "left to the loader. Relative paths are looked up in the working directory, then "
        "in the recipe's folder.",
        "",
        "## Studies: models x variants x devices",
        "",
        "`models:` (a list, instead of `model:`) and `devices:` make a recipe a study: every "
        "(model, variant) is compressed once (on `compress_on`), saved as a greenllm "
        "checkpoint, and evaluated and benchmarked on every device, the baseline and the "
        "variants of one model in the same rounds on each device. Devices reached "
        "`via: ray:<label>` run with `greenllm run RECIPE --cluster ray` (or `ray://HOST:PORT`); "
        "`--only-device NAME` runs one device's cells here, and `greenllm compare` merges "
        "stores produced separately. See docs/devices.md.",
        "",
        "```yaml",
        "models:",
        "  - {name: smollm2, id: HuggingFaceTB/SmolLM2-135M-Instruct}",
        "  - {name: tiny, id: ./tiny-llama}",
        "devices:",
        "  - {name: orin, profile: jetson-orin-nano-8gb, via: 'ray:jetson-orin-nano', "
        "torch_device: cuda}",
        "  - {name: xavier, profile: jetson-xavier-nx, via: 'ray:jetson-xavier-nx'}",
        "compress_on: local",
        "```",
        "",
        "## Top level",
        "",
    ]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default in _TOP_LEVEL_TABLE:
        lines.append(f"| `{key}` | {tp} | {default} | {FIELD_DOCS[key]} |")
    for title, cls, prefix in (
        ("model", ModelSpec, "model."),
        ("measure", MeasureSpec, "measure."),
        ("carbon", CarbonSpec, "carbon."),
        ("targets", TargetsSpec, "targets."),
        ("schedule", ScheduleSpec, "schedule."),
        ("devices[]", DeviceSpec, "devices."),
    ):
        lines += ["", f"## `{title}`", ""] + _fields_table(cls, prefix)
    lines += ["", "## `workload`", ""] + _fields_table(_workload_cls(), "workload.")
    lines += [
        "",
        "## `meters`",
        "",
        "`auto`, or a list of: " + ", ".join(f"`{n}`" for n in METERS.names()) + ".",
        "",
    ]
    lines += [
        "## Steps (`variants.<name>[i]`)",
        "",
        "Each step is `{KEY: {settings}}`; the steps of a variant run in order, each "
        "measured (duration and energy) by the runner. Steps whose config has "
        "`power_cap_w` or `power_mode` run under that hardware setting, restored after.",
        "",
    ]
    lines += _registry_sections(STEPS, "steps.")
    lines += [
        "## Evaluations (`evals[i]`)",
        "",
        "Each entry is `{KEY: {settings}}`. Data sources are a file path (relative to the "
        "recipe's folder) or `builtin:NAME` for the sets shipped in greenllm/data.",
        "",
    ]
    lines += _registry_sections(EVALS, "evals.")
    return "\n".join(lines).rstrip() + "\n"
