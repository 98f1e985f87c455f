"""Folders of images without ground-truth factors: CelebA, 3D Chairs, 3D Faces (paper §5,
paper §5) or a user's own, read from ``--data-path DIR``.

- Every file under DIR (recursively, symlinked folders not followed) whose extension is a
  raster image format is read with Pillow, in sorted path order (deterministic). Other files
  are skipped as "not images"; files that fail to decode (corrupt, truncated, unsupported)
  are skipped as "unreadable". Both are counted, listed in ``ImageData.info`` and reported on
  stderr; they never stop the build. A folder with no readable image is an error.
- Each image: EXIF rotation applied, the largest centred square cropped, resized to 64x64 with
  a Lanczos filter (JPEGs are first decoded at a reduced scale when much larger than needed).
- Transparency (RGBA, LA, palette with a transparent colour) is composited on black, the
  background of the synthetic data sets. 16-bit and float greyscale is scaled to 8 bits.
- Channels: 3 (RGB), 1 (greyscale, ITU-R 601 luma), or auto: 1 when every image is greyscale
  (a greyscale mode, or RGB with three equal channels after resizing), else 3.
- The result is cached as uint8 (N, C, 64, 64) .npy keyed by a hash of the file list (paths
  relative to DIR, sizes, modification times) and the options; a changed folder is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from factorvae.data.store import ImageData, as_uint8_tensor, atomic_save_npy, cache_dir, load_cached_npy
from factorvae.errors import UserError
from factorvae.io import read_json

SIZE = 64
BUILD_VERSION = 1
IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jpe .jfif .bmp .dib .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .tga .qoi .avif .jp2 .j2k "
    ".ico .sgi .rgb .ras .pcx .dds".split()
)
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def _parse_channels(channels) -> int | None:
    """None (auto), 1 or 3."""
    if channels is None or (isinstance(channels, str) and channels.lower() == "auto"):
        return None
    try:
        c = int(channels)
    except (TypeError, ValueError):
        c = 0
    if c not in (1, 3):
        raise UserError(f"data.channels must be 1, 3 or auto, got {channels!r}")
    return c


def scan(root: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``root``, each sorted by relative path."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    key = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return sorted(images, key=key), sorted(others, key=key)


def _to_8bit_grey(im):
    a = np.asarray(im, dtype=np.float64)
    if im.mode.startswith("I;16"):
        a = a / 257.0
    elif a.size and a.max() > 255:
        a = a * (255.0 / a.max())
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _flatten(im):
    """An 'RGB' or 'L' image: transparency composited on black, high bit depths reduced."""
    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _to_8bit_grey(im)
    if mode in ("1", "L"):
        return im.convert("L")
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
        return out.convert("L") if mode in ("LA", "La") else out
    return im.convert("RGB")


def square_64(im, channels: int | None) -> np.ndarray:
    """One PIL image as the data sets store theirs: transparency on black, the largest centred
    square, 64x64 Lanczos, greyscale (channels 1) or RGB; uint8 (64, 64) or (64, 64, 3)."""
    im = _flatten(im)
    w, h = im.size
    m = min(w, h)
    box = ((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m)
    if m != w or m != h:
        im = im.crop(box)  # (resize's own box= would blend in pixels from outside the square)
    if im.size != (SIZE, SIZE):
        im = im.resize((SIZE, SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if channels == 1:
        im = im.convert("L")
    elif channels == 3 or channels is None:
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def as_model_input(images, channels: int) -> np.ndarray:
    """A user's images as a data set's: uint8 (N, channels, 64, 64). ``images``: a path (an
    image file or a folder of them, read as ``build`` reads a folder), a PIL image, a numpy array
    or torch tensor (uint8 0..255 or floats in [0, 1]; (H, W), (H, W, C), (C, H, W), (N, H, W),
    (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4), or a list of any of these."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise UserError("no images given")
        return np.concatenate([as_model_input(x, channels) for x in images])
    if isinstance(images, (str, os.PathLike)):
        path = Path(images).expanduser()
        if path.is_dir():
            files = scan(path)[0]
            if not files:
                raise UserError(f"{path}: no image files in this folder")
            return as_model_input(files, channels)
        if not path.is_file():
            raise UserError(f"{path}: no such image file or folder")
        try:
            return read_image(path, channels)[0][None]
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
            raise UserError(f"{path}: not a readable image ({type(e).__name__})") from None
    if isinstance(images, Image.Image):
        return _chw(square_64(ImageOps.exif_transpose(images), channels))[None]
    if hasattr(images, "detach") and hasattr(images, "cpu"):  # a torch tensor, without importing torch here
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise UserError(f"images must be paths, PIL images, numpy arrays or tensors, got {type(images).__name__}")
    return np.stack([_chw(square_64(Image.fromarray(a), channels)) for a in _hwc_list(images)])


def _chw(a: np.ndarray) -> np.ndarray:
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def _hwc_list(a: np.ndarray) -> list[np.ndarray]:
    """uint8 (H, W) or (H, W, C) images of an array in any of as_model_input's layouts."""
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.bool_):
            raise UserError(f"image arrays must be uint8 (0..255) or floats in [0, 1], got {a.dtype}")
        a = a.astype(np.float64)
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise UserError("float image arrays must hold values in [0, 1] (uint8 for 0..255)")
        a = np.rint(a * 255).astype(np.uint8)
    chans = (1, 3, 4)
    if a.ndim == 2:
        return [a]
    if a.ndim == 3:
        if a.shape[-1] in chans and a.shape[0] not in chans:
            return [_squeeze(a)]  # (H, W, C)
        if a.shape[0] in chans and a.shape[-1] not in chans:
            return [_squeeze(a.transpose(1, 2, 0))]  # (C, H, W)
        return list(a)  # (N, H, W)
    if a.ndim == 4:
        if a.shape[1] in chans:
            a = a.transpose(0, 2, 3, 1)  # (N, C, H, W)
        elif a.shape[-1] not in chans:
            raise UserError(f"cannot read images of shape {tuple(a.shape)}: channels (1, 3 or 4) must be axis 1 or last")
        return [_squeeze(x) for x in a]
    raise UserError(f"cannot read images of shape {tuple(a.shape)}: expected 2 to 4 dimensions")


