"""Device profiles and detection from fake /proc/device-tree, /proc/cpuinfo and NVML."""

from __future__ import annotations

import json

import pytest

from greenllm.devices import PROFILES, detect_device, get_profile, match_model
from greenllm.errors import HardwareControlError, UnknownNameError
from greenllm.testing import FakeGpu, FakePynvml

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model\t\t: 167
model name\t: Intel(R) Xeon(R) Processor
processor\t: 1
vendor_id\t: GenuineIntel
model\t\t: 167
model name\t: Intel(R) Xeon(R) Processor
"""

PI5_CPUINFO = (
    "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nCPU part\t: 0xd0b\n\n" for i in range(4))
    + "Revision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
)

ARM_CPUINFO = "".join(f"processor\t: {i}\nCPU implementer\t: 0x41\n\n" for i in range(6))


def _tree(tmp_path, model: str | None, cpuinfo: str):
    dt = tmp_path / "device-tree"
    dt.mkdir()
    if model is not None:
        (dt / "model").write_bytes(model.encode() + b"\x00")  # device-tree strings end in NUL
    ci = tmp_path / "cpuinfo"
    ci.write_text(cpuinfo)
    return dt, ci


@pytest.mark.parametrize(
    "model,profile",
    [
        ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano-8gb"),
        (
            "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
            "jetson-orin-nano-8gb-super",
        ),
        ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "jetson-orin-nx-16gb"),
        ("NVIDIA Jetson AGX Orin Developer Kit", "jetson-agx-orin-64gb"),
        ("NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx"),
        ("Jetson-AGX", "jetson-agx-xavier"),
        ("NVIDIA Jetson Nano Developer Kit", "jetson-nano-4gb"),
        ("quill", "jetson-tx2"),
        ("Raspberry Pi 5 Model B Rev 1.0", "raspberry-pi-5"),
    ],
)
def test_device_tree_detection(tmp_path, model, profile):
    dt, ci = _tree(tmp_path, model, ARM_CPUINFO)
    d = detect_device(device_tree_root=dt, cpuinfo_path=ci, nvml=None)
    assert d.profile.name == profile and d.via == "device-tree" and d.model == model
    assert d.cpu_count == 6


def test_pi5_from_cpuinfo_without_device_tree(tmp_path):
    dt, ci = _tree(tmp_path, None, PI5_CPUINFO)
    d = detect_device(device_tree_root=dt, cpuinfo_path=ci, nvml=None)
    assert d.profile.name == "raspberry-pi-5" and d.via == "cpuinfo" and d.cpu_count == 4


def test_x86_cpu_is_generic_cpu(tmp_path):
    dt, ci = _tree(tmp_path, None, X86_CPUINFO)
    d = detect_device(device_tree_root=dt, cpuinfo_path=ci, nvml=None)
    assert d.profile.name == "cpu" and d.cpu_model == "Intel(R) Xeon(R) Processor"
    assert d.cpu_count == 2


def test_nvml_gpu_name(tmp_path):
    dt, ci = _tree(tmp_path, None, X86_CPUINFO)
    nv = FakePynvml(gpus=[FakeGpu(name="NVIDIA H100 80GB HBM3")])
    d = detect_device(device_tree_root=dt, cpuinfo_path=ci, nvml=nv)
    assert d.profile.name == "nvidia-gpu" and d.via == "nvml"
    assert d.gpu_name == "NVIDIA H100 80GB HBM3"
    assert nv.initialised == 0  # detection shuts NVML down again


def test_nvml_without_driver_falls_back_to_cpu(tmp_path):
    dt, ci = _tree(tmp_path, None, X86_CPUINFO)
    d = detect_device(device_tree_root=dt, cpuinfo_path=ci, nvml=FakePynvml(init_error=9))
    assert d.profile.name == "cpu"


def test_nothing_readable_is_a_fallback(tmp_path):
    d = detect_device(device_tree_root=tmp_path / "no", cpuinfo_path=tmp_path / "no", nvml=None)
    assert d.profile.name == "cpu" and d.via == "fallback"


def test_unknown_profile_did_you_mean():
    with pytest.raises(UnknownNameError, match="did you mean 'jetson-xavier-nx'"):
        get_profile("jetson-xavier-n")
    assert match_model("Intel Xeon") is None


def test_profiles_are_complete_and_serialisable():
    required = {
        "jetson-orin-nano-8gb",
        "jetson-orin-nx-16gb",
        "jetson-agx-orin-64gb",
        "jetson-xavier-nx",
        "jetson-agx-xavier",
        "jetson-nano-4gb",
        "jetson-tx2",
        "raspberry-pi-5",
        "nvidia-gpu",
        "cpu",
    }
    assert required <= set(PROFILES)
    for p in PROFILES.values():
        assert p.source, p.name
        ids = [m.id for m in p.power_modes]
        assert len(ids) == len(set(ids)), p.name
        if p.kind == "jetson":
            assert p.power_modes and p.memory_bandwidth_bytes_per_s and p.gpu_cores
            assert p.default_power_mode in ids + [None]
        json.dumps(p.to_dict())


def test_power_mode_lookup():
    p = get_profile("jetson-agx-orin-64gb")
    assert p.power_mode(2).name == "30W" and p.power_mode("maxn").id == 0
    assert p.power_mode("3").budget_w == 50.0
    with pytest.raises(HardwareControlError, match="0=MAXN, 1=15W, 2=30W, 3=50W"):
        p.power_mode("60W")
