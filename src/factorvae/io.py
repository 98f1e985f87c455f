"""Atomic file writes (bytes, text, JSON, .npy), JSON reads and exclusive directory locks: the
lowest layer, used by every module that writes.

A write goes to a temporary file beside its target and replaces it with ``os.replace`` only when
complete, so a killed process never leaves a half-written file that looks valid. Temporary files
are named ``.NAME~HOST~PID~XXXX.tmp``: one left by a process that died (same host, pid gone) is
removed by the next write of the same target, or by ``clean_stale_temps`` on the directory.
Files get the mode the umask gives a new file (not ``mkstemp``'s 0600), so shared storage works.
A write that fails (full disk, read-only or unwritable directory) raises a ``UserError`` naming
the path and the cause.

Reads are bounded (``read_bounded``: a regular file under a size limit, checked before parsing),
and the guards every command shares live here: ``confined`` (a path read from a file stays in
its folder), ``check_out_dir``, ``check_out_file`` (an output is new, empty or the command's own),
``check_not_input`` and ``check_memory``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import stat
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from factorvae.errors import UserError

HOST = socket.gethostname()


def describe_os_error(e: OSError, path: str | Path | None = None) -> str:
    """``PATH: ENOSPC (No space left on device)``: the path and the cause, on one line."""
    path = path or e.filename or "?"
    code = errno.errorcode.get(e.errno) if e.errno else None
    if code is None:  # numpy's tofile reports a short write without errno
        try:
            if os.statvfs(Path(path).parent).f_bavail == 0:
                code, e = "ENOSPC", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            pass
    cause = f"{code} ({e.strerror or e})" if code else str(e)
    return f"{path}: {cause}"


def write_error(path: str | Path, e: OSError) -> UserError:
    return UserError(f"cannot write {describe_os_error(e, path)}")


def current_umask() -> int:
    try:  # Linux >= 4.7: read it without changing it (os.umask would, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale_temps(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files in ``directory`` (of target ``name`` only, if given) left by
    processes of this host that no longer run; never a live process's or another host's."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")) or entry.name.count("~") < 3:
            continue
        target, host, pid, _ = entry.name[1:].rsplit("~", 3)
        if (name is not None and target != name) or host != HOST or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path``, named so ``clean_stale_temps`` knows its owner."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~{HOST}~{os.getpid()}~", suffix=".tmp")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a directory; give a file name")
        clean_stale_temps(path.parent, path.name)
        fd, tmp = _temp_beside(path)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj, default=None) -> None:
    """``obj`` as indented JSON plus a newline (the format of every JSON file of a run)."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=default) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def check_writable(path: str | Path) -> None:
    """Raise the ``UserError`` a write of ``path`` would, before minutes of work produce it: a
    4 KiB temporary file is written and synced beside it, then removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a directory; give a file name")
        fd, tmp = _temp_beside(path)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise write_error(path, e) from None


# -- bounded reads: nothing unbounded gets in -----------------------------------------------------

#: the largest config, sweep spec or other YAML file read (a real one is a few KiB; 50 MB of
#: YAML parses for a minute)
MAX_CONFIG_BYTES = 1 << 20
#: the largest JSON record read (eval.json, trial.json, an export's config.json, manifests)
MAX_JSON_BYTES = 16 << 20


def read_bounded(path: str | Path, limit: int = MAX_CONFIG_BYTES, what: str = "file") -> bytes:
    """The bytes of regular file ``path``, refused (one ``UserError``) before reading when it
    is missing, not a regular file (``/dev/zero``, a FIFO, a directory) or larger than ``limit``."""
    path = Path(path)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {describe_os_error(e, path)}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UserError(f"{what} {path} is not a regular file; give a file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1) if st.st_size <= limit else b""
        if st.st_size > limit or len(data) > limit:
            raise UserError(f"{what} {path} is larger than {limit / 2**20:g} MiB, the limit for a {what}")
    return data


def _no_duplicates(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):  # linear: a record of a million keys is checked in a blink
        seen: set = set()
        dup = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
        raise ValueError(f"duplicate key(s) {', '.join(map(repr, dup))}")
    return out


def load_json(path: str | Path, what: str = "JSON file", limit: int = MAX_JSON_BYTES):
    """The parsed JSON of ``path`` (bounded, a regular file, no key twice in one object); any
    problem is one ``UserError`` naming the path."""
    data = read_bounded(path, limit, what)
    try:
        return json.loads(data.decode(), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        detail = f": {e}" if "duplicate key" in str(e) else ""
        raise UserError(f"{path}: unreadable JSON ({type(e).__name__}{detail})") from None


def read_json(path: str | Path):
    """The parsed JSON of ``path``, or None when it is missing, unreadable, not a regular file
    or larger than ``MAX_JSON_BYTES`` (``load_json``)."""
    try:
        return load_json(path)
    except UserError:
        return None


# -- paths: outputs confined to what the user handed over ----------------------------------------

def confined(root: str | Path, rel, what: str) -> Path:
    """``root / rel`` for a relative path ``rel`` read from a file (a manifest, an index), refused
    when it is absolute, climbs with ``..`` or resolves (through symbolic links) outside ``root``."""
    root = Path(root)
    if not isinstance(rel, str) or not rel or "\0" in rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise UserError(f"{what} names {rel!r}, not a path inside {root}; refused")
    real_root, real = os.path.realpath(root), os.path.realpath(root / rel)
    if os.path.commonpath([real_root, real]) != real_root:
        raise UserError(f"{what} names {rel!r}, which leads outside {root} (to {real}); refused")
    return root / rel


def check_out_dir(path: str | Path, mine: Callable[[Path, list[str]], bool], kind: str, flag: str = "--out") -> Path:
    """Refuse output folder ``path`` unless it is new, empty, or ``mine(path, entries)`` says it
    is ``kind`` (e.g. "a run directory"; entries: its names, the lock and temporaries left out).
    A dangling or looping symbolic link, a file, an empty name are refused by name."""
    if not str(path).strip():
        raise UserError(f"{flag} is empty; name a folder")
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise UserError(f"{flag} {path} is a symbolic link to nothing; choose another {flag}") from None
        return path
    except OSError as e:  # ELOOP: a symlink loop; EACCES ...
        raise UserError(f"{flag} {describe_os_error(e, path)}") from None
    if not path.is_dir():
        raise UserError(f"{flag} {path} exists and is not a directory")
    try:
        entries = sorted(e for e in os.listdir(path) if e != ".lock" and not (e.startswith(".") and e.endswith(".tmp")))
    except OSError as e:
        raise UserError(f"{flag} {describe_os_error(e, path)}") from None
    if entries and not mine(path, entries):
        raise UserError(f"{flag} {path} is not empty and is not {kind}: it holds {', '.join(entries[:3])}"
                        f"{', ...' if len(entries) > 3 else ''}; choose a new or empty folder")
    return path


def check_out_file(path: str | Path, mine: Callable[[Path], bool], kind: str, flag: str = "--out") -> Path:
    """Refuse output file ``path`` when it exists and ``mine(path)`` does not recognise it as a
    ``kind`` the command wrote before (the user's README is not replaced by a result)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory; give a file name")
    if (path.exists() or path.is_symlink()) and not (path.is_file() and mine(path)):
        raise UserError(f"{flag} {path} exists and is not {kind}; choose another {flag}")
    return path


def check_not_input(out: str | Path, inputs, flag: str = "--out") -> None:
    """Refuse an output that is one of the command's inputs (the same file, by any name)."""
    for given in inputs:
        if given is None:
            continue
        try:
            same = os.path.samefile(out, given)
        except OSError:
            same = os.path.realpath(out) == os.path.realpath(given)
        if same:
            raise UserError(f"{flag} {out} is the input {given}; writing it would replace the input: choose another {flag}")


# -- memory ---------------------------------------------------------------------------------------

def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable plus free swap (None: unknown)."""
    try:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.split()[1:2] and line.split()[1].isdigit()}
    except (OSError, ValueError, IndexError):
        return None
    if "MemAvailable" not in info:
        return None
    return info["MemAvailable"] + info.get("SwapFree", 0)


def check_memory(nbytes: int, what: str, hint: str = "") -> None:
    """Refuse (``UserError``) to allocate ``nbytes`` for ``what`` when the machine has less
    available: the out-of-memory guard of every loader, said before the allocation."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise UserError(f"out of memory: {what} needs {nbytes / 2**30:,.1f} GiB, {free / 2**30:,.1f} GiB available"
                        + (f"; {hint}" if hint else ""))


