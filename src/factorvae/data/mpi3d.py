"""MPI3D toy, realistic and real (Gondal et al., NeurIPS 2019, "On the Transfer of Inductive
Bias from Simulation to the Real World"), as disentanglement_lib's ``mpi3d.py`` reads them.

Official files (https://github.com/rr-learning/disentanglement_dataset): ``mpi3d_toy.npz``,
``mpi3d_realistic.npz``, ``mpi3d_real.npz``, each with one array ``images`` of shape
(1036800, 64, 64, 3) uint8 in row-major factor order (last factor fastest), i.e. it reshapes
to (6, 6, 2, 3, 3, 40, 40, 64, 64, 3). Factors: object_color (6), object_shape (6),
object_size (2), camera_height (3), background_color (3), horizontal_axis (40),
vertical_axis (40).

The file is copied once into the cache as (N, 3, 64, 64) uint8, read from the zip member in
chunks (``CHUNK`` images, 12 MB), never whole; the copy is memory-mapped afterwards. Reading
the member as raw bytes in order keeps the factor order exactly (a loader that reshapes the
factor axes in another order scrambles the factors silently: disentanglement_lib issue #31).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from factorvae.data.grid import FactorGrid
from factorvae.data.official import identify
from factorvae.data.store import ImageData, as_uint8_tensor, source_copy
from factorvae.errors import UserError

URL = "https://github.com/rr-learning/disentanglement_dataset"
VARIANTS = ("toy", "realistic", "real")
GRID = FactorGrid(("object_color", "object_shape", "object_size", "camera_height", "background_color",
                   "horizontal_axis", "vertical_axis"), (6, 6, 2, 3, 3, 40, 40))
CHUNK = 1024


def _member_chunks(path: Path, grid: FactorGrid, progress: bool):
    """Blocks (n, 3, 64, 64) of the ``images`` member, in file order; UserErrors for a file
    that is not a zip, lacks ``images``, has another shape or dtype, or ends early."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); is it truncated?") from None
    with zf:
        if "images.npy" not in zf.namelist():
            keys = ", ".join(n.removesuffix(".npy") for n in zf.namelist()) or "none"
            raise UserError(f"{path}: missing key 'images' (found {keys})")
        try:
            with zf.open("images.npy") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
                want = (len(grid), 64, 64, 3)
                if tuple(shape) != want or dtype != np.uint8 or fortran:
                    raise UserError(f"{path}: 'images' is {tuple(shape)} {dtype}{' (Fortran order)' if fortran else ''}; "
                                    f"expected {want} uint8 in C order")
                row = 64 * 64 * 3
                for a in tqdm(range(0, len(grid), CHUNK), desc=f"{path.name}: copying", disable=not progress,
                              unit="chunk"):
                    n = min(CHUNK, len(grid) - a)
                    buf = f.read(n * row)
                    if len(buf) != n * row:
                        raise UserError(f"{path}: 'images' ends after {a + len(buf) // row:,} of {len(grid):,} images; "
                                        "is the file truncated?")
                    yield np.frombuffer(buf, np.uint8).reshape(n, 64, 64, 3).transpose(0, 3, 1, 2)
        except UserError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # CRC, zlib, header errors
            raise UserError(f"{path}: cannot read 'images' ({type(e).__name__}: {e}); is the file truncated?") from None


def build(variant: str, path: str | Path, grid: FactorGrid | None = None, cache=None, progress: bool = True) -> ImageData:
    """MPI3D ``variant`` from its official .npz over ``grid`` (official unless a test passes
    a smaller one)."""
    grid = GRID if grid is None else grid
    path = Path(path).expanduser()
    name = f"mpi3d_{variant}"
    if not path.is_file():
        raise UserError(f"{name}: file not found: {path} ({name}.npz is published at {URL})")
    cpath = source_copy(name, [path], (len(grid), 3, 64, 64), lambda: _member_chunks(path, grid, progress), cache,
                        name)
    info = {"source": str(path), "metric_factors": list(grid.names),
            "official_file": identify(name, path, cache, progress)}
    return ImageData(name, as_uint8_tensor(np.load(cpath, mmap_mode="r")), grid, scale=1.0 / 255.0, info=info)


def loader(variant: str):
    def load(path=None, cache=None, progress: bool = True) -> ImageData:
        if path is None:
            raise UserError(f"mpi3d_{variant} needs --data-path mpi3d_{variant}.npz (published at {URL})")
        return build(variant, path, cache=cache, progress=progress)
    return load
