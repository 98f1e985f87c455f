"""Data set registry: ``--dataset NAME`` -> loader.

Every loader returns an :class:`ImageData` (uint8 images + optional FactorGrid). Generated data
sets are cached on disk (see ``store.cache_dir``); ``path`` points to an official file or folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from factorvae.data import dsprites
from factorvae.data.grid import FactorGrid
from factorvae.data.store import ImageData
from factorvae.errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    channels: int
    #: the factor grid, or None for data without ground-truth factors
    grid: FactorGrid | None
    #: load(path, cache, progress) -> ImageData
    load: Callable[..., ImageData]
    #: build the cache ahead of time: generate(cache, progress) -> path (None: nothing to build)
    generate: Callable | None = None
    #: whether ``--data-path`` is required (folders of images)
    needs_path: bool = False


DATASETS: dict[str, DatasetInfo] = {
    "dsprites": DatasetInfo(
        "dsprites", "dSprites / 2D Shapes (Matthey et al. 2017), procedural or the official npz",
        1, dsprites.GRID, dsprites.load, dsprites.generate,
    ),
}


def get_dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown data set {name!r}; choose one of {', '.join(sorted(DATASETS))}") from None


def load_dataset(name: str, path=None, cache=None, progress: bool = True) -> ImageData:
    info = get_dataset_info(name)
    if info.needs_path and path is None:
        raise UserError(f"data set {name!r} needs --data-path")
    return info.load(path=path, cache=cache, progress=progress)
