"""Grid intensity from codecarbon's packaged table (never its tracker), emissions, CSV rows."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from greenllm.carbon import (
    EMISSIONS_CSV_COLUMNS,
    Intensity,
    emissions_g,
    emissions_row,
    grid_intensity,
)
from greenllm.errors import ConfigError, UnknownNameError


@pytest.mark.parametrize("region,g", [("KOR", 430.567), ("USA", 369.473), ("FRA", 56.039)])
def test_packaged_intensities(region, g):
    pytest.importorskip("codecarbon", reason="codecarbon (greenllm[carbon]) is not installed")
    it = grid_intensity(region)
    assert it.g_per_kwh == pytest.approx(g)
    assert it.year == 2023 and it.region == region and "global_energy_mix.json" in it.source


def test_region_lookup_is_forgiving_but_strict():
    pytest.importorskip("codecarbon", reason="codecarbon (greenllm[carbon]) is not installed")
    assert grid_intensity("kor").region == "KOR"
    assert grid_intensity("France").region == "FRA"
    with pytest.raises(UnknownNameError, match="did you mean 'KOR'"):
        grid_intensity("KORR")


def test_explicit_intensity_needs_no_codecarbon():
    it = grid_intensity(intensity_g_per_kwh=123.4)
    assert it == Intensity(123.4, "user", None, None)
    with pytest.raises(ConfigError, match="intensity_g_per_kwh"):
        grid_intensity(intensity_g_per_kwh=-1)
    with pytest.raises(ConfigError, match="give region"):
        grid_intensity()


def test_emissions_arithmetic():
    assert emissions_g(3.6e6, 430.0) == pytest.approx(430.0)  # 1 kWh
    assert emissions_g(1.8e6, 400.0, pue=1.5) == pytest.approx(300.0)
    with pytest.raises(ConfigError, match="pue"):
        emissions_g(1.0, 400.0, pue=0.9)


def test_columns_are_codecarbons_emissions_csv_schema():
    pytest.importorskip("codecarbon", reason="codecarbon (greenllm[carbon]) is not installed")
    from codecarbon.output_methods.emissions_data import EmissionsData

    assert EMISSIONS_CSV_COLUMNS == tuple(f.name for f in dataclasses.fields(EmissionsData))


def test_emissions_row_units():
    it = Intensity(400.0, "user", None, "KOR", "South Korea")
    row = emissions_row(
        7.2e6, 100.0, it, pue=1.0, gpu_energy_j=3.6e6, cpu_energy_j=3.6e6, run_id="r1"
    )
    assert tuple(row) == EMISSIONS_CSV_COLUMNS
    assert row["energy_consumed"] == pytest.approx(2.0)  # kWh
    assert row["emissions"] == pytest.approx(0.8)  # kg
    assert row["gpu_power"] == pytest.approx(36000.0)  # W
    assert row["country_iso_code"] == "KOR" and row["run_id"] == "r1"
    with pytest.raises(ConfigError, match="not emissions.csv columns"):
        emissions_row(1.0, 1.0, it, extra={"bogus": 1})


def test_missing_codecarbon_with_only_a_region_names_the_fix():
    code = (
        "import sys; sys.modules['codecarbon'] = None\n"
        "import importlib.util as u; u.find_spec = lambda name, *a: None\n"
        "from greenllm.carbon import grid_intensity\n"
        "try:\n    grid_intensity('KOR')\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "MissingDependencyError" in out.stdout
    assert "pip install 'greenllm[carbon]'" in out.stdout and "intensity_g_per_kwh" in out.stdout


def test_carbon_never_imports_codecarbon_or_starts_a_tracker():
    code = (
        "import sys\nfrom greenllm.carbon import grid_intensity\ngrid_intensity('USA')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('codecarbon', 'pandas', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
