"""Hostile-input corpus for the CLI (issue 17): every case is a real ``python -m greenllm``
process that must end with exit code 2, exactly one line on stderr, no traceback, within a
time bound. Cases are (id, argv, files, expected fragment); ``{d}`` in argv and file names is
the case's temporary folder, ``{tiny}`` a saved tiny model (built once)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT_S = 60


def _bomb() -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


BOMB = _bomb()
assert len(BOMB.encode()) < 600


def _recipe(
    extra: str = "",
    name: str = "ok",
    variants: str = "{}",
    model: str = "{tiny}",
    calibration: str = "calibration: builtin:wiki-sample\n",
) -> str:
    return (
        f"schema_version: 1\nname: {name}\nmodel: {{id: '{model}'}}\n{calibration}"
        f"variants: {variants}\nworkload: {{prompts: builtin:prompts, max_new_tokens: 2, "
        f"repeats: 1, warmup: 0, limit: 1}}\nmeters: [estimate]\ncarbon: {{region: KOR}}\n" + extra
    )


ORIN = (
    "05-15-2025 18:30:28 RAM 6982/7620MB (lfb 5x1MB) SWAP 2640/16384MB (cached 202MB) "
    "CPU [97%@1984] GR3D_FREQ 84%@[713] cpu@65.562C VDD_IN 17946mW/15710mW"
)

CASES = [
    ("yaml-alias-bomb", ["validate", "{d}/r.yaml"], {"r.yaml": BOMB}, "expands to more than"),
    ("yaml-deep-flow", ["validate", "{d}/r.yaml"], {"r.yaml": "[" * 100_000}, "nested deeper"),
    (
        "yaml-deep-block",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n"},
        "nested deeper",
    ),
    (
        "yaml-recursive-alias",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": "a: &x [*x]\n"},
        "refers to itself",
    ),
    (
        "yaml-too-large",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": "name: " + "x" * (1 << 20) + "\n"},
        "byte limit",
    ),
    ("yaml-not-utf8", ["validate", "{d}/r.yaml"], {"r.yaml": b"name: \xff\xfe\n"}, "not UTF-8"),
    (
        "yaml-python-tag",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": "name: !!python/object/apply:os.system ['true']\n"},
        "invalid YAML",
    ),
    (
        "recipe-huge-value",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe("seed: '" + "9" * 900_000 + "'\n")},
        "seed: expected an integer",
    ),
    (
        "recipe-nan-hz",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe("measure: {hz: .nan}\n")},
        "not a finite number",
    ),
    (
        "recipe-inf-idle",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe("measure: {idle_s: .inf}\n")},
        "idle_s",
    ),
    (
        "recipe-huge-max-new-tokens",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe().replace("max_new_tokens: 2", "max_new_tokens: 100000000000000000000")},
        "max_new_tokens",
    ),
    (
        "recipe-name-dotdot",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe(name="'..'")},
        "name: '..'",
    ),
    (
        "variant-name-slash",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe(variants="{'a/b': [{quantize: {method: bf16}}]}")},
        "variants.a/b",
    ),
    (
        "variant-name-control",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe(variants='{"a\\tb": [{quantize: {method: bf16}}]}')},
        "control",
    ),
    (
        "wanda-without-calibration",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe(variants="{w: [{prune: {method: wanda}}]}", calibration="")},
        "needs calibration",
    ),
    (
        "sparsegpt-without-calibration-run",
        ["run", "{d}/r.yaml", "--out", "{d}/out"],
        {"r.yaml": _recipe(variants="{s: [{prune: {method: sparsegpt}}]}", calibration="")},
        "needs calibration",
    ),
    (
        "model-path-missing",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe(model="./no/model")},
        "model.id",
    ),
    (
        "eval-data-missing",
        ["validate", "{d}/r.yaml"],
        {"r.yaml": _recipe("evals: [{perplexity: {data: ./nope.txt}}]\n")},
        "evals[0]",
    ),
    (
        "run-out-uncreatable",
        ["run", "{d}/r.yaml", "--out", "/proc/greenllm/x"],
        {"r.yaml": _recipe()},
        "cannot be created",
    ),
    ("measure-hz-nan", ["measure", "--hz", "nan", "--", "true"], {}, "--hz"),
    ("measure-hz-inf", ["measure", "--hz", "inf", "--", "true"], {}, "--hz"),
    (
        "measure-trace-unwritable",
        [
            "measure",
            "--meter",
            "estimate",
            "--trace",
            "/proc/greenllm/t.csv",
            "--",
            sys.executable,
            "-c",
            "open('{d}/RAN', 'w')",
        ],
        {},
        "--trace",
    ),
    (
        "measure-no-such-command",
        ["measure", "--meter", "estimate", "--", "{d}/nope"],
        {},
        "command not found",
    ),
    (
        "bench-max-new-tokens-1e20",
        ["bench", "x", "--max-new-tokens", "1e20"],
        {},
        "--max-new-tokens",
    ),
    (
        "bench-max-new-tokens-huge",
        ["bench", "{tiny}", "--max-new-tokens", "100000000000000000000"],
        {},
        "--max-new-tokens",
    ),
    ("bench-hz-nan", ["bench", "{tiny}", "--hz", "nan"], {}, "--hz"),
    (
        "bench-prompts-not-utf8",
        ["bench", "{tiny}", "--prompts", "{d}/p.jsonl"],
        {"p.jsonl": b'{"prompt": "hi"}\n{"prompt": "\xff"}\n'},
        "not UTF-8",
    ),
    (
        "bench-corrupt-safetensors",
        ["bench", "{d}/m", "--repeats", "1", "--warmup", "0", "--min-window-s", "0"],
        {"m/": "{tiny}", "m/model.safetensors": b'\x10\x00\x00\x00\x00\x00\x00\x00{"a"'},
        "safetensors",
    ),
    ("bench-cuda-without-cuda", ["bench", "{tiny}", "--device", "cuda"], {}, "cuda"),
    (
        "eval-choice-not-utf8",
        ["eval", "{tiny}", "--task", "hellaswag", "--data", "{d}/h.jsonl"],
        {"h.jsonl": b'{"ctx_a": "\xff"}\n'},
        "not UTF-8",
    ),
    (
        "eval-perplexity-not-utf8",
        ["eval", "{tiny}", "--task", "perplexity", "--data", "{d}/t.txt"],
        {"t.txt": b"ok\n\xff\n"},
        "UTF-8",
    ),
    (
        "compress-overwrite-foreign",
        ["compress", "{tiny}", "--step", "quantize:method=bf16", "--out", "{d}/o", "--overwrite"],
        {"o/notes.txt": "mine"},
        "not part of a saved model",
    ),
    (
        "compress-out-uncreatable",
        ["compress", "{tiny}", "--step", "quantize:method=bf16", "--out", "/proc/greenllm/o"],
        {},
        "cannot be created",
    ),
    (
        "compress-wanda-without-calibration",
        ["compress", "{tiny}", "--step", "prune:method=wanda"],
        {},
        "needs calibration",
    ),
    (
        "analyze-garbage",
        ["analyze", "tegrastats", "{d}/g.log"],
        {"g.log": bytes(range(256)) * 100},
        "no parseable tegrastats line",
    ),
    (
        "analyze-interval-nan",
        ["analyze", "tegrastats", "{d}/t.log", "--interval-ms", "nan"],
        {"t.log": ORIN + "\n"},
        "--interval-ms",
    ),
    ("usage-error-is-one-line", ["validate"], {}, "Missing argument"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from greenllm.models import save
    from greenllm.testing import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(0)
    return str(save(model, tmp_path_factory.mktemp("hostile") / "tiny", tok))


def _fill(text, d: Path, tiny: str):
    return text.replace("{d}", str(d)).replace("{tiny}", tiny) if isinstance(text, str) else text


def run_greenllm(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    return subprocess.run(
        [sys.executable, "-m", "greenllm", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> str:
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("greenllm: error: ") and len(lines[0]) <= 700, lines[0][:300]
    assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_exit_2(case, tiny, tmp_path):
    cid, argv, files, fragment = case
    if cid == "bench-cuda-without-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    for name, content in files.items():
        p = tmp_path / _fill(name, tmp_path, tiny)
        if name.endswith("/"):
            shutil.copytree(_fill(content, tmp_path, tiny), p)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        content = _fill(content, tmp_path, tiny)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    proc = run_greenllm([_fill(a, tmp_path, tiny) for a in argv], tmp_path)
    assert_one_line_error(proc, fragment)
    if cid == "measure-trace-unwritable":
        assert not (tmp_path / "RAN").exists(), "the command ran before --trace was checked"
    if cid == "compress-overwrite-foreign":
        assert (tmp_path / "o" / "notes.txt").read_text() == "mine"
    if cid.endswith("-run"):
        assert not (tmp_path / "out").exists(), "work started before the recipe was checked"


@pytest.fixture
def small_mount(tmp_path):
    """``mount(opts) -> folder`` of a 64 KiB tmpfs (root only; skipped where mount fails)."""
    mounted = []

    def _mount(opts: str) -> Path:
        d = tmp_path / f"mnt{len(mounted)}"
        d.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size=64k,{opts}", "tmpfs", str(d)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'})")
        mounted.append(d)
        return d

    yield _mount
    for d in mounted:
        subprocess.run(["umount", str(d)], capture_output=True)


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount command")
@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_run_into_read_only_or_full_disk(kind, small_mount, tiny, tmp_path):
    mnt = small_mount("ro" if kind == "read-only" else "rw")
    if kind == "full":
        with open(mnt / "fill", "wb") as fh:
            try:
                fh.write(b"\0" * (1 << 20))
            except OSError:
                pass
    (tmp_path / "r.yaml").write_text(_recipe().replace("{tiny}", tiny))
    for argv in (
        ["run", str(tmp_path / "r.yaml"), "--out", str(mnt / "out")],
        ["compress", tiny, "--step", "quantize:method=bf16", "--out", str(mnt / "o")],
    ):
        line = assert_one_line_error(run_greenllm(argv, tmp_path), "")
        assert ("Read-only" in line) if kind == "read-only" else ("No space" in line), line
