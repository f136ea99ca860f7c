"""Embodied (manufacturing) carbon of hardware and its share of a piece of work. Stdlib only.

A device's embodied emissions come from one of three places, in this order:

1. the user (``carbon.embodied_kg_co2e`` in the recipe: a vendor product carbon footprint);
2. the device profile's published figure (``DeviceProfile.embodied_kg_co2e`` with its source);
3. an ESTIMATE from the bill of materials the profile states (logic die area and process node,
   DRAM capacity and type, IC package count), with the constants of the ACT model
   (Gupta et al., "ACT: Designing Sustainable Computer Systems with an Architectural Carbon
   Modeling Tool", ISCA 2022; github.com/facebookresearch/ACT, the v1 tables at commit
   c3cff60: ``logic/epa.json``, ``logic/gpa_95.json``, ``logic/gpa_99.json``,
   ``logic/materials.json``, ``carbon_intensity/location.json``, ``dram/dram_hynix.json``, and
   150 g CO2e per IC package from ``exps/fairphone3``).

ACT's logic model: carbon per cm2 = (fab grid intensity x fab energy per cm2 + gases per cm2 +
raw materials per cm2) / fab yield; with ACT's defaults (Taiwan fab grid 583 g/kWh, gases the
mean of 95 % and 99 % abatement, yield 0.875) that is 1.81 kg CO2e/cm2 at 8 nm. DRAM is g per GB
/ yield (LPDDR4: 48 g/GB / 0.875). When nothing is known the figure is ``None`` (unknown), never
a guess.

The share of one piece of work (SCI's M term, ISO/IEC 21031): embodied x device time of the
work / (service life in hours x utilisation), where utilisation is the fraction of its life the
device does such work (1.0 = busy all its life: the smallest share, a lower bound).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError

ACT_SOURCE = (
    "ACT (Gupta et al., ISCA 2022), github.com/facebookresearch/ACT v1 tables at commit "
    "c3cff60 (logic/epa.json, logic/gpa_95.json, logic/gpa_99.json, logic/materials.json, "
    "carbon_intensity/location.json, dram/dram_hynix.json; 150 g per IC package as in "
    "exps/fairphone3)"
)

# ACT v1 logic tables, per process node (nm): fab energy per area (kWh/cm2), gases (g/cm2)
# with 95 % and 99 % abatement, raw materials (g/cm2).
ACT_EPA_KWH_PER_CM2 = {28: 0.90, 20: 1.2, 14: 1.2, 10: 1.475, 8: 1.52, 7: 2.15, 5: 2.75, 3: 3.25}
ACT_GPA95_G_PER_CM2 = {28: 175, 20: 190, 14: 200, 10: 240, 8: 240, 7: 350, 5: 430, 3: 470}
ACT_GPA99_G_PER_CM2 = {28: 100, 20: 110, 14: 125, 10: 150, 8: 150, 7: 200, 5: 225, 3: 275}
ACT_MATERIALS_G_PER_CM2 = dict.fromkeys((28, 20, 14, 10, 8, 7, 5, 3), 500)
ACT_FAB_TAIWAN_G_PER_KWH = 583.0  # carbon_intensity/location.json "taiwan", ACT's default fab
ACT_FAB_YIELD = 0.875
# ACT v1 dram/dram_hynix.json, g CO2e per GB (before yield)
ACT_DRAM_G_PER_GB = {
    "ddr3_50nm": 600,
    "ddr3_40nm": 315,
    "ddr3_30nm": 230,
    "lpddr3_30nm": 201,
    "lpddr3_20nm": 184,
    "lpddr2_20nm": 159,
    "lpddr4": 48,
    "ddr4_10nm": 65,
}
ACT_PACKAGE_G = 150.0  # per IC package

# greenllm's default assumptions (stated in every report that uses them)
DEFAULT_SERVICE_LIFE_YEARS = 4.0
DEFAULT_UTILISATION = 1.0
HOURS_PER_YEAR = 24 * 365.0


def act_node(node_nm: float) -> int:
    """The ACT table node used for ``node_nm``: the same node, else the nearest one, a tie going
    to the larger node (12 nm, a 16 nm-class derivative, and 16 nm map to 14 nm)."""
    nodes = sorted(ACT_EPA_KWH_PER_CM2)
    return min(nodes, key=lambda n: (abs(n - node_nm), -n))


def logic_g_per_cm2(
    node_nm: float,
    fab_g_per_kwh: float = ACT_FAB_TAIWAN_G_PER_KWH,
    abatement: str = "97",
    fab_yield: float = ACT_FAB_YIELD,
) -> float:
    """ACT's carbon per cm2 of logic die (g CO2e/cm2); ``abatement`` 95, 99 or 97 (the mean,
    ACT's default)."""
    n = act_node(node_nm)
    gas = {
        "95": ACT_GPA95_G_PER_CM2[n],
        "99": ACT_GPA99_G_PER_CM2[n],
        "97": (ACT_GPA95_G_PER_CM2[n] + ACT_GPA99_G_PER_CM2[n]) / 2.0,
    }.get(str(abatement))
    if gas is None:
        raise ConfigError(f"abatement: {abatement!r} is not 95, 97 or 99")
    if not 0 < fab_yield <= 1:
        raise ConfigError(f"fab_yield: {fab_yield} is outside (0, 1]")
    energy = fab_g_per_kwh * ACT_EPA_KWH_PER_CM2[n]
    return (energy + gas + ACT_MATERIALS_G_PER_CM2[n]) / fab_yield


