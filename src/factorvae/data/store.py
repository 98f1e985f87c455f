"""Image stores: a uint8 tensor (N, C, 64, 64) held on the training device, and batches made
by one index gather (no per-item Python, no worker processes).

Also the on-disk cache shared by every generated data set: atomic writes, validation on read.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from factorvae import io
from factorvae.data.grid import FactorGrid
from factorvae.errors import UserError


@dataclass(repr=False)
class ImageData:
    """A data set in memory: ``data`` uint8 (N, C, H, W); pixel value = data * ``scale``.

    ``grid`` is the factor grid (rows in grid index order) or None for data without factors.
    """

    name: str
    data: torch.Tensor
    grid: FactorGrid | None
    scale: float = 1.0 / 255.0
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.data.dtype != torch.uint8 or self.data.ndim != 4:
            raise ValueError("ImageData needs a uint8 tensor of shape (N, C, H, W)")
        if self.grid is not None and len(self.grid) != len(self.data):
            raise ValueError(f"{self.name}: {len(self.data)} images for a grid of {len(self.grid)}")

    def __len__(self) -> int:
        return self.data.shape[0]

    def __repr__(self) -> str:  # short: never the image tensor
        factors = ("no factors" if self.grid is None
                   else "factors " + ", ".join(f"{n}={s}" for n, s in zip(self.grid.names, self.grid.sizes)))
        shape = "x".join(str(d) for d in self.data.shape[1:])
        return f"ImageData({self.name!r}, {len(self):,} images {shape}, {factors}, on {self.device})"

    @property
    def channels(self) -> int:
        return self.data.shape[1]

    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device: torch.device | str) -> "ImageData":
        self.data = self.data.to(device)
        return self

    def images(self, indices) -> torch.Tensor:
        """Float images in [0, 1] for flat indices (numpy array, list or tensor)."""
        idx = torch.as_tensor(np.asarray(indices) if not torch.is_tensor(indices) else indices, dtype=torch.long)
        return self.data[idx.to(self.data.device)].float().mul_(self.scale)

    def fixed_indices(self, num: int, seed: int) -> np.ndarray:
        """min(num, N) distinct indices, sorted, the same for every model given the seed: the
        fixed image set an analysis scores every trial on."""
        n = min(int(num), len(self))
        return np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """A uniformly random minibatch (with replacement across steps, as the paper's)."""
        idx = torch.randint(len(self), (batch_size,), generator=generator, device=generator.device)
        return self.data[idx.to(self.data.device)].float().mul_(self.scale)


def as_uint8_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over a (possibly read-only, memory-mapped) uint8 array without copying it.
    Stores are never written to, so the read-only warning does not apply."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


# -- on-disk cache --------------------------------------------------------------------------

def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where generated data sets live: ``--cache-dir``, else $FACTORVAE_CACHE, else
    ~/.cache/factorvae."""
    root = override or os.environ.get("FACTORVAE_CACHE") or Path.home() / ".cache" / "factorvae"
    return Path(root).expanduser()


def atomic_save_npy(path: Path, array: np.ndarray, meta: dict) -> None:
    """Write ``array`` as .npy plus a JSON sidecar, each atomically (factorvae.io), so a killed
    process never leaves a half-written cache that looks valid (the sidecar goes last)."""
    io.atomic_save_npy(path, array)
    io.atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))


def write_npy_blocks(path: Path, shape: tuple, blocks, meta: dict) -> None:
    """Write a uint8 .npy of ``shape`` from consecutive row blocks, plus its JSON sidecar,
    atomically, holding one block at a time: the old sidecar goes first, the data goes to a
    temporary file that replaces ``path`` only when complete, and the new sidecar (what marks a
    cache valid) goes last."""
    path.with_suffix(".json").unlink(missing_ok=True)
    path.unlink(missing_ok=True)

    def write(f):
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": tuple(shape)}
        np.lib.format.write_array_header_1_0(f, header)
        rows = 0
        for b in blocks:
            b = np.ascontiguousarray(b, dtype=np.uint8)
            if b.shape[1:] != tuple(shape[1:]):
                raise ValueError(f"block of shape {b.shape} for an array of shape {shape}")
            f.write(b.data)
            rows += len(b)
        if rows != shape[0]:
            raise ValueError(f"wrote {rows} of {shape[0]} rows")

    io.atomic_write(path, write)
    io.atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))


def resize64(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 3) resized to 64x64 with PIL's Lanczos filter
    (disentanglement_lib's ``PIL.Image.ANTIALIAS``, the same filter), as (N, C, 64, 64)."""
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(im)).resize((64, 64), Image.Resampling.LANCZOS))
                    for im in images]) if len(images) else np.zeros((0, 64, 64) + images.shape[3:], np.uint8)
    return out[:, None] if out.ndim == 3 else out.transpose(0, 3, 1, 2)


def source_copy(prefix: str, sources: list[Path], shape: tuple, blocks, cache=None, what: str = "data set",
                version: int = 1) -> Path:
    """The path of a uint8 .npy cache of ``shape`` converted from official ``sources``, written
    once through ``write_npy_blocks`` (streamed, atomic) from ``blocks()``, an iterator of row
    blocks that is only called when no valid copy exists. The copy is keyed by the sources'
    resolved paths, sizes and modification times: another or a changed file gets its own."""
    ident = [[str(Path(s).resolve()), Path(s).stat().st_size, Path(s).stat().st_mtime_ns] for s in sources]
    meta = {"dataset": prefix, "version": version, "sources": ident, "shape": list(shape)}
    key = hashlib.sha256(json.dumps(meta).encode()).hexdigest()[:20]
    path = cache_dir(cache) / f"{prefix}-{key}.npy"
    if load_cached_npy(path, meta, shape) is not None:
        return path
    try:
        write_npy_blocks(path, shape, blocks(), meta)
    except OSError as e:
        raise UserError(f"cannot write the {what} cache {path} ({e}); pass a writable --cache-dir") from None
    return path


def load_cached_npy(path: Path, meta: dict, shape: tuple, dtype=np.uint8) -> np.ndarray | None:
    """The cached array if its sidecar matches ``meta`` and its header ``shape``/``dtype``;
    None (regenerate) otherwise. Memory-mapped: the caller copies what it needs."""
    side = path.with_suffix(".json")
    if not (path.exists() and side.exists()):
        return None
    try:
        if io.read_json(side) != meta:  # bounded; None when unreadable
            return None
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        return None
    return arr


def check_npz_key(arrays, key: str, path, shape: tuple | None = None, dtype=None):
    """An array from an official .npz/.h5 file, or a UserError naming what is wrong."""
    if key not in arrays:
        raise UserError(f"{path}: missing key {key!r} (found {', '.join(sorted(arrays.keys())) or 'none'})")
    try:
        arr = arrays[key]
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise UserError(f"{path}: {key!r} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
        if dtype is not None and arr.dtype != dtype:
            raise UserError(f"{path}: {key!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
        return arr
    except UserError:
        raise
    except Exception as e:  # zipfile/zlib/h5py errors on truncated files
        raise UserError(f"{path}: cannot read {key!r} ({type(e).__name__}: {e}); is the file truncated?") from None
