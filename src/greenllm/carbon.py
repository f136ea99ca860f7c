"""Grid carbon intensity and emissions, offline.

Intensity comes from codecarbon's PACKAGED country table
(``codecarbon/data/private_infra/global_energy_mix.json``: ``carbon_intensity`` in g/kWh and
``year`` per ISO-3 code), read as a plain JSON file: codecarbon's tracker is never started
(offline it was seen to guess the country silently). Or the user gives g/kWh explicitly.
Emissions = energy (kWh) x intensity (g/kWh) x PUE. ``EMISSIONS_CSV_COLUMNS`` is codecarbon's
``emissions.csv`` schema (the fields of codecarbon.output_methods.emissions_data.EmissionsData,
in order); ``emissions_row()`` builds one row in it (kg, kWh, W, s as codecarbon writes them).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import util as _importlib_util
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError, MissingDependencyError, UnknownNameError
from .registry import did_you_mean
from .units import G_PER_KG, J_PER_KWH

_MIX_FILE = ("data", "private_infra", "global_energy_mix.json")

EMISSIONS_CSV_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "cpu_utilization_percent",
    "gpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "on_cloud",
    "pue",
    "wue",
)


@dataclass(frozen=True)
class Intensity:
    g_per_kwh: float
    source: str  # "codecarbon global_energy_mix.json (KOR, South Korea)" / "user"
    year: int | None
    region: str | None = None
    country_name: str | None = None


def _codecarbon_dir() -> Path | None:
    spec = _importlib_util.find_spec("codecarbon")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def _energy_mix() -> tuple[dict[str, Any], str]:
    base = _codecarbon_dir()
    if base is None:
        raise MissingDependencyError("codecarbon", "carbon", "grid intensity by region")
    path = base.joinpath(*_MIX_FILE)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read codecarbon's packaged table {path}: {exc}") from exc
    return data, _codecarbon_version(base)


def _codecarbon_version(base: Path) -> str:
    try:
        text = (base / "_version.py").read_text()
        return text.split("=", 1)[1].strip().strip("\"'")
    except (OSError, IndexError):
        return "unknown"


def regions() -> list[str]:
    """ISO-3 codes in the packaged table."""
    return sorted(_energy_mix()[0])


def grid_intensity(
    region: str | None = None, intensity_g_per_kwh: float | None = None
) -> Intensity:
    """Carbon intensity of the grid: explicit g/kWh wins; else the region's yearly mean."""
    if intensity_g_per_kwh is not None:
        try:
            value = float(intensity_g_per_kwh)
        except (TypeError, ValueError):
            raise ConfigError(
                f"carbon.intensity_g_per_kwh: {intensity_g_per_kwh!r} is not a number"
            ) from None
        if value < 0:
            raise ConfigError(f"carbon.intensity_g_per_kwh: must be >= 0, got {value}")
        return Intensity(value, "user", None, region.upper() if region else None)
    if not region:
        raise ConfigError(
            "carbon: give region (ISO-3 country code, e.g. KOR) or intensity_g_per_kwh"
        )
    try:
        table, version = _energy_mix()
    except MissingDependencyError:
        raise MissingDependencyError(
            "codecarbon",
            "carbon",
            f"the grid intensity of region {region!r} (or set intensity_g_per_kwh instead)",
        ) from None
    code = region.strip().upper()
    if code not in table:
        known = sorted(table)
        names = {v.get("country_name", "").lower(): k for k, v in table.items()}
        if code.lower() in names:
            code = names[code.lower()]
        else:
            raise UnknownNameError("region", region, [], did_you_mean(code, known))
    row = table[code]
    year = row.get("year")
    return Intensity(
        float(row["carbon_intensity"]),
        f"codecarbon {version} global_energy_mix.json",
        int(year) if year else None,
        code,
        row.get("country_name"),
    )


def emissions_g(energy_j: float, intensity_g_per_kwh: float, pue: float = 1.0) -> float:
    """CO2-equivalent grams of ``energy_j`` joules at the given intensity and PUE."""
    if pue < 1.0:
        raise ConfigError(f"carbon.pue: must be >= 1.0 (1.0 = no datacentre overhead), got {pue}")
    if energy_j < 0:
        raise ConfigError(f"energy_j: must be >= 0, got {energy_j}")
    return energy_j / J_PER_KWH * intensity_g_per_kwh * pue


def emissions_row(
    energy_j: float,
    duration_s: float,
    intensity: Intensity,
    pue: float = 1.0,
    *,
    project_name: str = "greenllm",
    run_id: str = "",
    experiment_id: str = "",
    cpu_energy_j: float = 0.0,
    gpu_energy_j: float = 0.0,
    ram_energy_j: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``emissions.csv`` row in codecarbon's schema and units (kg CO2eq, kWh, W, s)."""
    kg = emissions_g(energy_j, intensity.g_per_kwh, pue) / G_PER_KG
    row: dict[str, Any] = {c: "" for c in EMISSIONS_CSV_COLUMNS}
    cc_version = ""
    base = _codecarbon_dir()
    if base is not None:
        cc_version = _codecarbon_version(base)
    row.update(
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        project_name=project_name,
        run_id=run_id,
        experiment_id=experiment_id,
        duration=duration_s,
        emissions=kg,
        emissions_rate=kg / duration_s if duration_s > 0 else 0.0,
        cpu_power=cpu_energy_j / duration_s if duration_s > 0 else 0.0,
        gpu_power=gpu_energy_j / duration_s if duration_s > 0 else 0.0,
        ram_power=ram_energy_j / duration_s if duration_s > 0 else 0.0,
        cpu_energy=cpu_energy_j / J_PER_KWH,
        gpu_energy=gpu_energy_j / J_PER_KWH,
        ram_energy=ram_energy_j / J_PER_KWH,
        energy_consumed=energy_j / J_PER_KWH,
        water_consumed=0.0,
        country_name=intensity.country_name or "",
        country_iso_code=intensity.region or "",
        os=platform.platform(),
        python_version=platform.python_version(),
        codecarbon_version=cc_version,
        tracking_mode="machine",
        on_cloud="N",
        pue=pue,
        wue=0.0,
    )
    if extra:
        unknown = [k for k in extra if k not in row]
        if unknown:
            raise ConfigError(f"emissions_row: {unknown} are not emissions.csv columns")
        row.update(extra)
    return row


__all__ = [
    "Intensity",
    "grid_intensity",
    "emissions_g",
    "emissions_row",
    "EMISSIONS_CSV_COLUMNS",
    "regions",
]
