"""Data set registry: ``--dataset NAME`` -> loader.

Every loader returns an :class:`ImageData` (uint8 images + optional FactorGrid). Generated data
sets are cached on disk (see ``store.cache_dir``); ``path`` points to an official file or folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from factorvae.data import cars3d, dsprites, images, mpi3d, shapes3d, smallnorb, toy, variants
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
    #: render(classes) -> uint8 (N, C, 64, 64), pixel values 0..255: single grid images without the cache
    render: Callable | None = None
    #: cache_path(cache) -> the generated cache file (None: nothing cached, or one cache per folder)
    cache_path: Callable | None = None
    #: image folders whose channels are chosen per folder (``channels``: 1, 3 or auto) rather than fixed
    auto_channels: bool = False
    #: images in the data set when it differs from the grid's points (nuisance factors, data/indexed.py)
    num_images: int | None = None
    #: factors of the images that are not scored (drawn uniformly once per grid point)
    nuisance: tuple[str, ...] = ()
    #: keyword options of ``load`` beyond path and cache (config ``data.<option>``)
    options: tuple[str, ...] = ()


DATASETS: dict[str, DatasetInfo] = {
    "dsprites": DatasetInfo(
        "dsprites", "dSprites / 2D Shapes (Matthey et al. 2017), procedural or the official npz",
        1, dsprites.GRID, dsprites.load, dsprites.generate,
        render=lambda classes: dsprites.render(classes)[:, None] * 255,
        cache_path=dsprites.cache_path,
    ),
    "shapes3d": DatasetInfo(
        "shapes3d", "3D Shapes (Burgess & Kim 2018), procedural or the official 3dshapes.h5",
        3, shapes3d.GRID, shapes3d.load, shapes3d.generate, render=shapes3d.render, cache_path=shapes3d.cache_path,
    ),
    "color_dsprites": DatasetInfo(
        "color_dsprites", "colour-dSprites (disentanglement_lib): each sprite in a random colour, fixed per index",
        3, variants.GRID, variants.load_color, dsprites.generate, render=variants.render_color,
        cache_path=dsprites.cache_path,
    ),
    "noisy_dsprites": DatasetInfo(
        "noisy_dsprites", "noisy-dSprites (disentanglement_lib): white sprite on uniform noise, fixed per index",
        3, variants.GRID, variants.load_noisy, dsprites.generate, render=variants.render_noisy,
        cache_path=dsprites.cache_path,
    ),
    "scream_dsprites": DatasetInfo(
        "scream_dsprites", "scream-dSprites (disentanglement_lib): the sprite inverts a patch of an image you supply "
        "(data.scream_path)", 3, variants.GRID, variants.load_scream, dsprites.generate,
        cache_path=dsprites.cache_path, options=("scream_path",),
    ),
    "dsprites_noshape": DatasetInfo(
        "dsprites_noshape", "dSprites-noshape (disentanglement_lib): dSprites scored on 4 factors, shape a nuisance",
        1, variants.NOSHAPE_GRID, variants.load_noshape, dsprites.generate, render=variants.render_noshape,
        cache_path=dsprites.cache_path, num_images=len(dsprites.GRID), nuisance=("shape",),
    ),
    "smallnorb": DatasetInfo(
        "smallnorb", "SmallNORB (LeCun et al. 2004): --data-path FOLDER of the six official smallnorb-*.mat files",
        1, smallnorb.GRID, smallnorb.load, None, needs_path=True, num_images=len(smallnorb.FULL_GRID),
        nuisance=("instance",),
    ),
    "cars3d": DatasetInfo(
        "cars3d", "Cars3D (Reed et al. 2015): --data-path FOLDER of the 183 official car *.mat files",
        3, cars3d.GRID, cars3d.load, None, needs_path=True,
    ),
    **{f"mpi3d_{v}": DatasetInfo(
        f"mpi3d_{v}", f"MPI3D-{v} (Gondal et al. 2019): --data-path mpi3d_{v}.npz (the official file)",
        3, mpi3d.GRID, mpi3d.loader(v), None, needs_path=True,
    ) for v in mpi3d.VARIANTS},
    "toy": DatasetInfo(
        "toy", "toy discs: 3,072 greyscale images, 4 factors; learns in minutes on a CPU",
        1, toy.GRID, toy.load, None, render=toy.render,
    ),
    "folder": DatasetInfo(
        "folder", "any folder tree of images (no factors): --data-path DIR; RGB or greyscale (channels auto, 1 or 3)",
        3, None, partial(images.load, name="folder"), None, needs_path=True, auto_channels=True,
    ),
    "celeba": DatasetInfo(
        "celeba", "CelebA aligned faces (no factors): --data-path img_align_celeba/, RGB",
        3, None, partial(images.load, name="celeba", channels=3), None, needs_path=True,
    ),
    "chairs": DatasetInfo(
        "chairs", "3D Chairs (Aubry et al. 2014; no factors): --data-path rendered_chairs/, RGB",
        3, None, partial(images.load, name="chairs", channels=3), None, needs_path=True,
    ),
    "faces3d": DatasetInfo(
        "faces3d", "3D Faces (Paysan et al. 2009 renders; no factors here): --data-path DIR, greyscale",
        1, None, partial(images.load, name="faces3d", channels=1), None, needs_path=True,
    ),
}


def get_dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown data set {name!r}; choose one of {', '.join(sorted(DATASETS))}") from None


def image_channels(name: str, channels=None) -> int:
    """Channels of data set ``name``'s images without loading it: ``channels`` (the config's
    ``data.channels``) when it is 1 or 3, else the data set's own."""
    return channels if channels in (1, 3) else get_dataset_info(name).channels


def load_dataset(name: str, path=None, cache=None, progress: bool = True, channels=None, **options) -> ImageData:
    """``channels`` (1, 3 or "auto"; image folders only) picks greyscale or RGB; ``options``
    (``scream_path``) go to the data sets that take them (``DatasetInfo.options``)."""
    info = get_dataset_info(name)
    if info.needs_path and path is None and info.grid is None:  # grid loaders name their files
        raise UserError(f"data set {name!r} needs --data-path")
    given = {k: v for k, v in options.items() if v is not None}
    if set(given) - set(info.options):
        raise UserError(f"data.{sorted(set(given) - set(info.options))[0]} applies to "
                        f"{', '.join(n for n, i in DATASETS.items() if i.options) or 'no data set'}, not to {name!r}")
    if channels is not None:
        if info.grid is not None:
            raise UserError(f"data.channels applies to image folders only, not to {name!r}")
        return info.load(path=path, cache=cache, progress=progress, channels=channels)
    return info.load(path=path, cache=cache, progress=progress, **given)


def no_grid_error(name: str | None, what: str = "metrics") -> UserError:
    """The one error for ``what`` asked of a data set without ground-truth factors."""
    with_grid = ", ".join(n for n, i in DATASETS.items() if i.grid is not None)
    which = f"data set {name!r}" if name else "this data set"
    return UserError(f"{what} need ground-truth factors, and {which} has none (it is a folder of images); "
                     f"traversals, reconstructions and samples work on it. Data sets with factors: {with_grid}")


def require_grid(dataset: ImageData | str, what: str = "metrics"):
    """The data set's FactorGrid, or ``no_grid_error``."""
    grid = get_dataset_info(dataset).grid if isinstance(dataset, str) else getattr(dataset, "grid", None)
    if grid is None:
        raise no_grid_error(dataset if isinstance(dataset, str) else getattr(dataset, "name", None), what)
    return grid
