"""SmallNORB (LeCun, Huang & Bottou 2004), as disentanglement_lib's ``norb.py`` uses it in
Locatello et al. 2019: both splits, the left camera, resized to 64x64 greyscale.

The official files are six "NORB binary matrix" files (not MATLAB, despite ``.mat``),
published at https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/ (gzipped: unzip them)::

    smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat
    smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat

Header (little-endian int32): magic (0x1E3D4C55 bytes, 0x1E3D4C54 int32), ndim, then
max(3, ndim) dimensions; the data follow. ``dat``: (24300, 2, 96, 96) uint8, the two cameras;
``cat``: (24300,) category 0..4; ``info``: (24300, 4) instance 0..9, elevation 0..8,
azimuth 0, 2, .., 34 (halved to 0..17, as dlib does), lighting 0..5.

Factors (dlib's): category (5), elevation (9), azimuth (18), lighting (6); the instance (10:
five per category in each split) is a nuisance, drawn uniformly once per latent point
(``data/indexed.py``). The full grid (category, instance, elevation, azimuth, lighting) is
complete: 48,600 images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from factorvae.data.grid import FactorGrid
from factorvae.data.indexed import NUISANCE_SEED, IndexedData, nuisance_order
from factorvae.data.official import identify
from factorvae.data.store import as_uint8_tensor, resize64, source_copy
from factorvae.errors import UserError

URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
SPLITS = ("smallnorb-5x46789x9x18x6x2x96x96-training", "smallnorb-5x01235x9x18x6x2x96x96-testing")
PARTS = ("dat", "cat", "info")
FULL_GRID = FactorGrid(("category", "instance", "elevation", "azimuth", "lighting"), (5, 10, 9, 18, 6))
LATENT = ("category", "elevation", "azimuth", "lighting")
GRID = FULL_GRID.subset(list(LATENT))[0]
MAGIC = {0x1E3D4C55: np.dtype(np.uint8), 0x1E3D4C54: np.dtype("<i4")}
CHUNK = 1000  # images resized per block of the cache (1000 x 2 x 96 x 96 bytes read at a time)


def read_matrix(path: Path) -> np.ndarray:
    """A NORB binary matrix file, memory-mapped, its size checked against its header."""
    try:
        size = path.stat().st_size
        head = np.fromfile(path, dtype="<i4", count=5)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    if len(head) < 2 or int(head[0]) not in MAGIC:
        raise UserError(f"{path}: not a NORB binary matrix file (magic {hex(int(head[0])) if len(head) else 'none'}; "
                        "expected 0x1e3d4c55 or 0x1e3d4c54); unzip the .gz files first")
    dtype, ndim = MAGIC[int(head[0])], int(head[1])
    if not 1 <= ndim <= 4:
        raise UserError(f"{path}: a NORB matrix of {ndim} dimensions; expected 1 to 4")
    offset = 8 + 4 * max(3, ndim)
    dims = tuple(int(d) for d in np.fromfile(path, dtype="<i4", count=max(3, ndim), offset=8)[:ndim])
    if len(dims) < ndim or any(d < 0 for d in dims):
        raise UserError(f"{path}: a damaged NORB header")
    need = offset + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if size != need:
        raise UserError(f"{path}: {size:,} bytes where its header {dims} needs {need:,}; is the file truncated?")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=dims)


def files(folder: str | Path) -> list[Path]:
    """The six official files in ``folder``, or a UserError naming the first one missing."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"SmallNORB: --data-path must be the folder holding the six smallnorb-*.mat files "
                        f"(published at {URL}); {folder} is not a folder")
    out = [folder / f"{split}-{part}.mat" for split in SPLITS for part in PARTS]
    for f in out:
        if not f.is_file():
            raise UserError(f"SmallNORB: {f.name} is missing from {folder} (published gzipped at {URL})")
    return out


