"""Adapter over jetson-stats (``jtop``) where it is installed and its service runs.

jtop reports each INA3221 rail in mW under ``jetson.power["rail"][name]["power"]``; the
board total follows the same input-rail rule as tegrastats (greenllm.meters.rails).
The jtop module (or a factory returning a started jtop-like object) is injectable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import MeterError, MeterUnavailable, MissingDependencyError, require
from ..units import mw_to_w
from .base import POWER, BaseMeter, Clock, DomainInfo, Reading
from .rails import NOT_CONNECTED, total_rails

_INSTALL = "pip install 'greenllm[jetson]'"
JTOP_SOCKET = "/run/jtop.sock"  # jtop.service's socket (jtop/service.py JTOP_PIPE)


class JtopMeter(BaseMeter):
    name = "jtop"
    update_hz = 1.0  # jtop.service publishes about once a second (window floor: 20 s)

    def __init__(
        self,
        factory: Callable[[], Any] | None = None,
        clock: Clock | None = None,
        socket_path: str = JTOP_SOCKET,
    ):
        super().__init__(clock)
        self._factory = factory
        self._socket = socket_path
        self._jetson = None

    def _connect(self):
        if self._jetson is not None:
            return self._jetson
        factory = self._factory
        if factory is None:
            try:
                mod = require("jtop", "jetson", "Jetson power rails through jtop")
            except MissingDependencyError as exc:
                raise MeterUnavailable(f"jetson-stats is not installed; run: {_INSTALL}") from exc
            if not os.path.exists(self._socket):
                raise MeterUnavailable(
                    f"jtop service not running (no {self._socket}); on a "
                    "Jetson run `sudo systemctl restart jtop.service`"
                )
            factory = mod.jtop
        try:
            j = factory()
            j.start()
        except Exception as exc:  # jtop raises JtopException (and others) when no service
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise MeterUnavailable(
                f"jtop service not reachable ({msg}); on a Jetson run "
                "`sudo systemctl restart jtop.service`"
            ) from exc
        self._jetson = j
        return j

    def _rails_mw(self) -> dict[str, float]:
        j = self._connect()
        try:
            rails = (j.power or {}).get("rail", {})
        except Exception as exc:  # noqa: BLE001 - lost connection
            raise MeterError(f"jtop read failed: {exc}") from exc
        return {
            n: float(v.get("power", 0.0))
            for n, v in rails.items()
            if n not in NOT_CONNECTED and v.get("online", True)
        }

    def available(self) -> tuple[bool, str]:
        try:
            rails = self._rails_mw()
        except MeterError as exc:
            return False, str(exc)
        if not rails:
            return False, "jtop reports no power rails"
        return True, f"jtop: {len(rails)} rails"

    def domains(self) -> list[DomainInfo]:
        names = list(self._rails_mw())
        summed = set(total_rails(names))
        return [DomainInfo(n, POWER, in_total=n in summed) for n in names]

    def read(self) -> Reading:
        return Reading(self.clock(), power_w={n: mw_to_w(v) for n, v in self._rails_mw().items()})

    def close(self) -> None:
        if self._jetson is not None:
            try:
                self._jetson.close()
            except Exception:  # noqa: BLE001
                pass
            self._jetson = None
