"""Studies: a recipe's ``models:`` x variants x ``devices:`` (torch-free, parsed with the recipe).

A recipe with neither ``models:`` nor ``devices:`` is a plain one-model recipe and nothing here
changes how it runs or what its store keys are. With them, every (model, variant, device) is
a *cell*: each (model, variant) is compressed once (on ``compress_on``: ``local`` by default,
or a named device), saved as a greenllm checkpoint, and every device evaluates and benchmarks
exactly that artifact. The baseline and the variants of one model are measured on one device
in the same rounds (that is what pairs them), so the unit of execution is a *group*: one model
on one device, with all of its variants.

A device is reached ``local``-ly (this machine, optionally on another torch device:
``torch_device: cuda``) or through a Ray resource label, ``via: "ray:<label>"`` (a node started
with ``ray start --resources='{"<label>": 1, "greenllm_meter": 1}'``); see docs/devices.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .config import parse_config
from .errors import ConfigError, UnknownNameError
from .limits import check_safe_name, excerpt

LOCAL = "local"
RAY_PREFIX = "ray:"
METER_RESOURCE = "greenllm_meter"  # one per device node: energy windows never overlap on it
_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class DeviceSpec:
    """One device of a study: a profile from ``greenllm devices`` and how to reach it."""

    name: str
    profile: str
    via: str = LOCAL
    torch_device: str | None = None
    memory_gib: float | None = None
    # the deployment runtime this target runs the model in (torch, llama.cpp, onnxruntime)
    # and its threads; None = the workload's. One machine with three runtimes is three devices:
    # each measures its own baseline and variants in its own rounds (a per-runtime baseline).
    runtime: str | None = None
    threads: int | None = None

    def validate(self):
        check_safe_name(self.name, "name")
        from .devices import get_profile

        try:
            get_profile(self.profile)
        except UnknownNameError as exc:
            raise ConfigError(f"profile: {exc}") from None
        if self.via != LOCAL:
            label = self.via[len(RAY_PREFIX) :] if self.via.startswith(RAY_PREFIX) else ""
            if not label or not _LABEL.match(label):
                raise ConfigError(
                    f"via: {excerpt(self.via)} is not a way to reach a device; use 'local' or "
                    "'ray:<resource label>' (letters, digits, '_', '-', '.'), e.g. "
                    "'ray:jetson-orin-nano'"
                )
            if label == METER_RESOURCE:
                raise ConfigError(
                    f"via: {METER_RESOURCE!r} is greenllm's own per-node meter resource; name "
                    "the device's resource label"
                )
        td = self.torch_device
        if td is not None and not (td == "cpu" or td.startswith(("cuda", "mps"))):
            raise ConfigError(f"torch_device: {excerpt(td)} is not a device; use cpu or cuda[:N]")
        if self.memory_gib is not None and not self.memory_gib > 0:
            raise ConfigError(f"memory_gib: {self.memory_gib!r} must be > 0")
        if self.runtime is not None:
            from .runtimes.base import check_runtime

            try:
                check_runtime(self.runtime)
            except UnknownNameError as exc:
                raise ConfigError(f"runtime: {exc}") from None
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ConfigError(f"threads: {self.threads!r} must be a positive integer")

    @property
    def ray_label(self) -> str | None:
        return self.via[len(RAY_PREFIX) :] if self.via.startswith(RAY_PREFIX) else None

    def key(self) -> dict[str, Any]:
        """What makes measurements on this device comparable (part of its store keys)."""
        key: dict[str, Any] = {
            "name": self.name,
            "profile": self.profile,
            "torch_device": self.torch_device,
        }
        if self.runtime is not None or self.threads is not None:
            key.update(runtime=self.runtime, threads=self.threads)
        return key


def parse_models(raw: Any, model_spec_cls: type) -> list[tuple[str, Any]]:
    """``models:``: a non-empty list of ``{name, id, dtype, device, trust_remote_code}``
    (``name`` defaults to the last part of the id); names are unique."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            "models: expected a non-empty list such as [{name: smollm2, id: "
            "HuggingFaceTB/SmolLM2-135M-Instruct}, {name: tiny, id: ./tiny}]"
        )
    out: list[tuple[str, Any]] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        path = f"models[{i}]"
        if isinstance(entry, str):
            entry = {"id": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: expected a mapping with 'id', got {excerpt(entry)}")
        entry = dict(entry)
        name = entry.pop("name", None)
        spec = parse_config(model_spec_cls, entry, path)
        if name is None:
            name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(spec.id).rstrip("/").split("/")[-1])
            name = name.strip("-.") or f"model{i}"
        check_safe_name(name, f"{path}.name")
        if name in seen:
            raise ConfigError(
                f"{path}.name: duplicate model name {name!r} (also models[{seen[name]}]); "
                "give each model a distinct name"
            )
        seen[name] = i
        out.append((name, spec))
    return out


def parse_devices(raw: Any) -> list[DeviceSpec]:
    """``devices:``: a non-empty list of ``{name, profile, via, torch_device, memory_gib}``
    with unique names (a list, not a mapping, so a repeated name is an error, not silently
    the last one)."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            "devices: expected a non-empty list such as [{name: orin, profile: "
            "jetson-orin-nano-8gb, via: 'ray:jetson-orin-nano'}]"
        )
    out: list[DeviceSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        path = f"devices[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{path}: expected a mapping with 'name' and 'profile', got {excerpt(entry)}"
            )
        spec = parse_config(DeviceSpec, entry, path)
        if spec.name in seen:
            first = seen[spec.name]
            raise ConfigError(
                f"{path}.name: duplicate device name {spec.name!r} (also devices[{first}])"
            )
        seen[spec.name] = i
        out.append(spec)
    return out


def check_compress_on(value: Any, devices: list[DeviceSpec]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"compress_on: expected 'local' or a device name, got {excerpt(value)}")
    names = [d.name for d in devices]
    if value != LOCAL and value not in names:
        from .registry import did_you_mean

        hint = did_you_mean(value, names)
        raise ConfigError(
            f"compress_on: {value!r} is not a device of this recipe"
            + (f"; did you mean {hint!r}?" if hint else "")
            + f" (devices: {', '.join(names) or 'none'}; or 'local')"
        )
    return value


def device_to_dict(d: DeviceSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": d.name, "profile": d.profile, "via": d.via}
    if d.torch_device is not None:
        out["torch_device"] = d.torch_device
    if d.memory_gib is not None:
        out["memory_gib"] = d.memory_gib
    if d.runtime is not None:
        out["runtime"] = d.runtime
    if d.threads is not None:
        out["threads"] = d.threads
    return out


__all__ = [
    "DeviceSpec",
    "LOCAL",
    "METER_RESOURCE",
    "parse_models",
    "parse_devices",
    "check_compress_on",
    "device_to_dict",
]