# -- exclusive locks ---------------------------------------------------------------------------

class Busy(UserError):
    """The lock is held by another process (``holder``: what it wrote in the lock file)."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


_HELD: dict[str, list] = {}  # lock path -> [fd, depth]: re-entrant within a process


@contextmanager
def exclusive_lock(path: str | Path, what: str):
    """Hold an exclusive ``flock`` on file ``path`` (created if needed) for the ``with`` block,
    or raise ``Busy`` naming the holder. The OS releases it when the holder dies, so a killed
    process never leaves a stale lock. Re-entrant within a process. ``what`` names the locked
    thing in the message."""
    path = Path(path)
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    created = not path.parent.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_json(path)
            holder = holder if isinstance(holder, dict) else {}
            raise Busy(f"{what} is in use by {_describe_holder(holder)}; wait for it to finish or stop it",
                       holder) from None
        me = {"pid": os.getpid(), "host": HOST, "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
              "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except OSError:
            pass  # the lock holds without the note (a full disk must not stop a reader)
        _HELD[key] = [fd, 1]
        try:
            yield
        except BaseException:
            # a first use that failed before writing anything leaves no directory behind
            if created and [p.name for p in path.parent.iterdir()] == [path.name]:
                path.unlink(missing_ok=True)
                path.parent.rmdir()
            raise
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # releases the flock


def _describe_holder(h: dict) -> str:
    if not h.get("pid"):
        return "another process"
    return f"pid {h['pid']} on {h.get('host', '?')} since {h.get('since', '?')} ({h.get('command', '?')})"
