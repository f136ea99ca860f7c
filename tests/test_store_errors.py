"""A store that cannot be written is reported with its real cause (permission denied,
read-only file system, disk full), the path and the fix; "not a greenllm results store" is
kept for a file that really is not one. Real file systems: a small tmpfs mounted for the test
(skipped where mounting is not allowed), a real unprivileged process for permissions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenllm.cli import main
from greenllm.errors import DataError, StoreError
from greenllm.results import BenchResult
from greenllm.store import Store

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _store_with_a_run(where: Path) -> None:
    with Store(where) as s:
        run = s.begin_run("r", {"name": "r"}, [])
        s.finish_run(run, "finished")


def _bench(big: int = 0) -> BenchResult:
    return BenchResult(
        metrics={"energy_per_token_j": 1.0},
        ci95={},
        meter="rapl",
        estimated=False,
        repeats=1,
        workload={"pad": "x" * big},
    )


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs at tmp_path/mnt, unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_not_a_store_is_still_named_so(tmp_path):
    (tmp_path / "greenllm.sqlite").write_bytes(b"this is a text file, not SQLite\n" * 100)
    with pytest.raises(DataError, match="is not a greenllm results store"):
        Store(tmp_path)


def test_read_only_file_system(tmpfs, capsys):
    _store_with_a_run(tmpfs)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(StoreError) as err:
        with Store(tmpfs) as s:
            s.begin_run("again", {}, [])
    msg = str(err.value)
    assert "read-only file system" in msg and str(tmpfs) in msg and "not a greenllm" not in msg
    # the CLI: `greenllm report` into the read-only directory, one line, exit 2
    assert main(["report", str(tmpfs)]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "read-only" in line and "remove it" not in line
    # `greenllm run` into a directory that cannot be created there: before any work
    recipe = tmpfs.parent / "r.yaml"
    recipe.write_text(
        "schema_version: 1\nname: ro\nmodel: {id: org/some-model}\n"
        "meters: [estimate]\ncarbon: {intensity_g_per_kwh: 400}\n"
    )
    assert main(["run", str(recipe), "--out", str(tmpfs / "sub"), "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "read-only file system" in line.lower(), line


def test_disk_full(tmpfs, capsys):
    _store_with_a_run(tmpfs)
    filler = tmpfs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the disk to the last block
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    with pytest.raises(StoreError) as err:
        with Store(tmpfs) as s:
            for i in range(100):
                s.add_bench(f"b{i}", "v", _bench(big=64 * 1024), 1)
    msg = str(err.value)
    assert "is full" in msg and "free some space" in msg and "not a greenllm" not in msg
    assert main(["report", str(tmpfs)]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "full" in line and "Traceback" not in line
    filler.unlink()  # space again: the store is intact
    with Store(tmpfs, create=False) as s:
        assert s.counts()["runs"] == 1


def test_permission_denied_names_the_cause(tmp_path):
    """A real process that lacks write permission (an unprivileged user when the tests run as
    root)."""
    d = tmp_path / "ro"
    d.mkdir()
    _store_with_a_run(d)
    code = (
        "import os, sys\nfrom greenllm.store import Store\nfrom greenllm.errors import "
        "GreenLLMError\nif os.geteuid() == 0:\n    os.setgid(65534)\n    os.setuid(65534)\n"
        "try:\n    with Store(sys.argv[1]) as s:\n        s.begin_run('x', {}, [])\n"
        "except GreenLLMError as e:\n    print(e)\n"
    )
    os.chmod(d / "greenllm.sqlite", 0o444)
    os.chmod(d, 0o555)
    modes = {}
    if os.geteuid() == 0:  # the child drops to nobody: let it reach the store
        for p in tmp_path.parents:
            if p == Path("/") or os.stat(p).st_mode & 0o005 == 0o005:
                continue
            modes[p] = os.stat(p).st_mode
            os.chmod(p, modes[p] | 0o005)
        os.chmod(tmp_path, os.stat(tmp_path).st_mode | 0o005)
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, str(d)],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=SRC),
            timeout=120,
        )
    finally:
        os.chmod(d, 0o755)
        for p, mode in modes.items():
            os.chmod(p, mode)
    assert r.returncode == 0, r.stderr
    assert "permission denied" in r.stdout and str(d) in r.stdout, r.stdout
    assert "not a greenllm" not in r.stdout