def dram_g_per_gb(dram_type: str, fab_yield: float = ACT_FAB_YIELD) -> float:
    try:
        return ACT_DRAM_G_PER_GB[dram_type] / fab_yield
    except KeyError:
        raise ConfigError(
            f"dram_type: {dram_type!r} is not in ACT's DRAM table ({', '.join(ACT_DRAM_G_PER_GB)})"
        ) from None


@dataclass(frozen=True)
class BillOfMaterials:
    """What an embodied estimate is computed from; every number says where it comes from.

    ``logic_die_area_mm2`` None means the die area is not published: no estimate is made."""

    logic_die_area_mm2: float | None
    process_node_nm: float
    dram_gb: float
    dram_type: str  # a key of ACT_DRAM_G_PER_GB
    packages: int  # IC packages counted (SoC + DRAM + ...)
    notes: str = ""  # where the die area, node, DRAM and package count come from

    def validate(self) -> None:
        if self.logic_die_area_mm2 is not None and self.logic_die_area_mm2 <= 0:
            raise ConfigError(f"logic_die_area_mm2: {self.logic_die_area_mm2} must be > 0")
        if self.dram_gb < 0 or self.packages < 0:
            raise ConfigError("dram_gb and packages must be >= 0")
        dram_g_per_gb(self.dram_type)


def estimate_from_bom(bom: BillOfMaterials) -> tuple[float | None, dict[str, Any]]:
    """(kg CO2e or None, breakdown in g) of a bill of materials with ACT's constants."""
    bom.validate()
    breakdown: dict[str, Any] = {
        "act_node_nm": act_node(bom.process_node_nm),
        "logic_g_per_cm2": logic_g_per_cm2(bom.process_node_nm),
        "dram_g_per_gb": dram_g_per_gb(bom.dram_type),
        "package_g": ACT_PACKAGE_G,
    }
    breakdown["dram_g"] = bom.dram_gb * breakdown["dram_g_per_gb"]
    breakdown["packages_g"] = bom.packages * ACT_PACKAGE_G
    if bom.logic_die_area_mm2 is None:
        breakdown["logic_g"] = None
        return None, breakdown
    breakdown["logic_g"] = bom.logic_die_area_mm2 / 100.0 * breakdown["logic_g_per_cm2"]
    total_g = breakdown["logic_g"] + breakdown["dram_g"] + breakdown["packages_g"]
    return total_g / 1000.0, breakdown


@dataclass(frozen=True)
class Embodied:
    """A device's embodied emissions and the assumptions its amortisation uses."""

    kg_co2e: float | None  # None: unknown
    service_life_years: float
    utilisation: float
    kind: str  # "user" | "published" | "estimate" | "unknown"
    source: str
    device: str | None = None
    life_source: str = ""
    breakdown: dict[str, Any] = field(default_factory=dict)
    bom: dict[str, Any] | None = None

    @property
    def estimated(self) -> bool:
        return self.kind == "estimate"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["estimated"] = self.estimated
        return d


