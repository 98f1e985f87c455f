"""3D Shapes (Burgess & Kim 2018; paper §5, Fig. 10): a procedural renderer of
the full official grid and a loader for the official ``3dshapes.h5``.

The grid is the official one, in the official index order (orientation fastest)::

    floor_hue (10)  wall_hue (10)  object_hue (10)  scale (8)  shape (4)  orientation (15)
    index = floor*48000 + wall*4800 + object*480 + scale*60 + shape*15 + orientation

with the official label values: hues 0.0, 0.1, ..., 0.9; scale linspace(0.75, 1.25, 8); shape
0 cube, 1 cylinder, 2 sphere, 3 capsule; orientation linspace(-30, 30, 15) degrees.

The scene (``factorvae.data.shapes3d_scene``, where its geometry and lights are described) is
fitted to the official images: nearest-image PSNR >= 20 dB for each of 25 official samples
(benchmarks/shapes3d_match.py). Images are HSV(hue, 1, 1) colours times shading maps.

Generation is fast because colour and geometry separate: every pixel is
``floor_rgb * A_floor + wall_rgb * A_wall + object_rgb * A_object + C`` where the three shading
maps A and the colour C of what no hue colours (sky, highlight) depend only on (scale, shape,
orientation). The 480 map sets are ray-cast once (the "bank"), and the 480,000 images are
composed by broadcasting colours over them.

The official ``3dshapes.h5`` (``--data-path``) is copied once into the cache as a uint8 .npy
and memory-mapped from then on, instead of being read into 5.9 GB of memory at every run.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from factorvae.data.grid import FactorGrid
from factorvae.data.official import identify
from factorvae.data.shapes3d_scene import MAPS, ORIENTATIONS, SCALES, SIZE, shading_bank, shading_maps
from factorvae.data.store import (ImageData, as_uint8_tensor, cache_dir, check_npz_key, load_cached_npy,
                                  write_npy_blocks)
from factorvae.errors import UserError

OFFICIAL_FILE = "3dshapes.h5"
FACTORS = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
SHAPES = ("cube", "cylinder", "sphere", "capsule")
HUES = tuple(np.round(np.arange(10) / 10.0, 1))
GRID = FactorGrid(
    names=FACTORS,
    sizes=(10, 10, 10, 8, 4, 15),
    values=(
        HUES,
        HUES,
        HUES,
        SCALES,
        (0.0, 1.0, 2.0, 3.0),
        ORIENTATIONS,
    ),
)
RENDER_VERSION = 2
#: number of (scale, shape, orientation) combinations: the images of one colour triple
BLOCK = 8 * 4 * 15


def hue_rgb(hue: float) -> np.ndarray:
    """The colour of a hue class value: HSV(hue, 1, 1) as RGB in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(float(hue), 1.0, 1.0))


#: (10, 3) RGB of the ten hues, times 255 (what the composition multiplies)
PALETTE = (np.stack([hue_rgb(h) for h in HUES]) * 255.0).astype(np.float32)


# -- composition ------------------------------------------------------------------------------

def _compose(maps: np.ndarray, floor_rgb: np.ndarray, wall_rgb: np.ndarray, obj_rgb: np.ndarray) -> np.ndarray:
    """uint8 images from maps (..., MAPS, H, W) and colours (..., 3) in 0..255. The
    arithmetic (float32, this order) is the one ``render_into`` uses, so both agree exactly."""
    f = maps[..., 0:1, :, :] * floor_rgb[..., :, None, None]
    w = maps[..., 1:2, :, :] * wall_rgb[..., :, None, None]
    ob = maps[..., 2:3, :, :] * obj_rgb[..., :, None, None]
    x = ((f + w) + maps[..., 3:, :, :]) + ob
    return np.floor(x + np.float32(0.5)).clip(0, 255).astype(np.uint8)


def render(classes: np.ndarray) -> np.ndarray:
    """Images (N, 3, 64, 64) uint8 for rows of factor classes (N, 6)."""
    classes = GRID.validate_classes(classes)
    maps = np.stack(shading_maps(classes[:, 3:])) if len(classes) else np.zeros((0, MAPS, SIZE, SIZE), np.float32)
    return _compose(maps, PALETTE[classes[:, 0]], PALETTE[classes[:, 1]], PALETTE[classes[:, 2]])


