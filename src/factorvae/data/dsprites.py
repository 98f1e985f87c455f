"""dSprites ("2D Shapes", paper §5): a procedural renderer of the full official grid and a loader
for the official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

The official generator is not public. The geometry below was fitted to 12 official images
(``tests/fixtures/dsprites_official_12.npz``) by searching these constants for the fewest
differing pixels; with them all 12 are rendered pixel-identical (IoU 1.0). Coordinates are in
pixels of the 64x64 image, pixel (row r, column c) covering [c, c+1] x [r, r+1], row 0 at top:
- A pixel is white when its centre (c + 0.5, r + 0.5) lies inside the sprite: point
  sampling, no supersampling; images are binary.
- Centre of the sprite: x = 15.991 + 32.018·posX, y = 16.025 + 32.005·posY (posX, posY in
  linspace(0, 1, 32)). Steps are 32/31 px, so the sprite's sub-pixel phase changes with every
  position and each of the 737,280 images is rendered on its own (no shifted copies).
- Orientation rotates the sprite counter-clockwise on screen by the angle (0 and 2π coincide;
  the square repeats every π/2, the ellipse every π).
- Sizes at scale 1, multiplied by scale in linspace(0.5, 1, 6):
  square half-side 9.615 px (side 19.2 ≈ 0.3 of the image);
  ellipse semi-axes 12.8 x 7.2 px (long axis horizontal at orientation 0; area 289.5 px);
  heart: the classic curve x = sin³t, y = (13 cos t − 5 cos 2t − 2 cos 3t − cos 4t)/16,
  point down at orientation 0, scaled by 10.629 px vertically and 9.595 px horizontally
  (aspect 0.9027), its origin 1.45 px above the sprite centre: curve coordinates
  x = u/9.595 + 0.0019, y = v/10.629 − 0.1365 for a point (u right, v up) from the centre.

What 12 images cannot pin down: the constants are known only to within the range that keeps
all 12 identical (about ±0.01 px for the centre, ±0.02–0.05 px for sizes). The round values
centre 16 + 32·pos and square half-side 9.6 (with the heart centred, hx = 0) each change 1–3 of
the 12 images by a pixel (all at once: 3 pixels in 3 images, IoU >= 0.993), so with centre
sampling the official generator does not use exactly these; the ellipse's round 12.8 x 7.2 fits
exactly. The heart curve is the best of three families tried (the classic parametric heart,
the algebraic heart (x²+y²−1)³ = x²y³, a square with two half-discs: 7, 30 and 30 differing
pixels on the 4 official hearts before the joint fit); its outline between the official
hearts' pixels is a fit. Other images of the official file may differ from ours by a few
boundary pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from factorvae.data.grid import FactorGrid
from factorvae.data.official import identify
from factorvae.data.store import (ImageData, as_uint8_tensor, cache_dir, check_npz_key, load_cached_npy,
                                  write_npy_blocks)
from factorvae.errors import UserError

OFFICIAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
SHAPES = ("square", "ellipse", "heart")
GRID = FactorGrid(
    names=("color", "shape", "scale", "orientation", "posX", "posY"),
    sizes=(1, 3, 6, 40, 32, 32),
    values=(
        (1.0,),
        (1.0, 2.0, 3.0),
        tuple(np.linspace(0.5, 1.0, 6)),
        tuple(np.linspace(0.0, 2 * np.pi, 40)),
        tuple(np.linspace(0.0, 1.0, 32)),
        tuple(np.linspace(0.0, 1.0, 32)),
    ),
)
#: factors with more than one value: what metrics score (drop the constant colour)
METRIC_FACTORS = ("shape", "scale", "orientation", "posX", "posY")
RENDER_VERSION = 2

# Fitted geometry (module docstring), pixels at scale 1.
CENTRE = (15.99144, 16.02518)  # sprite centre (x, y) at posX = posY = 0
SPAN = (32.01809, 32.00538)  # how far the centre moves from pos 0 to pos 1
SQUARE_HALF = 9.61538
ELLIPSE_AXES = (12.8, 7.2)  # semi-axes along the sprite's own x and y (0.2 and 0.1125 of the image)
HEART_SIZE = 10.62907  # vertical unit of the heart curve
HEART_ASPECT = 0.90273  # horizontal unit / vertical unit
HEART_SHIFT = (-0.00188, 0.13654)  # heart-curve origin relative to the sprite centre, in curve units
#: farthest sprite pixel from the centre at scale 1 (the square's corner); sprites are drawn in a
#: window of 2·half pixels around floor(centre), half = ceil(RADIUS·scale) + 1 (16 to 30 px)
RADIUS = SQUARE_HALF * np.sqrt(2)

_SCALES = np.asarray(GRID.values[2])
# Tables, so that a single image and the whole grid use bit-identical inputs.
_COS = np.cos(np.asarray(GRID.values[3]))
_SIN = np.sin(np.asarray(GRID.values[3]))


def _half(scale: int) -> int:
    return int(np.ceil(RADIUS * _SCALES[scale])) + 1


def _axis(axis: int, pos: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """(window origins (N,), offsets (N, 2·half) of the window's pixel centres from the sprite
    centre) for position classes ``pos`` along x (axis 0) or y (axis 1). An offset does not
    depend on ``half``: a pixel gets the same value in every window."""
    c = CENTRE[axis] + SPAN[axis] * np.asarray(GRID.values[4 + axis])[pos]
    origin = np.floor(c).astype(np.int64) - half
    return origin, (origin[:, None] + 0.5 + np.arange(2 * half)) - c[:, None]


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside the curve x = sin³t, y = (13 cos t − 5 cos 2t − 2 cos 3t − cos 4t)/16 (point down).

    Each vertical line |x| <= 1 crosses it twice, at cos t = ±C with C = sqrt(1 − |x|^(2/3)),
    where y = Y(cos t) (the cosines of multiples of t written as powers of cos t)."""
    a = np.abs(x)
    cc = np.sqrt(np.maximum(1.0 - np.cbrt(np.minimum(a, 1.0)) ** 2, 0.0))

    def curve_y(c):
        return (((-8.0 * c - 8.0) * c - 2.0) * c + 19.0) * c / 16.0 + 0.25

    return (a <= 1.0) & (y <= curve_y(cc)) & (y >= curve_y(-cc))


