"""Data sets whose index is not the storage order: an image store plus a row map.

Two uses (docs/datasets.md):

- **Nuisance factors** (SmallNORB's instance, dSprites-noshape's shape). disentanglement_lib
  scores only the *latent* factors and, for each latent grid point it needs, draws the
  nuisance uniformly afresh (``SplitDiscreteStateSpace.sample_all_factors``). Here the metric
  grid is the latent grid and each latent point has one image whose nuisance was drawn
  uniformly once with a fixed seed, so a representation stays a function of the grid point
  (metrics encode each point once, ``metrics/codes.py``), as colour- and noisy-dSprites fix
  their nuisance per index (``data/variants.py``). Indices ``0 .. L-1`` (L = latent grid
  points) are those images; indices ``L .. N-1`` are every other image, so training,
  reconstructions and traversals still see all N images.
- **Storage in file order** (Cars3D: one file per object, written as read): ``rows`` maps the
  grid index to the stored row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from factorvae.data.grid import FactorGrid
from factorvae.data.store import ImageData

#: seed of the fixed nuisance draw; another seed is another (equally valid) draw
NUISANCE_SEED = 0


@dataclass(repr=False)
class IndexedData(ImageData):
    """``data`` (M, C, H, W) uint8 stored rows; ``rows`` (N,) int64: the stored row of data
    set index i. ``grid`` (when not None) addresses indices ``0 .. len(grid)-1``."""

    rows: torch.Tensor | None = None

    def __post_init__(self):
        if self.data.dtype != torch.uint8 or self.data.ndim != 4:
            raise ValueError("IndexedData needs a uint8 tensor of shape (M, C, H, W)")
        if self.rows is None or self.rows.dtype != torch.int64 or self.rows.ndim != 1:
            raise ValueError("IndexedData needs rows, an int64 tensor (N,)")
        if self.grid is not None and len(self.grid) > len(self.rows):
            raise ValueError(f"{self.name}: a grid of {len(self.grid)} points for {len(self.rows)} images")

    def __len__(self) -> int:
        return self.rows.shape[0]

    def to(self, device) -> "IndexedData":
        self.data, self.rows = self.data.to(device), self.rows.to(device)
        return self

    def images(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(indices) if not torch.is_tensor(indices) else indices, dtype=torch.long)
        return self.data[self.rows[idx.to(self.rows.device)]].float().mul_(self.scale)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self), (batch_size,), generator=generator, device=generator.device)
        return self.images(idx)


def nuisance_order(full: FactorGrid, latent: tuple[str, ...], rng: np.random.Generator) -> tuple[FactorGrid, np.ndarray]:
    """(latent grid, order): ``order[i]`` is the full-grid index of data set index i. The
    first L entries hold, for latent point g, the image of g with nuisance classes drawn
    uniformly by ``rng`` (one draw per point); the rest are the other images, in full-grid
    order."""
    lat_grid, lat_idx = full.subset(list(latent))
    nuis = [k for k in range(full.num_factors) if k not in lat_idx]
    n_lat = len(lat_grid)
    n_nuis = int(np.prod([full.sizes[k] for k in nuis], dtype=np.int64))
    classes = np.empty((n_lat, n_nuis, full.num_factors), dtype=np.int64)
    classes[:, :, lat_idx] = lat_grid.all_classes()[:, None, :]
    if nuis:
        nuis_grid = full.subset(nuis)[0]
        classes[:, :, nuis] = nuis_grid.all_classes()[None, :, :]
    flat = full.index(classes.reshape(-1, full.num_factors)).reshape(n_lat, n_nuis)
    pick = rng.integers(0, n_nuis, size=n_lat)
    chosen = np.zeros((n_lat, n_nuis), dtype=bool)
    chosen[np.arange(n_lat), pick] = True
    return lat_grid, np.concatenate([flat[chosen], flat[~chosen]])