def render_into(out: np.ndarray, floors=range(10), walls=range(10), objects=range(10), progress: bool = False,
                bank: np.ndarray | None = None) -> np.ndarray:
    """Fill ``out`` (len(floors)*len(walls)*len(objects)*480, 3, 64, 64) uint8 with the images
    of the given hue classes, in official index order (the whole grid by default).

    The room (floor + walls) part of a block of 480 images is computed once per (floor, wall);
    each object colour then only touches the pixels the object covers.
    """
    bank = shading_bank() if bank is None else bank
    maps = bank.reshape(BLOCK, MAPS, SIZE * SIZE)
    floors, walls, objects = list(floors), list(walls), list(objects)
    blocks = out.reshape(len(floors), len(walls), len(objects), BLOCK * 3 * SIZE * SIZE)
    kk, pp = np.nonzero(maps[:, 2])  # the pixels an object colour reaches
    obj_vals = maps[kk, 2, pp][:, None]  # (P, 1)
    flat = (kk[:, None] * 3 + np.arange(3)) * (SIZE * SIZE) + pp[:, None]  # (P, 3) into a block
    room = np.empty((BLOCK, 3, SIZE * SIZE), np.float32)
    tmp = np.empty_like(room)
    room_u8 = np.empty(room.shape, np.uint8)
    bar = tqdm(total=len(floors) * len(walls) * len(objects) * BLOCK, desc="3D Shapes", disable=not progress,
               unit="img", unit_scale=True)
    for i, f in enumerate(floors):
        for j, w in enumerate(walls):
            # the same float32 operations, in the same order, as _compose: ((floor + wall) + sky) + object
            np.multiply(maps[:, 0:1], PALETTE[f][:, None], out=room)
            np.multiply(maps[:, 1:2], PALETTE[w][:, None], out=tmp)
            room += tmp
            room += maps[:, 3:]
            np.add(room, np.float32(0.5), out=tmp)
            np.floor(tmp, out=tmp)
            np.clip(tmp, 0, 255, out=tmp)
            room_u8[...] = tmp  # pixels no object colour reaches
            room_obj = room.reshape(-1)[flat]  # (P, 3)
            for m, ob in enumerate(objects):
                block = blocks[i, j, m]
                block[:] = room_u8.reshape(-1)
                vals = room_obj + obj_vals * PALETTE[ob]
                vals += np.float32(0.5)
                np.floor(vals, out=vals)
                np.clip(vals, 0, 255, out=vals)
                block[flat] = vals
                bar.update(BLOCK)
    bar.close()
    return out


def render_all(progress: bool = False) -> np.ndarray:
    """The whole grid (480,000, 3, 64, 64) uint8 in official index order (5.9 GB in memory;
    ``generate`` writes it straight to disk instead)."""
    out = np.empty((len(GRID), 3, SIZE, SIZE), dtype=np.uint8)
    return render_into(out, progress=progress, bank=shading_bank(progress))


# -- cache ---------------------------------------------------------------------------------------

def _cache_meta() -> dict:
    return {"dataset": "shapes3d", "render_version": RENDER_VERSION, "shape": [len(GRID), 3, SIZE, SIZE]}


