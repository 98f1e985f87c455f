"""factorvae.io: file modes follow the umask, stale temporaries of dead writers are removed (never
a live one's), write failures are one UserError naming the path and the cause, and the exclusive
lock names its holder and dies with it."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

import factorvae
from factorvae import io
from factorvae.errors import UserError

SRC = str(Path(factorvae.__file__).resolve().parents[1])
HOLD = """
import sys, time
from factorvae.io import exclusive_lock
with exclusive_lock(sys.argv[1], "x"):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def lock_held_elsewhere(path: Path):
    """Another process holding ``path``'s lock until the block ends (then it is killed)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert p.stdout.readline().strip() == b"held"
        yield p
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_atomic_files_get_the_umask_mode(tmp_path):
    for mask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        with umask(mask):
            io.atomic_write_json(tmp_path / f"a{mask}.json", {"x": 1})
        assert stat.S_IMODE((tmp_path / f"a{mask}.json").stat().st_mode) == mode


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead, me = dead_pid(), os.getpid()
    stale = tmp_path / f".x.json~{io.HOST}~{dead}~abc.tmp"
    live = tmp_path / f".x.json~{io.HOST}~{me}~abc.tmp"
    other_host = tmp_path / f".x.json~elsewhere~{dead}~abc.tmp"
    other_target = tmp_path / f".y.json~{io.HOST}~{dead}~abc.tmp"
    for p in (stale, live, other_host, other_target):
        p.write_bytes(b"partial")
    io.atomic_write_text(tmp_path / "x.json", "{}")
    assert not stale.exists() and live.exists() and other_host.exists() and other_target.exists()
    assert io.clean_stale_temps(tmp_path) == [other_target]
    assert live.exists() and other_host.exists()


def test_temp_names_say_whose_they_are(tmp_path, monkeypatch):
    seen = []
    replace = os.replace
    monkeypatch.setattr(io.os, "replace", lambda src, dst: (seen.append(Path(src).name), replace(src, dst)))
    io.atomic_write_bytes(tmp_path / "t.bin", b"x")
    target, host, pid, _ = seen[0][1:].rsplit("~", 3)
    assert (target, host, int(pid)) == ("t.bin", io.HOST, os.getpid())


def test_a_failed_write_is_one_user_error_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "keep.json").write_text("old")
    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(UserError) as e:
        io.atomic_write_text(tmp_path / "keep.json", "new")
    assert str(tmp_path / "keep.json") in str(e.value) and "ENOSPC" in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"] and (tmp_path / "keep.json").read_text() == "old"
    with pytest.raises(UserError, match="ENOSPC"):
        io.check_writable(tmp_path / "eval.json")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_a_directory_is_no_file(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        io.atomic_write_text(tmp_path, "x")
    with pytest.raises(UserError, match="is a directory"):
        io.check_writable(tmp_path)


def test_lock_names_its_holder_and_dies_with_it(tmp_path):
    lock = tmp_path / "run" / ".lock"
    with lock_held_elsewhere(lock) as holder:
        with pytest.raises(io.Busy) as e:
            with io.exclusive_lock(lock, "run directory R"):
                pass
        assert e.value.holder["pid"] == holder.pid and f"pid {holder.pid}" in str(e.value)
        assert "run directory R is in use" in str(e.value) and "\n" not in str(e.value)
    # killed: the OS released it; held here, it is busy for another process
    with io.exclusive_lock(lock, "R"):
        with io.exclusive_lock(lock, "R"):  # re-entrant in one process
            pass
        assert try_lock_elsewhere(lock) == 3
    assert try_lock_elsewhere(lock) == 0


def try_lock_elsewhere(path: Path) -> int:
    code = ("import sys\nfrom factorvae.io import Busy, exclusive_lock\ntry:\n    with exclusive_lock(sys.argv[1], 'x'): pass\n"
            "except Busy:\n    sys.exit(3)")
    return subprocess.run([sys.executable, "-c", code, str(path)], env={**os.environ, "PYTHONPATH": SRC}).returncode
