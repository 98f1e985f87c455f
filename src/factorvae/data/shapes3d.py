"""3D Shapes (Burgess & Kim 2018; paper §5, Fig. 10; paper_spec §5.2): a procedural renderer of
the full official grid and a loader for the official ``3dshapes.h5``.

The grid is the official one, in the official index order (orientation fastest)::

    floor_hue (10)  wall_hue (10)  object_hue (10)  scale (8)  shape (4)  orientation (15)
    index = floor*48000 + wall*4800 + object*480 + scale*60 + shape*15 + orientation

with the official label values: hues 0.0, 0.1, ..., 0.9; scale linspace(0.75, 1.25, 8); shape
0 cube, 1 cylinder, 2 sphere, 3 capsule; orientation linspace(-30, 30, 15) degrees.

The scene (the official renderer is not public; this one is built to look like it):

- A room corner: a floor plane and two walls meeting at a right angle behind the object, both
  walls at 45 degrees to the line of sight when orientation is 0. The floor takes the floor hue,
  both walls the wall hue, the object the object hue: colour = HSV(hue, 1, 1) times shading.
- One object standing on the floor at the centre of the room: cube (side 1), cylinder (radius
  0.5, height 1), sphere (radius 0.55) or capsule (radius 0.4, height 1.2) at scale 1, all
  sizes multiplied by the scale value.
- orientation is the camera's azimuth about the object's vertical axis (the official
  orientation is a view azimuth: disentanglement_lib's file name ends in ``view-azi``), so it
  turns the cube's faces and moves the room corner, the walls' shading and the shadow;
  the camera looks down at the object from 28 degrees above the floor, 40 degree field of view.
- Lighting: ambient 0.45 plus Lambert shading from one directional light fixed to the room
  (above, front left), with the object's cast shadow on the floor and walls.
- Pixels are 4x4 supersampled: edge pixels mix colours, so the images are smooth like the
  official ones.

Generation is fast because colour and geometry separate: every pixel is
``floor_rgb * A_floor + wall_rgb * A_wall + object_rgb * A_object`` where the three shading maps
A depend only on (scale, shape, orientation). The 480 map triples are ray-cast once (the
"bank"), and the 480,000 images are composed by broadcasting colours over them.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
from factorvae.data.grid import FactorGrid
from factorvae.data.official import identify
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
        tuple(np.linspace(0.75, 1.25, 8)),
        (0.0, 1.0, 2.0, 3.0),
        tuple(np.linspace(-30.0, 30.0, 15)),
    ),
)
RENDER_VERSION = 1
SIZE = 64
_SUPER = 4
#: number of (scale, shape, orientation) combinations: the images of one colour triple
BLOCK = 8 * 4 * 15

# -- scene constants ------------------------------------------------------------------------
_ELEVATION = np.deg2rad(28.0)
_DISTANCE = 5.2
_TARGET = np.array([0.0, 0.75, 0.0])
_FOV = np.deg2rad(40.0)
_CORNER = 2.4  # distance of the room corner behind the object (along the view at orientation 0)
_AMBIENT = 0.45
_LIGHT = np.array([-0.45, 1.0, -0.55]) / np.linalg.norm([-0.45, 1.0, -0.55])  # towards the light
_EPS = 1e-4


def hue_rgb(hue: float) -> np.ndarray:
    """The colour of a hue class value: HSV(hue, 1, 1) as RGB in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(float(hue), 1.0, 1.0))


#: (10, 3) RGB of the ten hues, times 255 (what the composition multiplies)
PALETTE = (np.stack([hue_rgb(h) for h in HUES]) * 255.0).astype(np.float32)


# -- ray casting ----------------------------------------------------------------------------