def _squeeze(a: np.ndarray) -> np.ndarray:
    return a[..., 0] if a.shape[-1] == 1 else a


def read_image(path: Path, channels: int | None) -> tuple[np.ndarray, bool]:
    """(image (C, 64, 64) uint8, whether it is greyscale) of one file; C = channels, or 3 in
    auto mode. Raises on an unreadable file."""
    with Image.open(path) as im:
        grey_mode = im.mode in _GREY_MODES
        if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale while the short side stays >= 128
            w, h = im.size
            m = min(w, h)
            if m > 2 * 2 * SIZE:
                im.draft(im.mode, (max(1, w * 2 * SIZE // m), max(1, h * 2 * SIZE // m)))
        a = square_64(ImageOps.exif_transpose(im), channels)
    if a.ndim == 2:
        return a[None], True
    a = np.ascontiguousarray(a.transpose(2, 0, 1))
    return a, grey_mode or bool((a[0] == a[1]).all() and (a[1] == a[2]).all())


def _listing_key(root: Path, files: list[Path], channels: int | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": BUILD_VERSION, "size": SIZE, "channels": channels, "background": "black"}).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _slug(root: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name or "root")[:40]


def _report(name: str, info: dict) -> None:
    skipped = info["skipped_unreadable"] + info["skipped_non_image"]
    if skipped:
        ex = info["skipped_examples"]
        print(f"{name}: skipped {skipped} file(s) under {info['source']}: {info['skipped_unreadable']} unreadable, "
              f"{info['skipped_non_image']} not images" + (f" (e.g. {', '.join(ex[:3])})" if ex else ""),
              file=sys.stderr)


def build(root: str | Path, channels=None, cache: str | Path | None = None, progress: bool = True,
          workers: int | None = None, name: str = "folder", force: bool = False) -> tuple[Path, dict]:
    """Decode the folder into the cache unless a valid copy is there; returns (cache path,
    its metadata)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"image folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"--data-path for {name!r} must be a folder of images, got a file: {root}")
    root = root.resolve()
    want = _parse_channels(channels)
    files, others = scan(root)
    try:
        key = _listing_key(root, files, want)
    except OSError as e:  # a file vanished between the walk and stat
        raise UserError(f"{root}: cannot list the folder ({e})") from None
    path = cache_dir(cache) / "folders" / f"{_slug(root)}-{key}.npy"
    cached = None if force else _load_cache(path, key, root, files)
    if cached is not None:
        return path, cached
    if not files:
        raise UserError(f"{root}: no images found ({len(others)} other file(s)); "
                        f"image extensions are {', '.join(sorted(IMAGE_EXTENSIONS)[:8])}, ...")

    buf = np.empty((len(files), want or 3, SIZE, SIZE), dtype=np.uint8)
    bad: list[str] = []
    kept = 0
    all_grey = True
    workers = workers or min(4, os.cpu_count() or 1)

    def work(p):
        try:
            return read_image(p, want)
        except Exception:  # noqa: BLE001 - any decoding failure: skip and count the file
            return None

    bar = tqdm(total=len(files), desc=f"{name}: decoding", disable=not progress, unit="img", dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for s in range(0, len(files), 512):
            part = files[s : s + 512]
            for p, res in zip(part, ex.map(work, part)):
                if res is None:
                    bad.append(p.relative_to(root).as_posix())
                else:
                    buf[kept], grey = res
                    all_grey &= grey
                    kept += 1
            bar.update(len(part))
    bar.close()
    if kept == 0:
        raise UserError(f"{root}: none of the {len(files)} image file(s) could be read "
                        f"(e.g. {', '.join(bad[:3])})")
    arr = buf[:kept]
    resolved = want or (1 if all_grey else 3)
    if resolved != arr.shape[1]:
        arr = np.ascontiguousarray(arr[:, :1])
    del buf
    meta = {
        "dataset": "folder", "build_version": BUILD_VERSION, "key": key, "source": str(root),
        "shape": list(arr.shape), "channels": resolved, "images": kept,
        "skipped_unreadable": len(bad), "skipped_non_image": len(others),
        "unreadable": bad, "skipped_examples": (bad + [p.relative_to(root).as_posix() for p in others])[:10],
    }
    atomic_save_npy(path, arr, meta)
    return path, meta


def _load_cache(path: Path, key: str, root: Path, files: list[Path]) -> dict | None:
    side = path.with_suffix(".json")
    meta = read_json(side)  # bounded; None when missing or unreadable
    if not isinstance(meta, dict) or meta.get("key") != key or meta.get("build_version") != BUILD_VERSION:
        return None
    arr = load_cached_npy(path, meta, tuple(meta.get("shape", ())))
    if arr is None:
        return None
    # Spot-check: re-read a few images and compare (tolerant of another Pillow's rounding).
    bad = set(meta.get("unreadable", []))
    kept = [p for p in files if p.relative_to(root).as_posix() not in bad]
    if len(kept) != len(arr):
        return None
    rng = np.random.default_rng(len(arr))
    for i in rng.choice(len(arr), min(4, len(arr)), replace=False):
        try:
            img, _ = read_image(kept[i], meta["channels"])
        except Exception:  # noqa: BLE001
            return None
        diff = np.abs(img.astype(np.int16) - np.asarray(arr[i]))
        if diff.max() > 8 or diff.mean() > 1.0:
            return None
    return meta


def load(path: str | Path | None = None, cache: str | Path | None = None, progress: bool = True,
         channels=None, name: str = "folder") -> ImageData:
    """A folder of images as an ImageData without a grid (no ground-truth factors)."""
    if path is None:
        raise UserError(f"data set {name!r} needs --data-path DIR (a folder of images)")
    cpath, meta = build(path, channels=channels, cache=cache, progress=progress, name=name)
    info = {k: meta[k] for k in ("source", "images", "channels", "skipped_unreadable", "skipped_non_image",
                                 "skipped_examples")}
    info["cache"] = str(cpath)
    _report(name, info)
    arr = np.load(cpath, mmap_mode="r")
    return ImageData(name, as_uint8_tensor(arr), None, scale=1.0 / 255.0, info=info)
