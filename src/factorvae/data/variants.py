"""Colour-dSprites and noisy-dSprites (disentanglement_lib's ``color_dsprites`` and
``noisy_dsprites``, used by Locatello et al. 2019).

disentanglement_lib draws the nuisance afresh for every observation:

- colour-dSprites: the binary sprite times one random RGB colour, each channel uniform in
  [0.5, 1];
- noisy-dSprites: the white sprite on a background of uniform [0, 1) noise, independent per
  pixel and channel.

Here the nuisance is a fixed, seeded function of the image's grid index instead, so a data set
is a finite, reproducible set of 737,280 images (the same index gives the same image on every
run and machine, on CPU and GPU) and nothing has to be stored beyond dSprites' binary
sprites: colour and noise are drawn from a counter-based hash of (seed, index, pixel) when a
batch is gathered. Colour bytes are 128..255 (0.50..1.0), noise bytes 0..255.

The nuisance is *not* a factor: the FactorGrid is dSprites' own (colour class constant), so
metrics score the same five factors as on dSprites, as in disentanglement_lib.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from PIL import Image, UnidentifiedImageError

from factorvae.data import dsprites
from factorvae.data.indexed import NUISANCE_SEED, IndexedData, nuisance_order
from factorvae.data.store import ImageData
from factorvae.errors import UserError

GRID = dsprites.GRID
METRIC_FACTORS = dsprites.METRIC_FACTORS
#: the variants composed from the index alone (scream-dSprites also needs its background image)
KINDS = ("color", "noisy")
#: dlib shrinks the scream image to fit 350 x 274 (``thumbnail``) before cropping 64 x 64 patches
SCREAM_BOX = (350, 274)
#: default seed of the nuisance; a different seed is a different (equally valid) data set
SEED = 0
_MASK = 0xFFFFFFFF


def _mix(x):
    """A 32-bit integer hash (xor-shift-multiply), for numpy int64 arrays and torch int64
    tensors alike. Multipliers are below 2^31, so no product leaves int64."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _MASK
    x = x ^ (x >> 16)
    return x


def nuisance_u32(index, counter, seed: int = SEED):
    """Uniform 32-bit integers, a fixed function of (seed, image index, counter). ``index`` and
    ``counter`` broadcast; both int64 (numpy or torch)."""
    h = _mix(index + _mix(int(seed) + 0x3C6EF372))
    return _mix(h + counter * 0x2545F491)


def nuisance_bytes(index, counter, seed: int = SEED):
    """Uniform bytes 0..255 (the top byte of ``nuisance_u32``)."""
    return (nuisance_u32(index, counter, seed) >> 24) & 255


def compose(sprites, index, kind: str, seed: int = SEED, background=None):
    """RGB uint8 images (B, 3, H, W) from binary sprites (B, 1, H, W) {0, 1} and their grid
    indices (B,). Works on numpy arrays and torch tensors (any device). ``scream`` needs
    ``background``, the (3, BH, BW) uint8 image patches are cut from (torch only)."""
    is_torch = torch.is_tensor(sprites)
    b, _, h, w = sprites.shape
    if is_torch:
        index = torch.as_tensor(index, dtype=torch.int64, device=sprites.device).reshape(b, 1, 1, 1)
        ar = lambda n: torch.arange(n, device=sprites.device, dtype=torch.int64)  # noqa: E731
        to_u8 = lambda x: x.to(torch.uint8)  # noqa: E731
    else:
        index = np.asarray(index, dtype=np.int64).reshape(b, 1, 1, 1)
        ar = lambda n: np.arange(n, dtype=np.int64)  # noqa: E731
        to_u8 = lambda x: x.astype(np.uint8)  # noqa: E731
    if kind == "color":
        colour = 128 + (nuisance_bytes(index, ar(3).reshape(1, 3, 1, 1), seed) >> 1)  # (B, 3, 1, 1), 128..255
        return to_u8(sprites * colour)
    if kind == "noisy":
        counter = ar(3 * h * w).reshape(1, 3, h, w) + (1 << 20)
        noise = nuisance_bytes(index, counter, seed)
        return to_u8(noise + (255 - noise) * sprites)  # the sprite is white, the rest noise
    if kind == "scream":
        if not is_torch or background is None:
            raise ValueError("scream-dSprites composes torch tensors over a background image")
        # dlib: a random 64x64 patch, (patch + u) / 2 with u uniform per channel, the sprite inverted
        _, bh, bw = background.shape
        idx = index.reshape(b)
        oy = nuisance_u32(idx, 1 << 24, seed) % (bh - h)
        ox = nuisance_u32(idx, (1 << 24) + 1, seed) % (bw - w)
        shift = nuisance_bytes(index, ar(3).reshape(1, 3, 1, 1) + (1 << 25), seed)  # (B, 3, 1, 1)
        rows, cols = oy[:, None] + ar(h), ox[:, None] + ar(w)  # (B, h), (B, w)
        patch = background[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3).to(torch.int64)
        bg = (patch + shift) // 2
        return to_u8(bg + (255 - 2 * bg) * sprites)
    raise ValueError(f"unknown dSprites variant {kind!r}; choose one of {KINDS}")


