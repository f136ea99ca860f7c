"""Device profiles and detection (stdlib only, no torch).

A profile records what the published specification of a board says: memory, peak memory
bandwidth, CPU and GPU cores, the nvpmodel power modes with their ids, names and watt budgets,
and where those numbers come from (``source``). ``bench`` uses the bandwidth for the roofline;
``control.jetson`` uses the power modes to check a requested mode before touching the board.

``detect_device()`` reads ``/proc/device-tree/model`` (Jetson, Raspberry Pi), the NVML device
name (discrete NVIDIA GPUs) and ``/proc/cpuinfo`` (anything else). Every root is an argument so
tests point them at files under ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .embodied import BillOfMaterials
from .errors import UnknownNameError
from .registry import did_you_mean

GB = 10**9  # bandwidths are published in decimal GB/s
GIB = 1024**3


@dataclass(frozen=True)
class PowerMode:
    """One nvpmodel mode: ``nvpmodel -m <id>`` selects it; ``budget_w`` None = no cap (MAXN)."""

    id: int
    name: str
    budget_w: float | None


@dataclass(frozen=True)
class DeviceProfile:
    name: str  # registry-style key, e.g. "jetson-orin-nano-8gb"
    title: str
    kind: str  # "jetson" | "sbc" | "gpu" | "cpu"
    memory_bytes: int | None
    memory_type: str | None
    memory_bandwidth_bytes_per_s: float | None  # peak, from the data sheet; None = measure it
    cpu: str
    cpu_cores: int | None
    gpu: str | None
    gpu_cores: int | None  # CUDA cores
    power_modes: tuple[PowerMode, ...] = ()
    default_power_mode: int | None = None
    power_min_w: float | None = None  # published module power range
    power_max_w: float | None = None
    source: str = ""
    match: tuple[str, ...] = field(default=(), repr=False)  # lower-case markers, see match_model
    # embodied (manufacturing) carbon: a published product carbon footprint with its source,
    # else a bill of materials for an ACT estimate (greenllm.embodied); None = not known
    embodied_kg_co2e: float | None = None
    embodied_source: str = ""
    service_life_years: float | None = None
    service_life_source: str = ""
    bom: BillOfMaterials | None = None

    def power_mode(self, mode: int | str) -> PowerMode:
        """Look up a mode by id (int or digit string) or by name (case-insensitive)."""
        from .errors import HardwareControlError

        key = str(mode).strip()
        for m in self.power_modes:
            if key.isdigit() and m.id == int(key) or m.name.lower() == key.lower():
                return m
        listing = ", ".join(f"{m.id}={m.name}" for m in self.power_modes) or "none"
        raise HardwareControlError(
            f"unknown power mode {mode!r} for {self.title} (modes: {listing}); "
            "pass an id or a name from that list"
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("match")
        return d


def _modes(*rows: tuple[int, str, float | None]) -> tuple[PowerMode, ...]:
    return tuple(PowerMode(i, n, w) for i, n, w in rows)


_JETSON_GUIDE = (
    "NVIDIA Jetson Linux Developer Guide, Platform Power and Performance "
    "(Supported Modes and Power Efficiency), docs.nvidia.com/jetson"
)

PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile(
            "jetson-orin-nano-8gb",
            "NVIDIA Jetson Orin Nano 8GB",
            "jetson",
            8 * GIB,
            "LPDDR5 128-bit",
            68 * GB,
            "6x Arm Cortex-A78AE @ 1.5 GHz",
            6,
            "Ampere, 32 tensor cores",
            1024,
            _modes((0, "15W", 15.0), (1, "7W", 7.0)),
            0,
            7.0,
            15.0,
            "NVIDIA Jetson Orin Nano Series Data Sheet DS-11105 (JetPack 5.1 / 6.0 modes); "
            + _JETSON_GUIDE,
            ("orin nano",),
        ),
        DeviceProfile(
            "jetson-orin-nano-8gb-super",
            "NVIDIA Jetson Orin Nano 8GB (Super, JetPack 6.2)",
            "jetson",
            8 * GIB,
            "LPDDR5 128-bit",
            102 * GB,
            "6x Arm Cortex-A78AE @ 1.7 GHz",
            6,
            "Ampere, 32 tensor cores",
            1024,
            _modes((0, "15W", 15.0), (1, "25W", 25.0), (2, "MAXN_SUPER", None)),
            0,
            7.0,
            25.0,
            "NVIDIA Jetson Orin Nano Super Developer Kit data sheet (Dec 2024); " + _JETSON_GUIDE,
            ("orin nano+super",),
        ),
        DeviceProfile(
            "jetson-orin-nx-16gb",
            "NVIDIA Jetson Orin NX 16GB",
            "jetson",
            16 * GIB,
            "LPDDR5 128-bit",
            102.4 * GB,
            "8x Arm Cortex-A78AE @ 2.0 GHz",
            8,
            "Ampere, 32 tensor cores",
            1024,
            _modes((0, "MAXN", None), (1, "10W", 10.0), (2, "15W", 15.0), (3, "25W", 25.0)),
            2,
            10.0,
            25.0,
            "NVIDIA Jetson Orin NX Series Modules Data Sheet DS-10712-001; " + _JETSON_GUIDE,
            ("orin nx",),
        ),
        DeviceProfile(
            "jetson-agx-orin-64gb",
            "NVIDIA Jetson AGX Orin 64GB",
            "jetson",
            64 * GIB,
            "LPDDR5 256-bit",
            204.8 * GB,
            "12x Arm Cortex-A78AE @ 2.2 GHz",
            12,
            "Ampere, 64 tensor cores",
            2048,
            _modes((0, "MAXN", None), (1, "15W", 15.0), (2, "30W", 30.0), (3, "50W", 50.0)),
            2,
            15.0,
            60.0,
            "NVIDIA Jetson AGX Orin Series Data Sheet DS-10662-001; " + _JETSON_GUIDE,
            ("agx orin",),
        ),
        DeviceProfile(
            "jetson-xavier-nx",
            "NVIDIA Jetson Xavier NX 8GB",
            "jetson",
            8 * GIB,
            "LPDDR4x 128-bit",
            59.7 * GB,
            "6x NVIDIA Carmel ARMv8.2 @ 1.9 GHz",
            6,
            "Volta, 48 tensor cores",
            384,
            _modes(
                (0, "MODE_15W_2CORE", 15.0),
                (1, "MODE_15W_4CORE", 15.0),
                (2, "MODE_15W_6CORE", 15.0),
                (3, "MODE_10W_2CORE", 10.0),
                (4, "MODE_10W_4CORE", 10.0),
                (5, "MODE_10W_DESKTOP", 10.0),
                (6, "MODE_20W_2CORE", 20.0),
                (7, "MODE_20W_4CORE", 20.0),
                (8, "MODE_20W_6CORE", 20.0),
            ),
            2,
            10.0,
            20.0,
            "NVIDIA Jetson Xavier NX Data Sheet DS-09693-001; "
            + _JETSON_GUIDE
            + " (20W modes from JetPack 4.6 on)",
            ("xavier nx",),
        ),
        DeviceProfile(
            "jetson-agx-xavier",
            "NVIDIA Jetson AGX Xavier 32GB",
            "jetson",
            32 * GIB,
            "LPDDR4x 256-bit",
            136.5 * GB,
            "8x NVIDIA Carmel ARMv8.2 @ 2.26 GHz",
            8,
            "Volta, 64 tensor cores",
            512,
            _modes(
                (0, "MAXN", None),
                (1, "MODE_10W", 10.0),
                (2, "MODE_15W", 15.0),
                (3, "MODE_30W_ALL", 30.0),
                (4, "MODE_30W_6CORE", 30.0),
                (5, "MODE_30W_4CORE", 30.0),
                (6, "MODE_30W_2CORE", 30.0),
            ),
            2,
            10.0,
            30.0,
            "NVIDIA Jetson AGX Xavier Series Data Sheet DS-09654-001; " + _JETSON_GUIDE,
            ("agx xavier", "jetson-agx"),
        ),
        DeviceProfile(
            "jetson-nano-4gb",
            "NVIDIA Jetson Nano 4GB",
            "jetson",
            4 * GIB,
            "LPDDR4 64-bit",
            25.6 * GB,
            "4x Arm Cortex-A57 @ 1.43 GHz",
            4,
            "Maxwell",
            128,
            _modes((0, "MAXN", 10.0), (1, "5W", 5.0)),
            0,
            5.0,
            10.0,
            "NVIDIA Jetson Nano System-on-Module Data Sheet DA-09366-001; " + _JETSON_GUIDE,
            ("jetson nano",),
        ),
        DeviceProfile(
            "jetson-tx2",
            "NVIDIA Jetson TX2 8GB",
            "jetson",
            8 * GIB,
            "LPDDR4 128-bit",
            59.7 * GB,
            "2x NVIDIA Denver2 + 4x Arm Cortex-A57",
            6,
            "Pascal",
            256,
            _modes(
                (0, "MAXN", None),
                (1, "MAXQ", 7.5),
                (2, "MAXP_CORE_ALL", 15.0),
                (3, "MAXP_CORE_ARM", 15.0),
                (4, "MAXP_CORE_DENVER", 15.0),
            ),
            None,
            7.5,
            15.0,
            "NVIDIA Jetson TX2 Series Module Data Sheet DS-08482-001; NVIDIA L4T Development "
            "Guide, Power Management (nvpmodel modes); default mode not recorded here",
            ("tx2", "quill"),
        ),
        DeviceProfile(
            "raspberry-pi-5",
            "Raspberry Pi 5",
            "sbc",
            8 * GIB,
            "LPDDR4X-4267 32-bit",
            17.0 * GB,
            "4x Arm Cortex-A76 @ 2.4 GHz",
            4,
            "VideoCore VII (no CUDA)",
            None,
            (),
            None,
            None,
            27.0,
            "Raspberry Pi 5 product brief (datasheets.raspberrypi.com/rpi5/"
            "raspberry-pi-5-product-brief.pdf); 17 GB/s as used by the SLM-on-edge study; "
            "2/4/8/16 GB variants exist (8 GB recorded); 27 W is the official 5 V / 5 A supply",
            ("raspberry pi 5",),
        ),
        DeviceProfile(
            "nvidia-gpu",
            "NVIDIA GPU (generic; limits read from NVML)",
            "gpu",
            None,
            None,
            None,
            "host CPU",
            None,
            "NVIDIA (name from NVML)",
            None,
            (),
            None,
            None,
            None,
            "no fixed spec: power limits come from NVML at run time and the bandwidth is "
            "measured by bench's copy probe",
            (),
        ),
        DeviceProfile(
            "cpu",
            "Generic CPU",
            "cpu",
            None,
            None,
            None,
            "from /proc/cpuinfo",
            None,
            None,
            None,
            (),
            None,
            None,
            None,
            "no fixed spec: bandwidth is measured by bench's copy probe",
            (),
        ),
    )
}


# Bills of materials for ACT embodied estimates. No public product carbon footprint exists for
# these boards. Die areas are used only where NVIDIA published them or where they follow from
# NVIDIA's published figures; where none is published the area is None and the embodied figure
# is unknown unless the recipe gives carbon.die_area_mm2 or carbon.embodied_kg_co2e.
_LOWER_BOUND = (
    "package count is a lower bound: only the SoC and one DRAM package are counted (PMIC, "
    "flash and other ICs are not)"
)
_ORIN_DIE = (
    "Orin (T234) die area derived, not published: 17 B transistors (NVIDIA, GTC China 2019) at "
    "the density of GA102 on the same Samsung 8N process (28.3 B transistors on 628.4 mm2, "
    "NVIDIA Ampere GA102 GPU architecture whitepaper) = 377.5 mm2; Orin Nano/NX use a "
    "partly fused T234, whose whole die is counted"
)
_LPDDR = "LPDDR4x/LPDDR5 counted with ACT's lpddr4 figure (the only LPDDR4-class entry)"


def _orin_bom(dram_gb: float) -> BillOfMaterials:
    return BillOfMaterials(377.5, 8, dram_gb, "lpddr4", 2, f"{_ORIN_DIE}; {_LPDDR}; {_LOWER_BOUND}")


def _xavier_bom(dram_gb: float) -> BillOfMaterials:
    return BillOfMaterials(
        350.0,
        12,
        dram_gb,
        "lpddr4",
        2,
        "Xavier die 350 mm2, 9 B transistors, TSMC 12 nm FFN (NVIDIA, Hot Chips 30, 2018; "
        f"ACT has no 12 nm row: its 14 nm row is used); {_LPDDR}; {_LOWER_BOUND}",
    )


_UNPUBLISHED = "logic die area not published by the vendor"
_EMBODIED: dict[str, dict[str, Any]] = {
    "jetson-orin-nano-8gb": {"bom": _orin_bom(8)},
    "jetson-orin-nano-8gb-super": {"bom": _orin_bom(8)},
    "jetson-orin-nx-16gb": {"bom": _orin_bom(16)},
    "jetson-agx-orin-64gb": {"bom": _orin_bom(64)},
    "jetson-xavier-nx": {"bom": _xavier_bom(8)},
    "jetson-agx-xavier": {"bom": _xavier_bom(32)},
    "jetson-nano-4gb": {
        "bom": BillOfMaterials(
            None, 20, 4, "lpddr4", 2, f"Tegra X1, TSMC 20 nm; {_UNPUBLISHED}; {_LOWER_BOUND}"
        )
    },
    "jetson-tx2": {
        "bom": BillOfMaterials(
            None, 16, 8, "lpddr4", 2, f"Tegra X2 (Parker), 16 nm; {_UNPUBLISHED}; {_LOWER_BOUND}"
        )
    },
    "raspberry-pi-5": {
        "bom": BillOfMaterials(
            None,
            16,
            8,
            "lpddr4",
            3,
            "Broadcom BCM2712, 16 nm (Raspberry Pi product brief); "
            f"{_UNPUBLISHED}; packages: BCM2712, RP1 I/O controller, one LPDDR4X package "
            "(a lower bound)",
        )
    },
}
PROFILES = {k: dataclasses.replace(p, **_EMBODIED.get(k, {})) for k, p in PROFILES.items()}


def profile_names() -> list[str]:
    return sorted(PROFILES)


def get_profile(name: str) -> DeviceProfile:
    """Profile by key; unknown names raise UnknownNameError with a did-you-mean."""
    try:
        return PROFILES[name]
    except KeyError:
        known = profile_names()
        raise UnknownNameError("device profile", name, known, did_you_mean(name, known)) from None


@dataclass(frozen=True)
class DetectedDevice:
    profile: DeviceProfile
    via: str  # "device-tree", "nvml", "cpuinfo" or "fallback"
    model: str | None = None  # the raw model / GPU name / CPU model string read
    cpu_model: str | None = None
    cpu_count: int | None = None
    gpu_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "title": self.profile.title,
            "via": self.via,
            "model": self.model,
            "cpu_model": self.cpu_model,
            "cpu_count": self.cpu_count,
            "gpu_name": self.gpu_name,
        }


def match_model(model: str) -> DeviceProfile | None:
    """The profile whose match alternative occurs in ``model``; the longest match wins.

    ``match`` holds alternatives; an alternative is "a+b" when all parts must occur (so the
    Orin Nano Super profile beats the plain Orin Nano one on a Super board).
    """
    low = model.lower()
    best, best_score = None, 0
    for p in PROFILES.values():
        for alt in p.match:
            parts = alt.split("+")
            if all(part in low for part in parts):
                score = sum(len(part) for part in parts)
                if score > best_score:
                    best, best_score = p, score
    return best


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _cpuinfo(path: Path) -> tuple[str | None, int | None]:
    text = _read_text(path)
    if not text:
        return None, None
    model, count = None, 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "processor":
            count += 1
        elif key in ("model name", "hardware", "cpu model") and model is None and value.strip():
            model = value.strip()
        elif key == "model" and model is None and not value.strip().isdigit() and value.strip():
            model = value.strip()  # Raspberry Pi kernels: "Model : Raspberry Pi 5 Model B"
    return model, count or None


def nvml_first_gpu(nvml: Any, read: Any) -> Any:
    """``read(nvml, handle)`` for the first GPU, between nvmlInit and nvmlShutdown; None when
    there is no NVML, no driver, no GPU, or the read fails (probes never block a caller)."""
    if nvml is None:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # no driver / no GPU: not an NVML machine
        return None
    try:
        if nvml.nvmlDeviceGetCount() < 1:
            return None
        return read(nvml, nvml.nvmlDeviceGetHandleByIndex(0))
    except Exception:
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _nvml_name(nvml: Any) -> str | None:
    def name(nv: Any, handle: Any) -> str:
        raw = nv.nvmlDeviceGetName(handle)
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    return nvml_first_gpu(nvml, name)


def _auto_nvml() -> Any:
    """pynvml through the NVML adapter; None when it is not installed (detection skips it)."""
    from .meters.nvml import load_pynvml

    return load_pynvml()


def detect_device(
    device_tree_root: str | Path = "/proc/device-tree",
    cpuinfo_path: str | Path = "/proc/cpuinfo",
    nvml: Any = "auto",
) -> DetectedDevice:
    """Which profile this machine matches, and from what.

    Order: the device-tree ``model`` (Jetson / Raspberry Pi), then NVML's first GPU name
    (``nvml`` is a pynvml-like module, ``"auto"`` to import pynvml if installed, ``None`` to
    skip), then ``/proc/cpuinfo`` (generic CPU). Never raises for a missing file.
    """
    cpu_model, cpu_count = _cpuinfo(Path(cpuinfo_path))
    dt_model = _read_text(Path(device_tree_root) / "model")
    if dt_model:
        prof = match_model(dt_model)
        if prof is not None:
            return DetectedDevice(prof, "device-tree", dt_model, cpu_model, cpu_count)
    if cpu_model:
        prof = match_model(cpu_model)  # Raspberry Pi kernels also name the board here
        if prof is not None and prof.kind == "sbc":
            return DetectedDevice(prof, "cpuinfo", cpu_model, cpu_model, cpu_count)
    gpu = _nvml_name(_auto_nvml() if nvml == "auto" else nvml)
    if gpu:
        prof = match_model(gpu) or PROFILES["nvidia-gpu"]
        return DetectedDevice(prof, "nvml", gpu, cpu_model, cpu_count, gpu_name=gpu)
    if cpu_model or cpu_count:
        return DetectedDevice(PROFILES["cpu"], "cpuinfo", cpu_model, cpu_model, cpu_count)
    return DetectedDevice(PROFILES["cpu"], "fallback", None, None, None)
