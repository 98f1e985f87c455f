"""dSprites ("2D Shapes", paper §5; paper_spec §5.1): a procedural renderer of the full official
grid and a loader for the official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

Geometry of the renderer (the official generator is not public; chosen to look like it):
- 64x64 binary images, row 0 at the top; a white sprite on black.
- posX / posY in linspace(0, 1, 32) move the sprite centre in whole-pixel steps:
  centre = 16 + 31·pos pixels from the left / top edge (16 .. 47), so every sprite stays inside.
- scale in linspace(0.5, 1, 6) multiplies the sprite size; at scale 1 the square's side is 19.2
  px (0.3 of the image), the ellipse's axes 22 x 11 px, the heart about 19 px wide.
- orientation in linspace(0, 2π, 40) rotates the sprite counter-clockwise on screen (0 and 2π
  coincide, as in the official data; the square repeats every π/2 and the ellipse every π).
- Pixels are 4x4-supersampled and set where at least half of the pixel is covered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from factorvae.data.grid import FactorGrid
from factorvae.data.store import ImageData, as_uint8_tensor, atomic_save_npy, cache_dir, check_npz_key, load_cached_npy
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
#: factors with more than one value: what metrics score (spec §5.1: drop the constant colour)
METRIC_FACTORS = ("shape", "scale", "orientation", "posX", "posY")
RENDER_VERSION = 1
PATCH = 32  # sprites are drawn in a 32x32 patch whose centre is at pixel-edge (16, 16)
_SUPER = 4


def _inside(shape: int, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Whether points (u right, v up; pixels, shape frame) lie inside the sprite."""
    if shape == 0:  # square, side 19.2 px at scale 1
        h = 9.6 * scale
        return (np.abs(u) <= h) & (np.abs(v) <= h)
    if shape == 1:  # ellipse, semi-axes 11 x 5.5 px at scale 1
        return (u / (11.0 * scale)) ** 2 + (v / (5.5 * scale)) ** 2 <= 1.0
    # heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, point down, ~2.3 units wide -> 19 px at scale 1
    k = 8.4 * scale
    x, y = u / k, v / k + 0.1  # centre the heart's bounding box
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


def sprite_bank() -> np.ndarray:
    """All 3·6·40 sprites, uint8 {0,1}, shape (3, 6, 40, 32, 32), centred in their patch."""
    offs = (np.arange(PATCH * _SUPER) + 0.5) / _SUPER - PATCH / 2  # sub-pixel centres
    col, row = np.meshgrid(offs, offs)  # col -> x right, row -> y down
    bank = np.zeros((3, 6, 40, PATCH, PATCH), dtype=np.uint8)
    for o, theta in enumerate(GRID.values[3]):
        # rotate the screen point by -theta to get shape coordinates (v points up on screen)
        c, s = np.cos(theta), np.sin(theta)
        x, y = col, -row
        u, v = c * x + s * y, -s * x + c * y
        for sh in range(3):
            for sc, scale in enumerate(GRID.values[2]):
                cover = _inside(sh, u, v, scale).reshape(PATCH, _SUPER, PATCH, _SUPER).mean(axis=(1, 3))
                bank[sh, sc, o] = cover >= 0.5
    return bank


def render(classes: np.ndarray, bank: np.ndarray | None = None) -> np.ndarray:
    """Images (N, 64, 64) uint8 {0,1} for rows of factor classes (N, 6)."""
    classes = GRID.validate_classes(classes)
    bank = sprite_bank() if bank is None else bank
    n = len(classes)
    out = np.zeros((n, 64, 64), dtype=np.uint8)
    patches = bank[classes[:, 1], classes[:, 2], classes[:, 3]]  # (N, 32, 32)
    ar = np.arange(PATCH)
    rows = classes[:, 5][:, None] + ar  # posY -> rows from the top
    cols = classes[:, 4][:, None] + ar  # posX -> columns from the left
    out[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = patches
    return out


def render_all(progress: bool = False) -> np.ndarray:
    """The whole grid (737,280, 64, 64) in official index order, one block copy per sprite.

    For a sprite P, image (posX=i, posY=j) is a 64x64 window of a padded canvas Q, so the
    1024 positions of one sprite are a strided view of Q copied in one go.
    """
    from tqdm.auto import tqdm

    bank = sprite_bank()
    out = np.zeros((len(GRID), 64, 64), dtype=np.uint8)
    blocks = out.reshape(3, 6, 40, 32, 32, 64, 64)
    q = np.zeros((95, 95), dtype=np.uint8)
    for sh in tqdm(range(3), desc="dSprites", disable=not progress, unit="shape"):
        for sc in range(6):
            for o in range(40):
                q[31:63, 31:63] = bank[sh, sc, o]
                win = np.lib.stride_tricks.sliding_window_view(q, (64, 64))  # win[u, v] = q[u:u+64, v:v+64]
                # image(i, j)[r, c] = P[r - j, c - i] = q[31 - j + r, 31 - i + c] = win[31 - j, 31 - i]
                blocks[sh, sc, o] = win[::-1, ::-1].transpose(1, 0, 2, 3)
    return out


def _cache_meta() -> dict:
    return {"dataset": "dsprites", "render_version": RENDER_VERSION, "shape": [len(GRID), 64, 64]}


def cache_path(cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / f"dsprites-v{RENDER_VERSION}.npy"


def generate(cache: str | Path | None = None, progress: bool = True, force: bool = False) -> Path:
    """Render the grid into the cache unless a valid copy is there; returns its path."""
    path = cache_path(cache)
    if not force and _load_cache(path) is not None:
        return path
    atomic_save_npy(path, render_all(progress=progress), _cache_meta())
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
    """dSprites as an ImageData: the official file when ``path`` is given, else procedural."""
    if path is not None:
        imgs, source = load_official(path), str(path)
    else:
        cpath = generate(cache, progress=progress)
        # Memory-mapped: read-only pages shared by every process on the machine (sweep workers).
        imgs, source = np.load(cpath, mmap_mode="r"), f"procedural ({cpath})"
    data = as_uint8_tensor(imgs).unsqueeze(1)
    return ImageData("dsprites", data, GRID, scale=1.0, info={"source": source, "metric_factors": list(METRIC_FACTORS)})
