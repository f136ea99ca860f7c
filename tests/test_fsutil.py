"""Files greenllm writes are atomic and honour the umask (0644 under 022, 0600 under 077),
like any other tool's output; tempfile.mkstemp's 0600 never leaks into a result."""

from __future__ import annotations

import stat

import pytest

from greenllm.fsutil import atomic_open, atomic_write, current_umask, honour_umask
from greenllm.measure import measure


def test_current_umask_reads_without_changing_it(umask):
    fmode, _ = umask
    assert 0o666 & ~current_umask() == fmode
    assert 0o666 & ~current_umask() == fmode


def test_atomic_write_honours_the_umask_and_replaces(tmp_path, umask):
    fmode, _ = umask
    path = tmp_path / "sub" / "out.txt"
    assert atomic_write(path, "first") == path
    atomic_write(path, b"second")
    assert path.read_text() == "second"
    assert stat.S_IMODE(path.stat().st_mode) == fmode
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_atomic_open_leaves_the_old_file_when_the_block_raises(tmp_path):
    path = tmp_path / "out.csv"
    atomic_write(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w", newline="") as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_honour_umask_fixes_a_tree_written_through_mkstemp(tmp_path, umask):
    import tempfile

    fmode, dmode = umask
    (tmp_path / "d").mkdir(mode=0o700)
    fd, name = tempfile.mkstemp(dir=tmp_path / "d")
    with open(fd, "wb") as fh:
        fh.write(b"x")
    honour_umask(tmp_path / "d")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == dmode
    assert stat.S_IMODE((tmp_path / "d" / name).stat().st_mode) == fmode


def test_measure_trace_honours_the_umask(tmp_path, umask):
    fmode, _ = umask
    trace = tmp_path / "trace.csv"
    with measure("estimate", trace=trace, hz=50):
        sum(range(10000))
    assert trace.read_text().startswith("t_s,phase")
    assert stat.S_IMODE(trace.stat().st_mode) == fmode
