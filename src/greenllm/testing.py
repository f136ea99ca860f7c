"""Test helpers shipped with greenllm so users can test their own code too.

``tiny_causal_lm()`` and ``tiny_tokenizer()`` build a seeded, randomly initialised Llama-style
model and a byte-level tokenizer in code (no download). Fakes of hardware live here too, at
the lowest boundary only: a fake pynvml module object and fake sysfs trees (see below).
"""

from __future__ import annotations

from typing import Any


def tiny_tokenizer():
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + <s>, </s>, <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(sorted(byte_vocab))}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


BPE_TEXT = (
    "The quick brown fox jumps over the lazy dog. Energy per token is measured in joules.",
    "Compression trades accuracy for memory, latency and energy; 1234 tokens per second.",
)


def tiny_bpe_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer *with* merges, trained here on two sentences (deterministic):
    exporting to GGUF needs merges (llama.cpp's BPE vocabulary), which ``tiny_tokenizer`` has
    none of. Pair it with ``tiny_causal_lm(vocab_size=320)``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(list(BPE_TEXT) * 10, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def tiny_causal_lm(
    seed: int = 0,
    *,
    vocab_size: int | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
) -> Any:
    """A seeded random LlamaForCausalLM small enough for unit tests (~0.1 M params)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok_vocab = 259
    cfg = LlamaConfig(
        vocab_size=vocab_size or tok_vocab,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
        tie_word_embeddings=tie_word_embeddings,
    )
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.eval()
    return model


def tiny_model_and_tokenizer(seed: int = 0, **kwargs):
    return tiny_causal_lm(seed, **kwargs), tiny_tokenizer()


# ---------------------------------------------------------------------------------------
# Hardware fakes at the lowest boundary: a pynvml module object and sysfs trees.
# Everything above them (meters, measure, power caps) runs for real in tests.
# ---------------------------------------------------------------------------------------
import types as _types  # noqa: E402
from dataclasses import dataclass as _dataclass  # noqa: E402
from dataclasses import field as _field  # noqa: E402
from pathlib import Path as _Path  # noqa: E402


class _FakeNVMLError(Exception):
    """Like pynvml.NVMLError: ``.value`` is the NVML return code, str() the message."""

    _MESSAGES = {
        1: "Uninitialized",
        2: "Invalid Argument",
        3: "Not Supported",
        4: "Insufficient Permissions",
        6: "Not Found",
        9: "Driver Not Loaded",
        12: "NVML Shared Library Not Found",
        15: "GPU is lost",
        999: "Unknown Error",
    }

    def __init__(self, value: int):
        self.value = value
        super().__init__(value)

    def __str__(self) -> str:
        return self._MESSAGES.get(self.value, f"NVML error {self.value}")


@_dataclass
class FakeGpu:
    """One fake GPU. Units as NVML: mJ, mW, bytes, percent."""

    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    energy_mj: int = 0
    power_mw: int = 60_000
    energy_supported: bool = True  # False: pre-Volta, power polling only
    power_limit_mw: int = 400_000
    min_limit_mw: int = 100_000
    max_limit_mw: int = 400_000
    default_limit_mw: int = 400_000
    enforced_limit_mw: int | None = None  # None: same as power_limit_mw
    can_set_limit: bool = True  # False: SetPowerManagementLimit -> NO_PERMISSION
    limit_supported: bool = True  # False: limit calls -> NOT_SUPPORTED
    util_gpu_pct: int = 0
    util_memory_pct: int = 0
    memory_total_bytes: int = 40 * 1024**3
    memory_used_bytes: int = 0
    temperature_c: int = 40
    graphics_clock_mhz: int = 1410
    memory_clock_mhz: int = 1215
    clock_event_reasons: int = 0  # nvmlClocksEventReason* bit mask (0x40: HW thermal)
    lost: bool = False  # True: every call -> GPU_IS_LOST
    set_limit_calls: list = _field(default_factory=list)
    # clocks (MHz): supported memory clocks, graphics clocks per memory clock; the locked
    # ranges (None = driver-managed, the default) as nvmlDeviceSet*LockedClocks leave them
    memory_clocks_mhz: tuple = (5001, 810, 405)
    graphics_clocks_mhz: tuple = (1980, 1710, 1410, 1110, 810, 510, 210)
    clocks_supported: bool = True  # False: locked-clock calls -> NOT_SUPPORTED (pre-Volta)
    can_set_clocks: bool = True  # False: -> NO_PERMISSION
    locked_gpu_mhz: tuple | None = None
    locked_mem_mhz: tuple | None = None
    clock_calls: list = _field(default_factory=list)


class FakePynvml:
    """A module-like stand-in for ``pynvml`` with exactly the calls greenllm makes.

    ``FakePynvml(gpus=[FakeGpu(...), ...])``; ``init_error=12`` makes nvmlInit fail like a
    machine without the driver. ``advance(seconds)`` adds power x time to every energy
    counter. ``calls`` records the function names called.
    """

    NVML_SUCCESS = 0
    NVML_ERROR_UNINITIALIZED = 1
    NVML_ERROR_INVALID_ARGUMENT = 2
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_ERROR_UNKNOWN = 999
    NVML_TEMPERATURE_GPU = 0
    NVMLError = _FakeNVMLError

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        init_error: int | None = None,
        driver_version: str = "550.54.15",
    ):
        self.gpus = list(gpus) if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.driver_version = driver_version
        self.initialised = 0
        self.calls: list[str] = []

    # -- helpers ----------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        for g in self.gpus:
            g.energy_mj += int(round(g.power_mw * seconds))

    def _gpu(self, fn: str, handle: FakeGpu) -> FakeGpu:
        self.calls.append(fn)
        if not self.initialised:
            raise self.NVMLError(self.NVML_ERROR_UNINITIALIZED)
        if handle not in self.gpus:
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        if handle.lost:
            raise self.NVMLError(self.NVML_ERROR_GPU_IS_LOST)
        return handle

    # -- library ----------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")
        if not self.initialised:
            raise self.NVMLError(self.NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self.calls.append("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self.calls.append("nvmlDeviceGetCount")
        if not self.initialised:
            raise self.NVMLError(self.NVML_ERROR_UNINITIALIZED)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self.calls.append("nvmlDeviceGetHandleByIndex")
        if not self.initialised:
            raise self.NVMLError(self.NVML_ERROR_UNINITIALIZED)
        if not 0 <= index < len(self.gpus):
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeGpu:
        self.calls.append("nvmlDeviceGetHandleByUUID")
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for g in self.gpus:
            if g.uuid == uuid:
                return g
        raise self.NVMLError(self.NVML_ERROR_NOT_FOUND)

    # -- device queries ---------------------------------------------------------------
    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return self._gpu("nvmlDeviceGetName", h).name

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return self._gpu("nvmlDeviceGetUUID", h).uuid

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        g = self._gpu("nvmlDeviceGetTotalEnergyConsumption", h)
        if not g.energy_supported:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return g.energy_mj

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", h).power_mw

    def _limit(self, fn: str, h: FakeGpu) -> FakeGpu:
        g = self._gpu(fn, h)
        if not g.limit_supported:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return g

    def nvmlDeviceGetPowerManagementLimit(self, h: FakeGpu) -> int:
        return self._limit("nvmlDeviceGetPowerManagementLimit", h).power_limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: FakeGpu) -> tuple[int, int]:
        g = self._limit("nvmlDeviceGetPowerManagementLimitConstraints", h)
        return g.min_limit_mw, g.max_limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: FakeGpu) -> int:
        return self._limit("nvmlDeviceGetPowerManagementDefaultLimit", h).default_limit_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        g = self._limit("nvmlDeviceGetEnforcedPowerLimit", h)
        return g.enforced_limit_mw if g.enforced_limit_mw is not None else g.power_limit_mw

    def nvmlDeviceSetPowerManagementLimit(self, h: FakeGpu, limit_mw: int) -> None:
        g = self._limit("nvmlDeviceSetPowerManagementLimit", h)
        if not g.can_set_limit:
            raise self.NVMLError(self.NVML_ERROR_NO_PERMISSION)
        if not g.min_limit_mw <= limit_mw <= g.max_limit_mw:
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        g.set_limit_calls.append(int(limit_mw))
        g.power_limit_mw = int(limit_mw)

    def _clocks(self, fn: str, h: FakeGpu, setting: bool = False) -> FakeGpu:
        g = self._gpu(fn, h)
        if not g.clocks_supported:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        if setting and not g.can_set_clocks:
            raise self.NVMLError(self.NVML_ERROR_NO_PERMISSION)
        return g

    def nvmlDeviceGetSupportedMemoryClocks(self, h: FakeGpu) -> list[int]:
        return list(self._clocks("nvmlDeviceGetSupportedMemoryClocks", h).memory_clocks_mhz)

    def nvmlDeviceGetSupportedGraphicsClocks(self, h: FakeGpu, memory_mhz: int) -> list[int]:
        g = self._clocks("nvmlDeviceGetSupportedGraphicsClocks", h)
        if memory_mhz not in g.memory_clocks_mhz:
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        return list(g.graphics_clocks_mhz)

    def nvmlDeviceSetGpuLockedClocks(self, h: FakeGpu, min_mhz: int, max_mhz: int) -> None:
        g = self._clocks("nvmlDeviceSetGpuLockedClocks", h, setting=True)
        if min_mhz > max_mhz:
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        g.locked_gpu_mhz = (int(min_mhz), int(max_mhz))
        g.clock_calls.append(("gpu", int(min_mhz), int(max_mhz)))

    def nvmlDeviceResetGpuLockedClocks(self, h: FakeGpu) -> None:
        g = self._clocks("nvmlDeviceResetGpuLockedClocks", h, setting=True)
        g.locked_gpu_mhz = None
        g.clock_calls.append(("gpu-reset",))

    def nvmlDeviceSetMemoryLockedClocks(self, h: FakeGpu, min_mhz: int, max_mhz: int) -> None:
        g = self._clocks("nvmlDeviceSetMemoryLockedClocks", h, setting=True)
        if min_mhz > max_mhz:
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        g.locked_mem_mhz = (int(min_mhz), int(max_mhz))
        g.clock_calls.append(("mem", int(min_mhz), int(max_mhz)))

    def nvmlDeviceResetMemoryLockedClocks(self, h: FakeGpu) -> None:
        g = self._clocks("nvmlDeviceResetMemoryLockedClocks", h, setting=True)
        g.locked_mem_mhz = None
        g.clock_calls.append(("mem-reset",))

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu):
        g = self._gpu("nvmlDeviceGetUtilizationRates", h)
        return _types.SimpleNamespace(gpu=g.util_gpu_pct, memory=g.util_memory_pct)

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu):
        g = self._gpu("nvmlDeviceGetMemoryInfo", h)
        return _types.SimpleNamespace(
            total=g.memory_total_bytes,
            used=g.memory_used_bytes,
            free=g.memory_total_bytes - g.memory_used_bytes,
        )

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int = 0) -> int:
        return self._gpu("nvmlDeviceGetTemperature", h).temperature_c

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, clock_type: int) -> int:
        g = self._gpu("nvmlDeviceGetClockInfo", h)
        return g.graphics_clock_mhz if clock_type == 0 else g.memory_clock_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeGpu) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", h).clock_event_reasons


def make_rapl_tree(
    tmp_path,
    packages: int = 1,
    subzones: tuple[str, ...] = ("core", "dram"),
    energy_uj: int = 0,
    max_energy_range_uj: int = 262_143_328_850,
    psys: bool = False,
    readable: bool = True,
) -> _Path:
    """A fake ``/sys/class/powercap`` under ``tmp_path``; returns its root.

    Zone ``intel-rapl:N`` is ``package-N`` with sub-zones ``intel-rapl:N:M`` named after
    ``subzones``. ``readable=False`` makes every energy_uj mode 000 (as on Linux >= 5.10
    for non-root users). Change a counter with ``set_rapl_energy``.
    """
    root = _Path(tmp_path) / "powercap"
    root.mkdir(parents=True, exist_ok=True)

    def zone(path: _Path, name: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "name").write_text(name + "\n")
        (path / "energy_uj").write_text(f"{energy_uj}\n")
        (path / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")
        (path / "enabled").write_text("1\n")
        if not readable:
            (path / "energy_uj").chmod(0)

    for p in range(packages):
        top = root / f"intel-rapl:{p}"
        zone(top, f"package-{p}")
        for m, sub in enumerate(subzones):
            zone(top / f"intel-rapl:{p}:{m}", sub)
    if psys:
        zone(root / f"intel-rapl:{packages}", "psys")
    return root


def set_rapl_energy(root, zone: str, energy_uj: int) -> None:
    """Write a counter: ``zone`` is a folder path relative to root, e.g. "intel-rapl:0" or
    "intel-rapl:0/intel-rapl:0:1"."""
    (_Path(root) / zone / "energy_uj").write_text(f"{int(energy_uj)}\n")


def make_ina3221_tree(
    tmp_path, layout: str = "hwmon", rails: dict[str, tuple[float, float]] | None = None
) -> _Path:
    """A fake INA3221 driver folder; returns the root to pass to JetsonRailsMeter(root=...).

    ``rails`` maps rail name -> (millivolts, milliamps); three channels per chip, chips at
    I2C addresses 1-0040, 1-0041, ... ``layout="hwmon"`` writes in{K}_label / in{K}_input /
    curr{K}_input (JetPack 5+); ``layout="legacy"`` writes the ina3221x iio layout
    rail_name_{K} / in_voltage{K}_input / in_current{K}_input / in_power{K}_input (mW).
    Change a rail with ``set_ina3221_rail``.
    """
    if layout not in ("hwmon", "legacy"):
        raise ValueError("layout must be 'hwmon' or 'legacy'")
    rails = (
        rails
        if rails is not None
        else {
            "VDD_IN": (5000.0, 1000.0),
            "VDD_CPU_GPU_CV": (5000.0, 300.0),
            "VDD_SOC": (5000.0, 250.0),
        }
    )
    root = _Path(tmp_path) / ("ina3221" if layout == "hwmon" else "ina3221x")
    items = list(rails.items())
    for chip in range((len(items) + 2) // 3):
        dev = root / f"1-00{40 + chip:02x}"
        folder = dev / "hwmon" / f"hwmon{chip + 1}" if layout == "hwmon" else dev / "iio:device0"
        folder.mkdir(parents=True, exist_ok=True)
        for k, (name, (mv, ma)) in enumerate(items[chip * 3 : chip * 3 + 3]):
            ch = k + 1 if layout == "hwmon" else k
            _write_rail(folder, layout, ch, name, mv, ma)
    return root


def _write_rail(folder: _Path, layout: str, ch: int, name: str, mv: float, ma: float) -> None:
    if layout == "hwmon":
        (folder / f"in{ch}_label").write_text(name + "\n")
        (folder / f"in{ch}_input").write_text(f"{int(round(mv))}\n")
        (folder / f"curr{ch}_input").write_text(f"{int(round(ma))}\n")
    else:
        (folder / f"rail_name_{ch}").write_text(name + "\n")
        (folder / f"in_voltage{ch}_input").write_text(f"{int(round(mv))}\n")
        (folder / f"in_current{ch}_input").write_text(f"{int(round(ma))}\n")
        (folder / f"in_power{ch}_input").write_text(f"{int(round(mv * ma / 1000.0))}\n")


def set_ina3221_rail(root, name: str, mv: float, ma: float) -> None:
    """Rewrite the readings of the rail called ``name`` in a make_ina3221_tree() tree."""
    root = _Path(root)
    for label in list(root.glob("*/hwmon/hwmon*/in*_label")) + list(
        root.glob("*/iio:device*/rail_name_*")
    ):
        if label.read_text().strip() == name:
            if label.name.startswith("in"):
                ch = int(label.name[2:].split("_")[0])
                _write_rail(label.parent, "hwmon", ch, name, mv, ma)
            else:
                _write_rail(label.parent, "legacy", int(label.name.rsplit("_", 1)[1]), name, mv, ma)
            return
    raise KeyError(f"no rail {name!r} under {root}")


class FakeClock:
    """An injectable clock (seconds) that only moves when told: ``clock.advance(0.1)``."""

    def __init__(self, t: float = 1000.0):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def sleep(self, seconds: float) -> None:
        """Use as measure(sleep=clock.sleep): 'sleeping' advances the clock, instantly."""
        self.t += seconds


class RecordedProcess:
    """A Popen-like object whose stdout yields recorded lines, then stays open (like a
    running ``tegrastats``) until ``terminate()``; ``exit_after=True`` closes it at the end."""

    def __init__(self, lines, exit_after: bool = False):
        import threading

        self._lines = [ln if ln.endswith("\n") else ln + "\n" for ln in lines]
        self._exit_after = exit_after
        self._stopped = threading.Event()
        self.argv: list[str] | None = None
        self.returncode: int | None = None
        self.stdout = self._iter()

    def _iter(self):
        yield from self._lines
        if not self._exit_after:
            self._stopped.wait()

    def terminate(self) -> None:
        self._stopped.set()
        self.returncode = -15

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode or 0


def recorded_runner(lines, exit_after: bool = False):
    """A ``runner(argv)`` for TegrastatsMeter that replays recorded lines; ``runner.argv``
    holds the command line it was asked to run."""

    def runner(argv):
        proc = RecordedProcess(lines, exit_after)
        proc.argv = list(argv)
        runner.argv = list(argv)
        runner.proc = proc
        return proc

    runner.argv = None
    return runner


def default_signal_dispositions() -> None:
    """``preexec_fn`` for a test's child process: SIGINT and SIGTERM back to their defaults.

    A shell that starts a job in the background (``cmd &`` without job control, ``nohup``)
    makes it ignore SIGINT, and children inherit that; a test that sends SIGINT to a child
    must not depend on how the test run itself was started."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
