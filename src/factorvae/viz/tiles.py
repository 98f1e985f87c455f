"""Image sheets: tensors or uint8 arrays to RGB tiles, rows of tiles with labels to their left,
written atomically as PNG. The one tiler of traversals, reconstructions, samples and
``factorvae data show``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from factorvae.io import atomic_write


def to_uint8(images) -> np.ndarray:
    """(N, C, H, W) float tensor in [0, 1] or uint8 array -> (N, H, W, 3) uint8."""
    if torch.is_tensor(images):
        images = images.detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy()
    x = np.transpose(np.asarray(images), (0, 2, 3, 1))
    return np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x


def tile(rows: list[np.ndarray], labels: list[str] | None = None, pad: int = 2, fill: int = 128,
         label_width: int | None = None, label_x: int = 2) -> Image.Image:
    """One image: each row (K, H, W, 3) uint8 left-aligned, its label (if any) to its left in a
    margin ``label_width`` wide (default: the widest label's)."""
    h, w = next(r for r in rows if len(r)).shape[1:3]
    left = 0
    if labels and any(labels):
        if label_width is None:
            measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
            label_width = int(max(measure.textlength(t) for t in labels)) + 8
        left = label_width
    ncol = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + pad) + pad, left + ncol * (w + pad) + pad, 3), fill, dtype=np.uint8)
    for r, row in enumerate(rows):
        y = pad + r * (h + pad)
        for c, img in enumerate(row):
            x = left + pad + c * (w + pad)
            canvas[y : y + h, x : x + w] = img
    img = Image.fromarray(canvas)
    if labels:
        draw = ImageDraw.Draw(img)
        for r, text in enumerate(labels[: len(rows)]):
            draw.text((label_x, pad + r * (h + pad) + h // 2 - 6), text, fill=(255, 255, 255))
    return img


def grid_image(images: np.ndarray, nrow: int, pad: int = 2, labels: list[str] | None = None) -> Image.Image:
    """Tile (N, H, W, 3) images row by row, ``nrow`` rows; optional label left of each row."""
    ncol = int(np.ceil(len(images) / nrow))
    return tile([images[r * ncol : (r + 1) * ncol] for r in range(nrow)], labels, pad, label_width=44)


def save_png(img: Image.Image, path: Path) -> Path:
    atomic_write(path, lambda f: img.save(f, format="PNG"))
    return path


def label_rows_right(img: Image.Image, rows: int, labels: list[str], pad: int = 2, fill: int = 128) -> Image.Image | None:
    """``img`` (a sheet of ``rows`` equal rows of tiles with ``pad`` pixels around them, as
    ``tile`` draws) with ``labels[r]`` in a margin right of row r; None when the image is not
    such a sheet."""
    height = img.height - pad
    if rows < 1 or len(labels) != rows or height % rows or height // rows <= pad:
        return None
    row_h = height // rows
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = int(max(measure.textlength(t) for t in labels)) + 10
    out = Image.new("RGB", (img.width + width, img.height), (fill, fill, fill))
    out.paste(img.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(labels):
        draw.text((img.width + 4, pad + r * row_h + (row_h - pad) // 2 - 6), text, fill=(255, 255, 255))
    return out