def _check_life(life: float, utilisation: float) -> None:
    if not 0 < life <= 50:
        raise ConfigError(f"carbon.service_life_years: {life} is outside (0, 50]")
    if not 0 < utilisation <= 1:
        raise ConfigError(
            f"carbon.utilisation: {utilisation} is a fraction of the service life in (0, 1]"
        )


def embodied_for(
    profile: Any | None,
    *,
    kg_co2e: float | None = None,
    service_life_years: float | None = None,
    utilisation: float | None = None,
    die_area_mm2: float | None = None,
) -> Embodied:
    """The embodied figure of ``profile`` (a DeviceProfile, or None) with the user's overrides:
    ``kg_co2e`` replaces any figure (a vendor PCF); ``die_area_mm2`` completes a bill of
    materials whose die area the profile does not know."""
    name = getattr(profile, "name", None)
    p_life = getattr(profile, "service_life_years", None)
    life = service_life_years or p_life or DEFAULT_SERVICE_LIFE_YEARS
    life_src = (
        "recipe (carbon.service_life_years)"
        if service_life_years
        else getattr(profile, "service_life_source", "") or "device profile"
        if p_life
        else f"greenllm default assumption ({DEFAULT_SERVICE_LIFE_YEARS:g} years)"
    )
    util = DEFAULT_UTILISATION if utilisation is None else float(utilisation)
    _check_life(float(life), util)
    common: dict[str, Any] = dict(
        service_life_years=float(life), utilisation=util, device=name, life_source=life_src
    )
    if kg_co2e is not None:
        if kg_co2e < 0:
            raise ConfigError(f"carbon.embodied_kg_co2e: {kg_co2e} must be >= 0")
        return Embodied(
            float(kg_co2e), kind="user", source="recipe (carbon.embodied_kg_co2e)", **common
        )
    published = getattr(profile, "embodied_kg_co2e", None)
    if published is not None:
        return Embodied(
            float(published),
            kind="published",
            source=getattr(profile, "embodied_source", "") or "device profile",
            **common,
        )
    bom: BillOfMaterials | None = getattr(profile, "bom", None)
    if bom is not None:
        if die_area_mm2 is not None:
            from dataclasses import replace

            bom = replace(
                bom,
                logic_die_area_mm2=float(die_area_mm2),
                notes=bom.notes + "; logic die area from the recipe (carbon.die_area_mm2)",
            )
        kg, breakdown = estimate_from_bom(bom)
        if kg is not None:
            return Embodied(
                kg,
                kind="estimate",
                source=f"ESTIMATE from the profile's bill of materials with {ACT_SOURCE}",
                breakdown=breakdown,
                bom=asdict(bom),
                **common,
            )
        return Embodied(
            None,
            kind="unknown",
            source=(
                f"unknown: {getattr(profile, 'title', name)}'s logic die area is not published "
                "(give carbon.die_area_mm2 for an ACT estimate, or carbon.embodied_kg_co2e)"
            ),
            breakdown=breakdown,
            bom=asdict(bom),
            **common,
        )
    return Embodied(
        None,
        kind="unknown",
        source=(
            "unknown: no published figure or bill of materials for "
            f"{getattr(profile, 'title', name or 'this device')} "
            "(give carbon.embodied_kg_co2e)"
        ),
        **common,
    )


def amortised_g(embodied: Embodied, device_time_s: float) -> float | None:
    """The embodied g CO2e attributable to ``device_time_s`` of work (SCI's M)."""
    if embodied.kg_co2e is None:
        return None
    if device_time_s < 0:
        raise ConfigError(f"device_time_s: {device_time_s} must be >= 0")
    life_s = embodied.service_life_years * HOURS_PER_YEAR * 3600.0 * embodied.utilisation
    return embodied.kg_co2e * 1000.0 * device_time_s / life_s


__all__ = [
    "ACT_SOURCE",
    "BillOfMaterials",
    "Embodied",
    "act_node",
    "amortised_g",
    "dram_g_per_gb",
    "embodied_for",
    "estimate_from_bom",
    "logic_g_per_cm2",
]