def _inside(shape: int, u: np.ndarray, v: np.ndarray, scale) -> np.ndarray:
    """Whether points (u right, v up; pixels, sprite frame) lie inside the sprite."""
    if shape == 0:
        h = SQUARE_HALF * scale
        return (np.abs(u) <= h) & (np.abs(v) <= h)
    if shape == 1:
        return (u / (ELLIPSE_AXES[0] * scale)) ** 2 + (v / (ELLIPSE_AXES[1] * scale)) ** 2 <= 1.0
    k = HEART_SIZE * scale
    return _heart(u / (k * HEART_ASPECT) - HEART_SHIFT[0], v / k - HEART_SHIFT[1])


def _rotate(orient, dx, dy):
    """Sprite-frame (u, v) of screen offsets (dx right, dy down): the sprite is turned
    counter-clockwise on screen by the orientation, so points are turned back by it."""
    c, s = _COS[orient], _SIN[orient]
    return c * dx - s * dy, -s * dx - c * dy


def render(classes: np.ndarray) -> np.ndarray:
    """Images (N, 64, 64) uint8 {0,1} for rows of factor classes (N, 6); pixel-identical to the
    same rows of ``render_all``."""
    classes = GRID.validate_classes(classes)
    out = np.zeros((len(classes), 64, 64), dtype=np.uint8)
    for sh in range(3):
        for sc in range(6):
            sel = np.nonzero((classes[:, 1] == sh) & (classes[:, 2] == sc))[0]
            for s in range(0, len(sel), 2048):  # bounded temporaries
                part = sel[s : s + 2048]
                cl = classes[part]
                h = _half(sc)
                ox, dx = _axis(0, cl[:, 4], h)
                oy, dy = _axis(1, cl[:, 5], h)
                u, v = _rotate(cl[:, 3][:, None, None], dx[:, None, :], dy[:, :, None])  # (n, row, col)
                ar = np.arange(2 * h)
                out[part[:, None, None], (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]] = \
                    _inside(sh, u, v, _SCALES[sc])
    return out


