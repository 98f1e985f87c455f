"""Cars3D (Reed, Zhang, Zhang & Lee 2015, "Deep Visual Analogy-Making"), as
disentanglement_lib's ``cars3d.py`` uses it in Locatello et al. 2019.

The official data is a folder (``data/cars/`` of ``nips2015-analogy-data.tar.gz``, published
at http://www.scottreed.info/) of 183 MATLAB files ``car_*_mesh.mat``, each with one array
``im`` of shape (128, 128, 3, 24, 4) uint8: 24 azimuths x 4 elevations of one car model.
Images are resized to 64x64 RGB (PIL Lanczos, dlib's ANTIALIAS).

Factors (dlib's order): elevation (4), azimuth (24), object (183): 17,568 images, a complete
grid without nuisance. Object k is the k-th file in sorted name order (dlib numbers files in
directory-listing order, which the OS does not fix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
from tqdm.auto import tqdm

from factorvae.data.grid import FactorGrid
from factorvae.data.indexed import IndexedData
from factorvae.data.official import identify
from factorvae.data.store import as_uint8_tensor, resize64, source_copy
from factorvae.errors import UserError

URL = "http://www.scottreed.info/ (nips2015-analogy-data.tar.gz, folder data/cars)"
GRID = FactorGrid(("elevation", "azimuth", "object"), (4, 24, 183))


def files(folder: str | Path, grid: FactorGrid = GRID) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"Cars3D: --data-path must be the folder of the 183 car *.mat files (published at {URL}); "
                        f"{folder} is not a folder")
    out = sorted(folder.glob("*.mat"))
    if len(out) != grid.sizes[2]:
        raise UserError(f"Cars3D: {folder} holds {len(out)} .mat files; the official folder has {grid.sizes[2]} "
                        f"(published at {URL})")
    return out


def read_mesh(path: Path, grid: FactorGrid = GRID) -> np.ndarray:
    """One car's images (azimuths * elevations, 128, 128, 3) uint8, azimuth-major (dlib's
    ``einsum("abcde->deabc")`` then flatten)."""
    try:
        im = scipy.io.loadmat(str(path))["im"]
    except KeyError:
        raise UserError(f"{path}: no array 'im'; not a Cars3D file") from None
    except Exception as e:  # scipy raises ValueError/TypeError/OSError on damaged files
        raise UserError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e}); is it truncated?") from None
    shape = (128, 128, 3, grid.sizes[1], grid.sizes[0])
    if im.shape != shape or im.dtype != np.uint8:
        raise UserError(f"{path}: 'im' is {im.shape} {im.dtype}; expected {shape} uint8")
    return np.ascontiguousarray(np.transpose(im, (3, 4, 0, 1, 2))).reshape(-1, 128, 128, 3)


def build(folder: str | Path, grid: FactorGrid | None = None, cache=None, progress: bool = True) -> IndexedData:
    """Cars3D from the official folder over ``grid`` (official unless a test passes a smaller
    one): cached once in file order as (N, 3, 64, 64) uint8, one car (96 images) at a time."""
    grid = GRID if grid is None else grid
    paths = files(folder, grid)
    per = grid.sizes[0] * grid.sizes[1]

    def blocks():
        for p in tqdm(paths, desc="Cars3D: resizing", disable=not progress, unit="car"):
            yield resize64(read_mesh(p, grid))

    path = source_copy("cars3d", paths, (len(grid), 3, 64, 64), blocks, cache, "Cars3D")
    el, az, obj = grid.all_classes().T
    rows = obj * per + az * grid.sizes[0] + el  # file k holds (azimuth, elevation), elevation fastest
    info = {"source": str(paths[0].parent), "metric_factors": list(grid.names),
            "official_file": identify("cars3d", paths, cache, progress)}
    return IndexedData("cars3d", as_uint8_tensor(np.load(path, mmap_mode="r")), grid, scale=1.0 / 255.0,
                       info=info, rows=torch.from_numpy(rows))


def load(path: str | Path | None = None, cache=None, progress: bool = True) -> IndexedData:
    if path is None:
        raise UserError(f"cars3d needs --data-path: the folder of the 183 car *.mat files (published at {URL})")
    return build(path, cache=cache, progress=progress)
