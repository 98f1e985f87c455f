"""The report's output directory: the report owns it and nothing else.

A manifest (``.factorvae-report.json``) lists every file the report wrote there. A directory
that holds anything else (the user's ``img/`` folder, a run's ``summary.json``, the sweep
itself) is refused before anything is written. The report is built in a temporary directory
beside the target and swapped in when complete, so an interrupted report leaves the previous one
whole; the previous one is then removed file by file, only the files its manifest names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from factorvae.errors import UserError
from factorvae.io import atomic_write_text, confined, read_json

MANIFEST = ".factorvae-report.json"


def owned_files(out: Path) -> list[str]:
    """Files (relative paths) of the report already in ``out``; raises UserError when ``out``
    is not a directory or holds anything the report did not write."""
    if not out.exists() and not out.is_symlink():
        return []
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory; choose another --out")
    entries = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    if not entries:
        return []
    manifest = read_json(out / MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    dirs = manifest.get("dirs", []) if isinstance(manifest, dict) else None
    if not all(isinstance(x, list) and all(isinstance(f, str) for f in x) for x in (files, dirs)):
        raise UserError(f"--out {out} is not empty and holds no report of ours ({', '.join(entries[:3])}"
                        f"{', ...' if len(entries) > 3 else ''}); the report writes only into an empty directory "
                        "or one it wrote before: choose another --out")
    for name in files + dirs:  # a crafted manifest must not name a file elsewhere for removal
        confined(out, name, f"--out {out}: its report manifest")
    links = [e for e in entries if (out / e).is_symlink()]
    foreign = [e for e in entries if e in links or not (e == MANIFEST or (e in files and (out / e).is_file())
                                                        or (e in dirs and (out / e).is_dir()))]
    if foreign:
        raise UserError(f"--out {out} holds files the report did not write ({', '.join(foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''}); move them away or choose another --out")
    return files


class Staging:
    """``with Staging(out) as tmp:`` build the report in ``tmp``; on success it replaces ``out``
    (whose contents ``owned_files`` checked); on failure ``tmp`` is removed and ``out`` is kept."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.previous = owned_files(self.out)
        token = os.urandom(4).hex()
        self.tmp = self.out.parent / f".{self.out.name}.report-tmp-{token}"
        self.old = self.out.parent / f".{self.out.name}.report-old-{token}"

    def __enter__(self) -> Path:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir()  # not mkdtemp: that is mode 0700 whatever the umask
        except OSError as e:
            raise UserError(f"cannot write the report to {self.out}: {e.strerror or e}") from None
        return self.tmp

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)  # ours alone: made by __enter__
            return
        made = sorted(self.tmp.rglob("*"))
        listing = {"files": [p.relative_to(self.tmp).as_posix() for p in made if p.is_file()],
                   "dirs": [p.relative_to(self.tmp).as_posix() for p in made if p.is_dir()]}
        atomic_write_text(self.tmp / MANIFEST, json.dumps(listing, indent=1) + "\n")
        try:
            if self.out.exists():
                os.rename(self.out, self.old)
            os.rename(self.tmp, self.out)
        except OSError as e:
            if self.old.exists() and not self.out.exists():
                os.rename(self.old, self.out)
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise UserError(f"cannot write the report to {self.out}: {e.strerror or e}") from None
        if self.old.exists():
            _remove(self.old, self.previous)


def _remove(root: Path, files: list[str]) -> None:
    """Delete the listed files under ``root`` and then the directories left empty; anything else
    (a file that appeared meanwhile) stays where it is."""
    for f in files + [MANIFEST]:
        try:
            confined(root, f, "report manifest").unlink(missing_ok=True)
        except UserError:  # checked by owned_files; a path changed since is left alone
            continue
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        root.rmdir()
    except OSError:
        pass
