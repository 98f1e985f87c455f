"""Whether a file given with ``--data-path`` is the published official file, by MD5.

A file that differs (re-saved, converted, truncated and repaired) still loads when its structure
is valid; the verdict is recorded so that results on it are not mistaken for results on the
official data. Hashing a 3 GB or 5.9 GB file takes a while, so each digest is cached in
``<cache>/md5.json`` keyed by the file's resolved path, size and modification time: a file is
hashed once, and again only when it changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm.auto import tqdm

from factorvae.data.store import cache_dir
from factorvae.errors import UserError
from factorvae.io import atomic_write_text, read_json

#: MD5 of the files as published (dSprites: github.com/deepmind/dsprites-dataset; 3D Shapes:
#: storage.googleapis.com/3d-shapes/3dshapes.h5)
OFFICIAL_MD5 = {
    "dsprites": "7da33b31b13a06f4b04a70402ce90c2e",
    "shapes3d": "099a2078d58cec4daad0702c55d06868",
}
#: data sets read from official files whose published MD5 factorvae does not know (none is
#: published beside SmallNORB, Cars3D or MPI3D): the digest is recorded, the verdict is "unknown"
UNPUBLISHED = ("smallnorb", "cars3d", "mpi3d_toy", "mpi3d_realistic", "mpi3d_real")
_CHUNK = 1 << 22


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def file_md5(path: str | Path, cache: str | Path | None = None, progress: bool = True) -> str:
    """Hex MD5 of ``path``, from the digest cache when the file is unchanged. An unwritable cache
    only costs hashing again next time."""
    path = Path(path)
    book = cache_dir(cache) / "md5.json"
    key = _key(path)
    known = read_json(book)  # bounded; None when missing or unreadable
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, desc=f"MD5 {path.name}", disable=not progress,
                                      unit="B", unit_scale=True) as bar:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    digest = h.hexdigest()
    known[key] = digest
    try:
        atomic_write_text(book, json.dumps(known, indent=1))
    except (OSError, UserError):  # an unwritable cache only costs a re-hash next time
        pass
    return digest


def identify(dataset: str, path: str | Path | list, cache: str | Path | None = None, progress: bool = True) -> dict:
    """{"md5", "official_md5", "official": whether the file is byte-identical to the published
    one (None: no published MD5 known)}. Several files (SmallNORB's six, Cars3D's 183): "md5"
    is the MD5 of their sorted "name md5" lines, "files" each file's."""
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    files = {p.name: file_md5(p, cache, progress) for p in paths}
    if len(paths) == 1:
        digest = files[paths[0].name]
    else:
        digest = hashlib.md5("".join(f"{n} {d}\n" for n, d in sorted(files.items())).encode(),
                             usedforsecurity=False).hexdigest()
    known = OFFICIAL_MD5.get(dataset)
    out = {"md5": digest, "official_md5": known, "official": None if known is None else digest == known}
    if len(paths) > 1:
        out["files"] = files
    return out


def describe(verdict: dict) -> str:
    """One line for the user."""
    if verdict["official"] is None:
        return (f"MD5 {verdict['md5']} recorded; no published MD5 is known for this data set, so whether it is "
                f"the official file is unverified (loaded because its structure is valid)")
    if verdict["official"]:
        return f"MD5 {verdict['md5']}: the published official file"
    return (f"MD5 {verdict['md5']} differs from the published file's {verdict['official_md5']}: "
            f"not the official file (loaded because its structure is valid)")