def _camera_rays(orientation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Ray origin (3,) and unit directions (S*64, S*64, 3) of the supersampled pixels, row 0 at
    the top. The camera orbits the vertical axis through the object by the orientation angle."""
    az = np.deg2rad(orientation_deg)
    # orientation 0: camera on the -z side looking along +z; positive angles orbit to the right
    back = np.array([np.sin(az) * np.cos(_ELEVATION), np.sin(_ELEVATION), -np.cos(az) * np.cos(_ELEVATION)])
    origin = _TARGET + _DISTANCE * back
    fwd = -back
    right = np.cross(np.array([0.0, 1.0, 0.0]), fwd)
    right /= np.linalg.norm(right)
    up = np.cross(fwd, right)
    n = SIZE * _SUPER
    t = np.tan(_FOV / 2) * ((np.arange(n) + 0.5) / n * 2 - 1)
    u, v = np.meshgrid(t, -t)  # u: right, v: up (row 0 at the top)
    d = fwd + u[..., None] * right + v[..., None] * up
    return origin, d / np.linalg.norm(d, axis=-1, keepdims=True)


def _room_planes() -> list[tuple[np.ndarray, float]]:
    """Inward normals n and offsets c of the room's planes: a point p is inside where
    n . p >= c. Floor y >= 0; two walls meeting at right angles in the corner x = 0,
    z = _CORNER, each at 45 degrees to the z axis: x + z <= _CORNER (right, facing the light)
    and z - x <= _CORNER (left, in half shade)."""
    s = 1 / np.sqrt(2)
    corner = np.array([0.0, 0.0, _CORNER])
    walls = [np.array([-s, 0.0, -s]), np.array([s, 0.0, -s])]
    return [(np.array([0.0, 1.0, 0.0]), 0.0)] + [(n, float(n @ corner)) for n in walls]


def _hit_planes(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, the first room plane each ray meets (from inside the room)."""
    ts = []
    for n, c in _room_planes():
        dn = d @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (c - o @ n if o.ndim == 1 else c - np.einsum("...i,i->...", o, n)) / dn
        ts.append(np.where(dn < -1e-12, t, np.inf))
    ts = np.stack(ts, -1)
    which = ts.argmin(-1)
    return np.take_along_axis(ts, which[..., None], -1)[..., 0], which


def _quadratic(a, b, c):
    """Smaller and larger roots of a t^2 + 2 b t + c (nan where none)."""
    disc = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(disc)
        return (-b - s) / a, (-b + s) / a


def _hit_object(shape: int, scale: float, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First hit (t > eps, inf if none) and unit normal of rays o + t d with the object.
    ``o`` (3,) or (M, 3), ``d`` (M, 3)."""
    o = np.broadcast_to(o, d.shape)
    m = len(d)
    best = np.full(m, np.inf)
    normal = np.zeros((m, 3))

    def take(t, nrm):
        t = np.where(np.isfinite(t) & (t > _EPS), t, np.inf)
        better = t < best
        best[better] = t[better]
        normal[better] = nrm[better] if nrm.ndim == 2 else nrm

    def point(t):
        return o + np.where(np.isfinite(t), t, 0)[:, None] * d

    if shape == 0:  # cube, side 1: slab test on [-h, h] x [0, 2h] x [-h, h]
        h = 0.5 * scale
        lo, hi = np.array([-h, 0.0, -h]), np.array([h, 2 * h, h])
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - o) / d, (hi - o) / d
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        tmin = np.where(np.isnan(tmin), -np.inf, tmin)
        tmax = np.where(np.isnan(tmax), np.inf, tmax)
        enter, axis = tmin.max(1), tmin.argmax(1)
        leave = tmax.min(1)
        t = np.where(enter <= leave, enter, np.inf)
        nrm = np.zeros((m, 3))
        nrm[np.arange(m), axis] = -np.sign(d[np.arange(m), axis])
        take(t, nrm)
        return best, normal

    def vertical_cylinder(r, y0, y1, caps):
        a = d[:, 0] ** 2 + d[:, 2] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2]
        c = o[:, 0] ** 2 + o[:, 2] ** 2 - r * r
        for t in _quadratic(a, b, c):
            p = point(t)
            ok = (p[:, 1] >= y0) & (p[:, 1] <= y1)
            take(np.where(ok, t, np.inf), np.stack([p[:, 0] / r, np.zeros(m), p[:, 2] / r], 1))
        if caps:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (y1 - o[:, 1]) / d[:, 1]
            p = point(t)
            ok = p[:, 0] ** 2 + p[:, 2] ** 2 <= r * r
            take(np.where(ok, t, np.inf), np.array([0.0, 1.0, 0.0]))

    def sphere(r, cy):
        oc = o - np.array([0.0, cy, 0.0])
        for t in _quadratic(np.sum(d * d, 1), np.sum(oc * d, 1), np.sum(oc * oc, 1) - r * r):
            p = point(t)
            take(t, (p - np.array([0.0, cy, 0.0])) / r)

    if shape == 1:  # cylinder, radius 0.5, height 1
        vertical_cylinder(0.5 * scale, 0.0, 1.0 * scale, caps=True)
    elif shape == 2:  # sphere, radius 0.55, resting on the floor
        sphere(0.55 * scale, 0.55 * scale)
    else:  # capsule, radius 0.4, total height 1.2, standing upright
        r, top = 0.4 * scale, 1.2 * scale
        vertical_cylinder(r, r, top - r, caps=False)
        sphere(r, r)
        sphere(r, top - r)
    return best, normal


def _bounding_radius(shape: int, scale: float) -> tuple[np.ndarray, float]:
    """Centre and radius of a sphere that contains the object."""
    h = {0: 1.0, 1: 1.0, 2: 1.1, 3: 1.2}[shape] * scale
    half_w = {0: 0.5 * np.sqrt(2), 1: 0.5, 2: 0.55, 3: 0.4}[shape] * scale
    return np.array([0.0, h / 2, 0.0]), float(np.hypot(h / 2, half_w)) + 1e-3


def _near(o: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Rays (origins o, unit directions d; either may be one vector) that pass within
    ``radius`` of ``centre`` ahead of their origin, or start inside that sphere."""
    oc = centre - o
    along = np.einsum("...i,...i->...", oc, d)
    occ = np.einsum("...i,...i->...", oc, oc)
    along = np.maximum(along, 0)
    return occ - along * along <= radius * radius


def _background(orientation: int):
    """Per-orientation ray casting of the empty room: ray origin and directions, hit distance,
    hit points, which plane (0 floor, 1/2 walls) and unshadowed Lambert shading."""
    o, d = _camera_rays(float(GRID.values[5][orientation]))
    d = d.reshape(-1, 3)
    t, which = _hit_planes(o, d)
    p = o + t[:, None] * d
    normals = np.stack([n for n, _ in _room_planes()])[which]
    lambert = np.maximum(normals @ _LIGHT, 0.0)
    return o, d, t, p, which, lambert


def _maps(scale: int, shape: int, background) -> np.ndarray:
    """The three shading maps (floor, wall, object) of one (scale, shape) seen from one
    orientation (its ``_background``), float32 (3, 64, 64) in [0, 1]: a pixel's colour is
    sum_r maps[r] * rgb_r."""
    o, d, t_bg, p_bg, which, lambert = background
    s = float(GRID.values[3][scale])
    centre, radius = _bounding_radius(shape, s)
    n = len(d)
    # primary rays against the object (only those that pass near it)
    t_obj = np.full(n, np.inf)
    n_obj = np.zeros((n, 3))
    near = _near(o, d, centre, radius)
    t_obj[near], n_obj[near] = _hit_object(shape, s, o, d[near])
    on_obj = t_obj < t_bg
    # shadow rays from the room towards the light (only those that pass near the object)
    lit = np.ones(n)
    cand = ~on_obj & _near(p_bg, _LIGHT, centre, radius)
    if cand.any():
        ts, _ = _hit_object(shape, s, p_bg[cand] + _EPS * _LIGHT, np.broadcast_to(_LIGHT, (int(cand.sum()), 3)).copy())
        lit[cand] = np.where(np.isfinite(ts), 0.0, 1.0)
    room = _AMBIENT + (1 - _AMBIENT) * lambert * lit
    obj = _AMBIENT + (1 - _AMBIENT) * np.maximum(n_obj @ _LIGHT, 0.0)
    layers = np.stack([
        np.where(~on_obj & (which == 0), room, 0.0),
        np.where(~on_obj & (which > 0), room, 0.0),
        np.where(on_obj, obj, 0.0),
    ])
    k = _SUPER
    maps = layers.reshape(3, SIZE, k, SIZE, k).mean(axis=(2, 4)).astype(np.float32)
    maps.setflags(write=False)
    return maps


#: shading maps computed so far in this process, by (scale, shape, orientation): 48 kB each
_MAPS: dict[tuple[int, int, int], np.ndarray] = {}


def shading_maps(keys) -> list[np.ndarray]:
    """Shading maps for (scale, shape, orientation) class triples, computed once per process
    (grouped by orientation: the empty room is ray-cast once per view)."""
    keys = [tuple(int(v) for v in k) for k in keys]
    todo = sorted(set(keys) - set(_MAPS), key=lambda k: (k[2], k[0], k[1]))
    for o in sorted({k[2] for k in todo}):
        bg = _background(o)
        for sc, sh, _ in (k for k in todo if k[2] == o):
            _MAPS[sc, sh, o] = _maps(sc, sh, bg)
    return [_MAPS[k] for k in keys]


def shading_bank(progress: bool = False) -> np.ndarray:
    """All 480 shading-map triples, float32 (8, 4, 15, 3, 64, 64) in (scale, shape,
    orientation) order, so ``bank.reshape(480, 3, 64, 64)[k]`` is image block offset k."""
    from tqdm.auto import tqdm

    bank = np.empty((8, 4, 15, 3, SIZE, SIZE), dtype=np.float32)
    for o in tqdm(range(15), desc="3D Shapes: ray casting", disable=not progress, unit="view"):
        keys = [(sc, sh, o) for sc in range(8) for sh in range(4)]
        for (sc, sh, _), m in zip(keys, shading_maps(keys)):
            bank[sc, sh, o] = m
    return bank


# -- composition ------------------------------------------------------------------------------

def _compose(maps: np.ndarray, floor_rgb: np.ndarray, wall_rgb: np.ndarray, obj_rgb: np.ndarray) -> np.ndarray:
    """uint8 images from shading maps (..., 3, H, W) and colours (..., 3) in 0..255. The
    arithmetic (float32, this order) is the one ``render_all`` uses, so both agree exactly."""
    f = maps[..., 0:1, :, :] * floor_rgb[..., :, None, None]
    w = maps[..., 1:2, :, :] * wall_rgb[..., :, None, None]
    ob = maps[..., 2:3, :, :] * obj_rgb[..., :, None, None]
    x = (f + w) + ob
    return np.floor(x + np.float32(0.5)).clip(0, 255).astype(np.uint8)


def render(classes: np.ndarray) -> np.ndarray:
    """Images (N, 3, 64, 64) uint8 for rows of factor classes (N, 6)."""
    classes = GRID.validate_classes(classes)
    maps = np.stack(shading_maps(classes[:, 3:])) if len(classes) else np.zeros((0, 3, SIZE, SIZE), np.float32)
    return _compose(maps, PALETTE[classes[:, 0]], PALETTE[classes[:, 1]], PALETTE[classes[:, 2]])


def render_into(out: np.ndarray, floors=range(10), walls=range(10), objects=range(10), progress: bool = False,
                bank: np.ndarray | None = None) -> np.ndarray:
    """Fill ``out`` (len(floors)*len(walls)*len(objects)*480, 3, 64, 64) uint8 with the images
    of the given hue classes, in official index order (the whole grid by default).

    The room (floor + walls) part of a block of 480 images is computed once per (floor, wall);
    each object colour then only touches the pixels the object covers.
    """
    from tqdm.auto import tqdm

    bank = shading_bank() if bank is None else bank
    maps = bank.reshape(BLOCK, 3, SIZE * SIZE)
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
            # the same float32 operations, in the same order, as _compose: (floor + wall) + object
            np.multiply(maps[:, 0:1], PALETTE[f][:, None], out=room)
            np.multiply(maps[:, 1:2], PALETTE[w][:, None], out=tmp)
            room += tmp
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
    from tqdm.auto import tqdm

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

def read_h5(path: str | Path, grid: FactorGrid = GRID, progress: bool = True, chunk: int = 8000) -> np.ndarray:
    """images as (N, 3, 64, 64) uint8 from an official-format .h5 (``images`` (N, 64, 64, 3)
    uint8, ``labels`` (N, 6) float), checked for keys, shapes, dtypes and labels that follow
    ``grid`` in its index order. Read in chunks (the official file: 5.9 GB in memory)."""
    import h5py
    from tqdm.auto import tqdm

    path = Path(path)
    if not path.is_file():
        raise UserError(f"3D Shapes file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise UserError(f"{path}: not a readable HDF5 file ({type(e).__name__}: {e})") from None
    n = len(grid)
    with f:
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
        out = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
        try:
            for s in tqdm(range(0, n, chunk), desc="3D Shapes: reading", disable=not progress, unit="chunk"):
                out[s : s + chunk] = images[s : s + chunk].transpose(0, 3, 1, 2)
        except Exception as e:
            raise UserError(f"{path}: cannot read 'images' ({type(e).__name__}: {e}); is the file truncated?") from None
    return out


def load_official(path: str | Path, progress: bool = True) -> np.ndarray:
    """The official ``3dshapes.h5`` as (480000, 3, 64, 64) uint8."""
    return read_h5(path, GRID, progress=progress)


def load(path: str | Path | None = None, cache: str | Path | None = None, progress: bool = True) -> ImageData:
    """3D Shapes as an ImageData: the official file when ``path`` is given, else procedural
    (generated once into the cache, then memory-mapped)."""
    extra = {}
    if path is not None:
        imgs, source = load_official(path, progress=progress), str(path)
        extra["official_file"] = identify("shapes3d", path, cache, progress)  # MD5 vs the published file
    else:
        cpath = generate(cache, progress=progress)
        imgs, source = np.load(cpath, mmap_mode="r"), f"procedural ({cpath})"
    return ImageData("shapes3d", as_uint8_tensor(imgs), GRID, scale=1.0 / 255.0,
                     info={"source": source, "metric_factors": list(FACTORS), **extra})
