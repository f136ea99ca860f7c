"""Fakes at the lowest boundary of power control: the nvpmodel / jetson_clocks commands.

``FakeJetsonTools`` is an in-process command runner; ``fake_nvpmodel_script`` writes real
executables that keep their state in a JSON file, for tests that cross process boundaries
(signals, SIGKILL + ``greenllm control restore``). Both print what L4T's tools print:
``nvpmodel -q`` -> ``NV Fan Mode:quiet`` / ``NV Power Mode: <NAME>`` / ``<id>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ORIN_NANO_MODES = {0: "15W", 1: "7W"}


class FakeJetsonTools:
    def __init__(self, mode: int = 0, modes: dict[int, str] | None = None, root: bool = True):
        self.mode = mode
        self.modes = dict(modes or ORIN_NANO_MODES)
        self.root = root
        self.calls: list[list[str]] = []
        self.clocks_pinned = False
        self.stored: str | None = None

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        tool, args = Path(argv[0]).name, argv[1:]
        if tool == "nvpmodel":
            if args == ["-q"]:
                return (
                    0,
                    (f"NV Fan Mode:quiet\nNV Power Mode: {self.modes[self.mode]}\n{self.mode}\n"),
                    "",
                )
            if args[:1] == ["-m"]:
                if not self.root:
                    return 1, "", "NVPM ERROR: failed to open /sys/devices/...: Permission denied\n"
                new = int(args[1])
                if new not in self.modes:
                    return 1, "", f"NVPM ERROR: Invalid power mode ID: {new}\n"
                self.mode = new
                return 0, f"NVPM WARN: power mode set to {self.modes[new]}\n", ""
        if tool == "jetson_clocks":
            if not self.root:
                return 1, "", "Error: jetson_clocks must be run as root\n"
            if args[:1] == ["--store"]:
                Path(args[1]).write_text(f"stored clocks, pinned={self.clocks_pinned}\n")
                self.stored = args[1]
                return 0, "", ""
            if args[:1] == ["--restore"]:
                self.clocks_pinned = False
                return 0, "", ""
            if not args:
                self.clocks_pinned = True
                return 0, "", ""
        return 127, "", f"unexpected command {argv}"


@pytest.fixture(autouse=True)
def control_dir(tmp_path, monkeypatch):
    """Every control test gets its own control directory (journals + device locks)."""
    d = tmp_path / "control"
    monkeypatch.setenv("GREENLLM_CONTROL_DIR", str(d))
    monkeypatch.delenv("GREENLLM_CONTROL_WAIT_S", raising=False)
    return d


@pytest.fixture
def fake_tools():
    return FakeJetsonTools()


_SCRIPT = r"""#!{python}
import json, sys
from pathlib import Path
state_path = Path({state!r})
state = json.loads(state_path.read_text())
modes = {{int(k): v for k, v in state["modes"].items()}}
args = sys.argv[1:]
if args == ["-q"]:
    print("NV Fan Mode:quiet")
    print("NV Power Mode: " + modes[state["mode"]])
    print(state["mode"])
    sys.exit(0)
if args[:1] == ["-m"]:
    if not state.get("root", True):
        print("NVPM ERROR: failed to open /sys/devices/...: Permission denied", file=sys.stderr)
        sys.exit(1)
    state["mode"] = int(args[1])
    state["history"].append(int(args[1]))
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(state_path)
    sys.exit(0)
print("usage: nvpmodel [-q] [-m id]", file=sys.stderr)
sys.exit(2)
"""


def fake_nvpmodel_script(folder: Path, mode: int = 0, root: bool = True) -> tuple[Path, Path]:
    """An executable ``nvpmodel`` under ``folder`` with its state in ``state.json``."""
    state = folder / "state.json"
    state.write_text(
        json.dumps({"mode": mode, "modes": ORIN_NANO_MODES, "root": root, "history": []})
    )
    exe = folder / "nvpmodel"
    exe.write_text(_SCRIPT.format(python=sys.executable, state=str(state)))
    exe.chmod(0o755)
    return exe, state


def read_mode(state: Path) -> int:
    return json.loads(state.read_text())["mode"]


@pytest.fixture
def nvpmodel_script():
    return fake_nvpmodel_script


@pytest.fixture
def mode_of():
    return read_mode


_PYNVML = r'''"""A file-backed FakePynvml: the power limit lives in a JSON file, so the holder,
a second process and `greenllm control restore` all see one device (tests/control)."""
import json
import os
from pathlib import Path

from greenllm.testing import FakeGpu, FakePynvml

_STATE = Path({state!r})


def _load():
    return json.loads(_STATE.read_text())


class _FilePynvml(FakePynvml):
    def nvmlDeviceGetPowerManagementLimit(self, h):
        self._limit("nvmlDeviceGetPowerManagementLimit", h)
        return _load()["limit_mw"]

    def nvmlDeviceSetPowerManagementLimit(self, h, limit_mw):
        super().nvmlDeviceSetPowerManagementLimit(h, limit_mw)  # range / permission checks
        st = _load()
        st["limit_mw"] = int(limit_mw)
        st["history"].append([os.getpid(), int(limit_mw)])
        tmp = _STATE.with_name(f".{{_STATE.name}}.{{os.getpid()}}")
        tmp.write_text(json.dumps(st))
        tmp.replace(_STATE)


_impl = _FilePynvml(gpus=[FakeGpu(uuid={uuid!r}, power_limit_mw={limit}, min_limit_mw=100_000,
                                  max_limit_mw=350_000)])


def __getattr__(name):
    return getattr(_impl, name)
'''

FAKE_UUID = "GPU-5e1f0c2a-0000-4000-8000-00000000beef"


def fake_pynvml_module(folder: Path, limit_mw: int = 300_000) -> tuple[Path, Path]:
    """``folder/pynvml.py`` (put ``folder`` first on PYTHONPATH) and its ``nvml-state.json``."""
    state = folder / "nvml-state.json"
    state.write_text(json.dumps({"limit_mw": limit_mw, "history": []}))
    (folder / "pynvml.py").write_text(
        _PYNVML.format(state=str(state), uuid=FAKE_UUID, limit=limit_mw)
    )
    return folder / "pynvml.py", state


def nvml_limit(state: Path) -> int:
    return json.loads(state.read_text())["limit_mw"]


@pytest.fixture
def children():
    """Child processes of a test; any still running at teardown are killed (no orphans)."""
    import subprocess

    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


class _FakeNvmlDevice:
    uuid = FAKE_UUID
    make = staticmethod(fake_pynvml_module)
    limit = staticmethod(nvml_limit)


@pytest.fixture
def file_nvml():
    """The file-backed NVML fake: ``.make(folder)``, ``.limit(state)``, ``.uuid``."""
    return _FakeNvmlDevice