@dataclass
class DspritesVariantData(ImageData):
    """dSprites' binary sprites, ``data`` (N, 1, 64, 64) {0, 1}, seen as RGB images composed
    per batch: ``images`` and ``sample_batch`` return (B, 3, 64, 64) in [0, 1]."""

    kind: str = "color"
    seed: int = SEED
    #: scream: the (3, BH, BW) uint8 background image
    background: torch.Tensor | None = None

    @property
    def channels(self) -> int:
        return 3

    def uint8(self, indices) -> torch.Tensor:
        """The uint8 RGB images (B, 3, 64, 64) of flat indices."""
        idx = torch.as_tensor(np.asarray(indices) if not torch.is_tensor(indices) else indices, dtype=torch.long)
        idx = idx.to(self.data.device)
        return compose(self.data[idx], idx, self.kind, self.seed, self.background)

    def to(self, device) -> "DspritesVariantData":
        super().to(device)
        if self.background is not None:
            self.background = self.background.to(device)
        return self

    def images(self, indices) -> torch.Tensor:
        return self.uint8(indices).float().mul_(self.scale)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self), (batch_size,), generator=generator, device=generator.device)
        return self.images(idx)


def render(classes: np.ndarray, kind: str, seed: int = SEED) -> np.ndarray:
    """Images (N, 3, 64, 64) uint8 for rows of dSprites factor classes (N, 6)."""
    classes = GRID.validate_classes(classes)
    return compose(dsprites.render(classes)[:, None], GRID.index(classes), kind, seed)


def load(kind: str, path: str | Path | None = None, cache: str | Path | None = None, progress: bool = True) -> ImageData:
    """Colour- or noisy-dSprites over dSprites' sprites (the official npz when ``path`` is
    given, else the procedural cache)."""
    base = dsprites.load(path=path, cache=cache, progress=progress)
    info = dict(base.info, variant=kind, nuisance_seed=SEED)
    return DspritesVariantData(f"{kind}_dsprites", base.data, GRID, scale=1.0 / 255.0, info=info, kind=kind, seed=SEED)


def read_scream(path) -> torch.Tensor:
    """The scream-dSprites background: the image at ``path`` as RGB, shrunk to fit 350 x 274
    as dlib does (``thumbnail``), as a (3, H, W) uint8 tensor."""
    if path is None:
        raise UserError("scream_dsprites needs data.scream_path: an image to cut backgrounds from (dlib uses "
                        "Munch's The Scream, scream.jpg, e.g. The_Scream.jpg from Wikimedia Commons); "
                        "--set data.scream_path=FILE")
    try:
        with Image.open(Path(path).expanduser()) as im:
            im = im.convert("RGB")
            im.thumbnail(SCREAM_BOX)
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f"data.scream_path {path}: not a readable image ({type(e).__name__}: {e})") from None
    if min(arr.shape[:2]) <= 64:
        raise UserError(f"data.scream_path {path}: {arr.shape[1]}x{arr.shape[0]} after fitting it into 350x274; "
                        "64x64 patches need more than 64 pixels each way")
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def load_scream(path=None, cache=None, progress: bool = True, scream_path=None) -> ImageData:
    """scream-dSprites (dlib's ``scream_dsprites``): dSprites' sprites on a 64x64 patch of the
    image at ``scream_path`` shifted by a random colour, the sprite's pixels inverted; patch
    and colour fixed per index like the other variants."""
    background = read_scream(scream_path)
    base = dsprites.load(path=path, cache=cache, progress=progress)
    info = dict(base.info, variant="scream", nuisance_seed=SEED, scream_path=str(scream_path))
    return DspritesVariantData("scream_dsprites", base.data, GRID, scale=1.0 / 255.0, info=info, kind="scream",
                               seed=SEED, background=background)


def load_color(path=None, cache=None, progress: bool = True) -> ImageData:
    return load("color", path, cache, progress)


def load_noisy(path=None, cache=None, progress: bool = True) -> ImageData:
    return load("noisy", path, cache, progress)


def render_color(classes: np.ndarray) -> np.ndarray:
    return render(classes, "color")


def render_noisy(classes: np.ndarray) -> np.ndarray:
    return render(classes, "noisy")


#: dSprites-noshape (dlib's ``dsprites_noshape``: latent factors 2..5): shape is a nuisance
NOSHAPE_LATENT = ("scale", "orientation", "posX", "posY")
NOSHAPE_GRID = GRID.subset(list(NOSHAPE_LATENT))[0]


@cache
def noshape_order() -> np.ndarray:
    """dSprites index of each dsprites_noshape index (computed on first use: 0.1 s)."""
    _, order = nuisance_order(GRID, NOSHAPE_LATENT, np.random.default_rng(NUISANCE_SEED))
    order.setflags(write=False)
    return order


def load_noshape(path=None, cache=None, progress: bool = True) -> ImageData:
    """dSprites scored on scale, orientation, posX, posY; each latent point's image has a
    shape drawn uniformly once (``data/indexed.py``); training sees all 737,280 images."""
    base = dsprites.load(path=path, cache=cache, progress=progress)
    info = dict(base.info, metric_factors=list(NOSHAPE_LATENT), nuisance=["shape"])
    return IndexedData("dsprites_noshape", base.data, NOSHAPE_GRID, scale=base.scale, info=info,
                       rows=torch.from_numpy(noshape_order().copy()))


def render_noshape(classes: np.ndarray) -> np.ndarray:
    """Images (N, 1, 64, 64) uint8 0/255 of latent classes (N, 4), with each point's shape."""
    idx = NOSHAPE_GRID.index(classes)
    return dsprites.render(GRID.classes(noshape_order()[idx]))[:, None] * 255