def read_split(folder: Path, split: str, full: FactorGrid) -> tuple[np.ndarray, np.ndarray]:
    """(dat memmap (n, 2, 96, 96), full-grid classes (n, 5)) of one split, checked."""
    dat, cat, info = (read_matrix(folder / f"{split}-{part}.mat") for part in PARTS)
    n = dat.shape[0]
    if dat.dtype != np.uint8 or dat.ndim != 4 or dat.shape[1:] != (2, 96, 96):
        raise UserError(f"{split}-dat.mat: shape {dat.shape} {dat.dtype}; expected (n, 2, 96, 96) bytes")
    if cat.shape != (n,) or info.shape != (n, 4) or cat.dtype.kind != "i" or info.dtype.kind != "i":
        raise UserError(f"{split}: cat {cat.shape} and info {info.shape} must be int32 (n,) and (n, 4) for {n} images")
    classes = np.column_stack([cat, info]).astype(np.int64)  # category, instance, elevation, azimuth, lighting
    if (classes[:, 3] % 2).any():
        raise UserError(f"{split}-info.mat: odd azimuth values; the official ones are 0, 2, .., 34")
    classes[:, 3] //= 2
    bad = (classes < 0) | (classes >= np.asarray(full.sizes))
    if bad.any():
        k = int(np.nonzero(bad.any(axis=0))[0][0])
        raise UserError(f"{split}: {full.names[k]} outside 0..{full.sizes[k] - 1}; not the official files")
    return dat, classes


def build(folder: str | Path, full: FactorGrid | None = None, latent=LATENT, cache=None, progress: bool = True,
          seed: int = NUISANCE_SEED) -> IndexedData:
    """SmallNORB from the folder of official files over grid ``full`` (the official one unless
    a test passes a smaller grid): cached once as (N, 1, 64, 64) uint8 in file order (training
    then testing; streamed, ``CHUNK`` images at a time), then memory-mapped."""
    full = FULL_GRID if full is None else full
    paths = files(folder)
    folder = paths[0].parent
    splits = [read_split(folder, s, full) for s in SPLITS]
    classes = np.concatenate([c for _, c in splits])
    index = full.index(classes)
    counts = np.bincount(index, minlength=len(full))
    if len(index) != len(full) or counts.max() != 1:
        miss = np.flatnonzero(counts != 1)[0]
        raise UserError(f"SmallNORB: {len(index):,} images do not cover the {len(full):,}-point grid exactly once "
                        f"(e.g. {dict(zip(full.names, full.classes(miss).tolist()))} appears {counts[miss]} times)")

    def blocks():
        with tqdm(total=len(index), desc="SmallNORB: resizing", disable=not progress, unit="img") as bar:
            for dat, _ in splits:
                row = 2 * 96 * 96
                for a in range(0, len(dat), CHUNK):
                    # read, not the memmap: mapped pages would stay resident (the whole 900 MB)
                    n = min(CHUNK, len(dat) - a)
                    block = np.fromfile(dat.filename, np.uint8, n * row, offset=dat.offset + a * row)
                    yield resize64(block.reshape(n, 2, 96, 96)[:, 0])  # left camera
                    bar.update(n)

    path = source_copy("smallnorb", paths, (len(index), 1, 64, 64), blocks, cache, "SmallNORB")
    row_of = np.empty(len(full), dtype=np.int64)
    row_of[index] = np.arange(len(index))
    grid, order = nuisance_order(full, tuple(latent), np.random.default_rng(seed))
    info = {"source": str(folder), "metric_factors": list(grid.names), "nuisance": ["instance"],
            "official_file": identify("smallnorb", paths, cache, progress)}
    return IndexedData("smallnorb", as_uint8_tensor(np.load(path, mmap_mode="r")), grid, scale=1.0 / 255.0,
                       info=info, rows=torch.from_numpy(row_of[order]))


def load(path: str | Path | None = None, cache=None, progress: bool = True) -> IndexedData:
    if path is None:
        raise UserError(f"smallnorb needs --data-path: the folder of the six smallnorb-*.mat files (published at {URL})")
    return build(path, cache=cache, progress=progress)
