"""Toy discs: a small ground-truth grid a model learns in minutes on a CPU, for demos, tests and
quick experiments (not from the paper).

3,072 greyscale 64x64 images of one disc on black, four independent factors::

    brightness (3): 0.4, 0.7, 1.0            grey level of the disc
    scale      (4): radius 5, 7, 9, 11 px
    posX      (16): centre 14 .. 50 px from the left edge
    posY      (16): centre 14 .. 50 px from the top edge

Edges are anti-aliased (pixel coverage of a 1-pixel ramp). The whole grid renders in a fraction
of a second, so it is built in memory on every load and never cached.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factorvae.data.grid import FactorGrid
from factorvae.data.store import ImageData, as_uint8_tensor
from factorvae.errors import UserError

GRID = FactorGrid(
    names=("brightness", "scale", "posX", "posY"),
    sizes=(3, 4, 16, 16),
    values=(
        (0.4, 0.7, 1.0),
        (5.0, 7.0, 9.0, 11.0),
        tuple(np.linspace(14.0, 50.0, 16)),
        tuple(np.linspace(14.0, 50.0, 16)),
    ),
)
METRIC_FACTORS = GRID.names
SIZE = 64


def render(classes: np.ndarray) -> np.ndarray:
    """Images (N, 1, 64, 64) uint8 for rows of factor classes (N, 4)."""
    v = GRID.factor_values(classes).astype(np.float32)
    centres = np.arange(SIZE, dtype=np.float32) + 0.5
    dx = centres[None, None, :] - v[:, 2, None, None]
    dy = centres[None, :, None] - v[:, 3, None, None]
    cover = np.clip(v[:, 1, None, None] - np.sqrt(dx * dx + dy * dy) + 0.5, 0.0, 1.0)
    return np.floor(255.0 * v[:, 0, None, None] * cover + 0.5).astype(np.uint8)[:, None]


def render_all(progress: bool = False) -> np.ndarray:
    """The whole grid (3072, 1, 64, 64) uint8 in index order."""
    return render(GRID.all_classes())


def load(path: str | Path | None = None, cache: str | Path | None = None, progress: bool = True) -> ImageData:
    """The toy grid, rendered in memory (``cache`` is not used; there is no file to read)."""
    if path is not None:
        raise UserError("the toy data set is procedural only; drop --data-path")
    return ImageData("toy", as_uint8_tensor(render_all()), GRID, scale=1.0 / 255.0,
                     info={"source": "procedural (in memory)", "metric_factors": list(METRIC_FACTORS)})
