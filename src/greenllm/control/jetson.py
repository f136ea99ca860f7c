"""Jetson power mode (``nvpmodel``) and clocks (``jetson_clocks``) as a PowerCap.

The lowest boundary is the command: ``runner(argv) -> (returncode, stdout, stderr)``, by
default ``subprocess.run``. ``nvpmodel -q`` prints the current mode as two lines (after an
optional ``NV Fan Mode:...`` line)::

    NV Power Mode: MODE_15W_6CORE
    2

``nvpmodel -m <id>`` selects a mode. With ``max_clocks=True`` the cap also runs
``jetson_clocks --store <file>`` and ``jetson_clocks`` (clocks pinned to the mode's maximum)
after selecting the mode, and ``jetson_clocks --restore <file>`` when putting it back. Both
tools need root. Program paths and the clocks file come from the constructor (default: the
names on PATH, and a file in the control directory), never from a journal; the board's
identity (``device_id()``: its serial number, else the machine id) keys the journal and lock.
The requested mode is checked against the board's device profile first, so an unknown mode
lists the board's modes and nothing is changed.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..devices import DeviceProfile, detect_device, get_profile
from ..errors import HardwareControlError

Runner = Callable[[list[str]], "tuple[int, str, str]"]

_MODE_RE = re.compile(r"NV Power Mode:\s*(\S+)")


def subprocess_runner(argv: list[str]) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise HardwareControlError(
            f"{argv[0]!r} not found: Jetson power modes need an NVIDIA Jetson board with L4T's "
            "nvpmodel and jetson_clocks on PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise HardwareControlError(f"{' '.join(argv)!r} did not finish in 120 s") from None
    return proc.returncode, proc.stdout, proc.stderr


def parse_nvpmodel_query(text: str) -> tuple[int, str | None]:
    """(mode id, mode name) from ``nvpmodel -q`` output."""
    name = None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        m = _MODE_RE.search(line)
        if m:
            name = m.group(1)
            for nxt in lines[i + 1 :]:
                if re.fullmatch(r"\d+", nxt):
                    return int(nxt), name
                if not nxt.startswith("NVPM"):
                    break
    raise HardwareControlError(
        "cannot read the power mode from `nvpmodel -q` (expected 'NV Power Mode: NAME' and the "
        f"mode id on the next line; got {text.strip()[:120]!r})"
    )


def _permission_hint(text: str) -> bool:
    low = text.lower()
    return any(s in low for s in ("permission", "not permitted", "root", "sudo"))


class JetsonPowerMode:
    """``PowerCap`` for the nvpmodel mode id of a Jetson board."""

    name = "jetson"
    JOURNAL_KEYS = ("profile", "max_clocks")

    def __init__(
        self,
        profile: DeviceProfile | str | None = None,
        runner: Runner | None = None,
        nvpmodel: str = "nvpmodel",
        jetson_clocks: str = "jetson_clocks",
        max_clocks: bool = False,
        clocks_file: str | None = None,
        board_id: str | None = None,
    ):
        if profile is None:
            detected = detect_device()
            profile = detected.profile
            if not profile.power_modes:
                raise HardwareControlError(
                    f"power modes need an NVIDIA Jetson board; this machine was detected as "
                    f"{profile.title} (via {detected.via}), which has no nvpmodel modes"
                )
        elif isinstance(profile, str):
            profile = get_profile(profile)
        if not profile.power_modes:
            raise HardwareControlError(
                f"device profile {profile.name!r} has no nvpmodel power modes; "
                "pass a Jetson profile (greenllm devices lists them)"
            )
        self.profile = profile
        self.runner = runner or subprocess_runner
        self.nvpmodel, self.jetson_clocks = nvpmodel, jetson_clocks
        self.max_clocks = bool(max_clocks)
        self.board_id = board_id or board_identity()
        self._clocks_file = clocks_file

    @property
    def clocks_file(self) -> str:
        if self._clocks_file is None:
            from .journal import control_dir, device_key

            self._clocks_file = str(
                control_dir() / f"{device_key('jetson-clocks', self.board_id)}.conf"
            )
        return self._clocks_file

    def _run(self, argv: list[str], what: str) -> str:
        rc, out, err = self.runner(argv)
        if rc != 0:
            text = (err or "") + (out or "")
            last = text.strip().splitlines()[-1] if text.strip() else f"exit status {rc}"
            if _permission_hint(text) or (hasattr(os, "geteuid") and os.geteuid() != 0):
                raise HardwareControlError(
                    f"{what} needs root ({last}): run with sudo, e.g. `sudo {' '.join(argv)}`"
                )
            raise HardwareControlError(f"{what} failed: `{' '.join(argv)}`: {last}")
        return out or ""

    # -- PowerCap -------------------------------------------------------------------------
    def get(self) -> int:
        mode_id, _ = parse_nvpmodel_query(
            self._run([self.nvpmodel, "-q"], "reading the power mode")
        )
        return mode_id

    def allowed(self) -> list[dict[str, Any]]:
        return [
            {"id": m.id, "name": m.name, "budget_w": m.budget_w} for m in self.profile.power_modes
        ]

    def check(self, value: Any) -> int:
        return self.profile.power_mode(value).id

    def set(self, value: Any) -> None:
        mode = self.check(value)
        self._run([self.nvpmodel, "-m", str(mode)], f"setting power mode {mode}")
        if self.max_clocks:
            if not Path(self.clocks_file).exists():
                self._run(
                    [self.jetson_clocks, "--store", self.clocks_file], "saving the clock settings"
                )
            self._run([self.jetson_clocks], "pinning clocks to the maximum")

    def restore(self, original: Any) -> None:
        """Put the mode back and, if clocks were pinned, the stored clocks too."""
        mode = self.check(original)
        self._run([self.nvpmodel, "-m", str(mode)], f"restoring power mode {mode}")
        if self.max_clocks and Path(self.clocks_file).exists():
            self._run(
                [self.jetson_clocks, "--restore", self.clocks_file], "restoring the clock settings"
            )
            Path(self.clocks_file).unlink(missing_ok=True)

    def describe(self) -> str:
        modes = ", ".join(f"{m.id}={m.name}" for m in self.profile.power_modes)
        return f"{self.profile.title} nvpmodel mode (modes: {modes})" + (
            ", clocks pinned with jetson_clocks" if self.max_clocks else ""
        )

    def device_id(self) -> str:
        return self.board_id

    def journal_params(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "max_clocks": self.max_clocks}

    def adapter_config(self) -> dict[str, Any]:
        """Constructor arguments that never come from a journal."""
        return {
            "runner": self.runner,
            "nvpmodel": self.nvpmodel,
            "jetson_clocks": self.jetson_clocks,
            "clocks_file": self._clocks_file,
            "board_id": self.board_id,
        }

    @classmethod
    def from_journal(cls, params: dict[str, Any], **config: Any) -> JetsonPowerMode:
        """The board's cap from journal data (profile name, max_clocks) only; programs and
        files from ``config`` / the defaults."""
        profile = params.get("profile")
        if not isinstance(profile, str):
            raise HardwareControlError("the jetson journal names no device profile")
        return cls(profile=profile, max_clocks=params.get("max_clocks") is True, **config)


_BOARD_ID_FILES = (
    "/proc/device-tree/serial-number",
    "/sys/firmware/devicetree/base/serial-number",
    "/etc/machine-id",
)


def board_identity(files: tuple[str, ...] = _BOARD_ID_FILES) -> str:
    """The board's serial number (device tree), else the machine id, else the host name."""
    import socket

    for f in files:
        try:
            text = Path(f).read_bytes()[:128].decode("ascii", "replace").strip("\x00 \n\t")
        except OSError:
            continue
        if text:
            return ("serial-" if "serial" in f else "machine-") + text
    return "host-" + socket.gethostname()