def cache_path(cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / f"shapes3d-v{RENDER_VERSION}.npy"


def generate(cache: str | Path | None = None, progress: bool = True, force: bool = False) -> Path:
    """Render the grid into the cache unless a valid copy is there; returns its path.

    Written block by block (4,800 images of one floor and wall hue at a time, 59 MB) into a
    temporary .npy next to the cache, so the process never holds the 5.9 GB (see
    ``write_npy_blocks``).
    """
    path = cache_path(cache)
    if not force and _load_cache(path) is not None:
        return path
    bank = shading_bank(progress)
    buf = np.empty((10 * BLOCK, 3, SIZE, SIZE), dtype=np.uint8)

    def blocks():
        with tqdm(total=len(GRID), desc="3D Shapes", disable=not progress, unit="img", unit_scale=True) as bar:
            for fl in range(10):
                for w in range(10):
                    render_into(buf, floors=[fl], walls=[w], bank=bank)
                    yield buf
                    bar.update(len(buf))

    write_npy_blocks(path, (len(GRID), 3, SIZE, SIZE), blocks(), _cache_meta())
    return path


def _load_cache(path: Path) -> np.ndarray | None:
    arr = load_cached_npy(path, _cache_meta(), (len(GRID), 3, SIZE, SIZE))
    if arr is None:
        return None
    # Spot-check content against the renderer: catches a cache overwritten by anything else.
    # (Within 1 grey level: another machine's maths library may round a pixel differently.)
    rng = np.random.default_rng(len(GRID))
    idx = np.sort(rng.choice(len(GRID), 64, replace=False))
    diff = np.abs(np.asarray(arr[idx]).astype(np.int16) - render(GRID.classes(idx)))
    if diff.max() > 1:
        return None
    return arr


# -- the official file ---------------------------------------------------------------------------

def _open_h5(path: Path, grid: FactorGrid):
    """The open file and its ``images`` dataset, once keys, shapes, dtypes and labels are
    checked (a UserError names what is wrong). The caller closes the file."""
    if not path.is_file():
        raise UserError(f"3D Shapes file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise UserError(f"{path}: not a readable HDF5 file ({type(e).__name__}: {e})") from None
    n = len(grid)
    try:
        labels = check_npz_key(f, "labels", path, (n, grid.num_factors))
        if labels.dtype.kind not in "fiu":
            raise UserError(f"{path}: 'labels' must be numbers, got {labels.dtype}")
        try:
            lab = labels[()]
        except Exception as e:
            raise UserError(f"{path}: cannot read 'labels' ({type(e).__name__}: {e}); is the file truncated?") from None
        expected = grid.factor_values(grid.all_classes())
        bad = ~np.isclose(lab, expected, rtol=0, atol=1e-4)
        if bad.any():
            row, k = (int(v[0]) for v in np.nonzero(bad))
            raise UserError(f"{path}: 'labels' are not the official grid in official order: row {row} has "
                            f"{grid.names[k]}={lab[row, k]:g}, expected {expected[row, k]:g}")
        images = check_npz_key(f, "images", path, (n, SIZE, SIZE, 3), np.uint8)
    except BaseException:
        f.close()
        raise
    return f, images


def _h5_chunks(images, path: Path, chunk: int, progress: bool):
    """The images of an open official-format file, ``chunk`` at a time, as (n, 3, 64, 64)."""
    for s in tqdm(range(0, len(images), chunk), desc="3D Shapes: reading", disable=not progress, unit="chunk"):
        try:
            block = images[s : s + chunk]
        except Exception as e:
            raise UserError(f"{path}: cannot read 'images' ({type(e).__name__}: {e}); is the file truncated?") from None
        yield block.transpose(0, 3, 1, 2)


def read_h5(path: str | Path, grid: FactorGrid = GRID, progress: bool = True, chunk: int = 8000) -> np.ndarray:
    """images as (N, 3, 64, 64) uint8 from an official-format .h5 (``images`` (N, 64, 64, 3)
    uint8, ``labels`` (N, 6) float), checked for keys, shapes, dtypes and labels that follow
    ``grid`` in its index order. Read in chunks into memory (the official file: 5.9 GB; see
    ``cache_h5`` for a memory-mapped copy)."""
    path = Path(path)
    f, images = _open_h5(path, grid)
    with f:
        out = np.empty((len(grid), 3, SIZE, SIZE), dtype=np.uint8)
        s = 0
        for block in _h5_chunks(images, path, chunk, progress):
            out[s : s + len(block)] = block
            s += len(block)
    return out


def cache_h5(path: str | Path, grid: FactorGrid = GRID, cache: str | Path | None = None, progress: bool = True,
             chunk: int = 8000) -> Path:
    """The path of a uint8 (N, 3, 64, 64) .npy copy of an official-format .h5 in the cache,
    written once (streamed, atomically) and then memory-mapped by the caller instead of read
    into memory at every run. The file is validated as ``read_h5`` does on every call; the
    copy is keyed by the file's resolved path, size and modification time (another or a
    changed file gets its own copy) and spot-checked against the file."""
    path = Path(path).expanduser()
    f, images = _open_h5(path, grid)
    with f:
        st = path.stat()
        ident = {"source": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                 "sizes": list(grid.sizes)}
        key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:20]
        cpath = cache_dir(cache) / f"shapes3d-official-{key}.npy"
        shape = (len(grid), 3, SIZE, SIZE)
        meta = {"dataset": "shapes3d-official", "key": key, **ident, "shape": list(shape)}
        arr = load_cached_npy(cpath, meta, shape)
        rng = np.random.default_rng(len(grid))
        spot = np.sort(rng.choice(len(grid), min(4, len(grid)), replace=False))
        if arr is not None and np.array_equal(np.asarray(arr[spot]), images[spot].transpose(0, 3, 1, 2)):
            return cpath
        del arr
        try:
            write_npy_blocks(cpath, shape, _h5_chunks(images, path, chunk, progress), meta)
        except OSError as e:
            raise UserError(f"cannot write the 3D Shapes cache {cpath} ({e}); pass a writable --cache-dir") from None
    return cpath


def load_official(path: str | Path, progress: bool = True, cache: str | Path | None = None) -> np.ndarray:
    """The official ``3dshapes.h5`` as (480000, 3, 64, 64) uint8, memory-mapped from its copy
    in the cache (made on first use: 5.9 GB of disk, no more than a chunk of memory)."""
    return np.load(cache_h5(path, GRID, cache, progress=progress), mmap_mode="r")


def load(path: str | Path | None = None, cache: str | Path | None = None, progress: bool = True) -> ImageData:
    """3D Shapes as an ImageData: the official file when ``path`` is given, else procedural
    (generated once into the cache, then memory-mapped)."""
    extra = {}
    if path is not None:
        imgs, source = load_official(path, progress=progress, cache=cache), str(path)
        extra["official_file"] = identify("shapes3d", path, cache, progress)  # MD5 vs the published file
    else:
        cpath = generate(cache, progress=progress)
        imgs, source = np.load(cpath, mmap_mode="r"), f"procedural ({cpath})"
    return ImageData("shapes3d", as_uint8_tensor(imgs), GRID, scale=1.0 / 255.0,
                     info={"source": source, "metric_factors": list(FACTORS), **extra})