def render_sprite(shape: int, scale: int, orient: int) -> np.ndarray:
    """The 1,024 images (posX, posY) of one sprite, (32, 32, 64, 64) uint8 {0,1}: one block
    of the grid in official index order."""
    h = _half(scale)
    ar = np.arange(32)
    ox, dx = _axis(0, ar, h)
    oy, dy = _axis(1, ar, h)
    u, v = _rotate(orient, dx[:, None, None, :], dy[None, :, :, None])  # (posX, posY, row, col)
    win = _inside(shape, u, v, _SCALES[scale])
    out = np.zeros((32, 32, 64, 64), dtype=np.uint8)
    for i in range(32):  # slices: cheaper than one fancy-indexed scatter
        for j in range(32):
            out[i, j, oy[j] : oy[j] + 2 * h, ox[i] : ox[i] + 2 * h] = win[i, j]
    return out


def sprite_blocks(progress: bool = False):
    """The grid in official index order as 720 consecutive blocks of 1,024 images (4 MB each)."""
    with tqdm(total=len(GRID), desc="dSprites", disable=not progress, unit="img", unit_scale=True) as bar:
        for sh in range(3):
            for sc in range(6):
                for o in range(40):
                    yield render_sprite(sh, sc, o).reshape(1024, 64, 64)
                    bar.update(1024)


def render_all(progress: bool = False) -> np.ndarray:
    """The whole grid (737,280, 64, 64) in memory (3 GB); ``generate`` streams it to disk instead."""
    return np.concatenate(list(sprite_blocks(progress)))


def _cache_meta() -> dict:
    return {"dataset": "dsprites", "render_version": RENDER_VERSION, "shape": [len(GRID), 64, 64]}


def cache_path(cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / f"dsprites-v{RENDER_VERSION}.npy"


def generate(cache: str | Path | None = None, progress: bool = True, force: bool = False) -> Path:
    """Render the grid into the cache unless a valid copy is there; returns its path. Written
    sprite by sprite (1,024 images, 4 MB at a time), never holding the 3 GB grid in memory."""
    path = cache_path(cache)
    if not force and _load_cache(path) is not None:
        return path
    write_npy_blocks(path, (len(GRID), 64, 64), sprite_blocks(progress), _cache_meta())
    return path


def _load_cache(path: Path) -> np.ndarray | None:
    arr = load_cached_npy(path, _cache_meta(), (len(GRID), 64, 64))
    if arr is None:
        return None
    # Spot-check content against the renderer: catches a cache overwritten by anything else.
    rng = np.random.default_rng(len(GRID))
    idx = np.sort(rng.choice(len(GRID), 256, replace=False))
    if not np.array_equal(np.asarray(arr[idx]), render(GRID.classes(idx))):
        return None
    return arr


def load_official(path: str | Path) -> np.ndarray:
    """imgs (737280, 64, 64) uint8 from the official npz, checked for keys, shapes, dtypes and
    consistency with the grid. The pickled ``metadata`` entry is never read (no unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dSprites file not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    with npz:
        n = len(GRID)
        classes = check_npz_key(npz, "latents_classes", path, (n, 6))
        if not np.issubdtype(classes.dtype, np.integer):
            raise UserError(f"{path}: 'latents_classes' must be integers, got {classes.dtype}")
        if not np.array_equal(classes, GRID.all_classes()):
            raise UserError(f"{path}: 'latents_classes' are not the official grid in official order")
        values = check_npz_key(npz, "latents_values", path, (n, 6))
        if not np.allclose(values[:, 1:], GRID.factor_values(classes)[:, 1:], atol=1e-6):
            raise UserError(f"{path}: 'latents_values' do not match the official factor values")
        imgs = check_npz_key(npz, "imgs", path, (n, 64, 64), np.uint8)
    if imgs[:: max(1, n // 4096)].max() > 1:
        raise UserError(f"{path}: 'imgs' must be binary (0/1) as in the official file")
    return imgs


def load(path: str | Path | None = None, cache: str | Path | None = None, progress: bool = True) -> ImageData:
    """dSprites as an ImageData: the official file when ``path`` is given (``info["official_file"]``
    says whether it is the published one, by MD5), else procedural."""
    info = {"metric_factors": list(METRIC_FACTORS)}
    if path is not None:
        imgs = load_official(path)
        info.update(source=str(path), official_file=identify("dsprites", path, cache, progress))
    else:
        cpath = generate(cache, progress=progress)
        # Memory-mapped: read-only pages shared by every process on the machine (sweep workers).
        imgs = np.load(cpath, mmap_mode="r")
        info.update(source=f"procedural ({cpath})")
    return ImageData("dsprites", as_uint8_tensor(imgs).unsqueeze(1), GRID, scale=1.0, info=info)
