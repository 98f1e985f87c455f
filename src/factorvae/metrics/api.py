"""Codes from models and files: :func:`score_model` scores a model or an image function on a
data set, :func:`encode_points` makes a codes file's arrays from a model (``factorvae
encode``); :func:`load_codes` reads one (``factorvae metrics``). ``factorvae.evaluate``
(factorvae.usecases.evaluate) dispatches to these.

A codes file (.npz) holds ``factors`` (n, K) integer classes, ``codes`` (n, D) and ``sizes``
(K), optionally ``names`` (K): either every grid point once (all six metrics) or a random
sample of grid points of any size (MIG, DCI, SAP, modularity/explicitness).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from factorvae.data import load_dataset
from factorvae.errors import UserError
from factorvae.io import check_memory, read_json
from factorvae.metrics import suite
from factorvae.metrics.codes import Codes

#: encode every grid point by default up to this many (dSprites: 737,280; 3D Shapes: 480,000)
ALL_POINTS_UP_TO = 1_000_000
#: otherwise this many random points: enough for the dlib preset (10,000 + 5,000 per metric)
DEFAULT_SAMPLE = 100_000


def as_dataset(dataset):
    if dataset is None:
        raise UserError("evaluate: model= needs dataset= (a data set with a factor grid, or its name)")
    if isinstance(dataset, str):
        return load_dataset(dataset, progress=False)
    return dataset


def score_model(model, dataset, kw: dict, batch_size: int, progress: bool) -> dict:
    """Suite scores of ``model`` (with ``representation`` or a function of images) on ``dataset``."""
    if hasattr(model, "representation"):
        return suite.evaluate_model(model, dataset, batch_size=batch_size, progress=progress, **kw)
    if not callable(model):
        raise UserError(f"evaluate: model= must have representation(x) or be a function of images, "
                        f"got a {type(model).__name__}")
    grid = getattr(dataset, "grid", None)
    if grid is None:
        raise UserError(f"data set {getattr(dataset, 'name', '?')} has no ground-truth factors; metrics need a factor grid")
    suite.parse_metrics(kw["metrics"]), suite.preset_params(kw["preset"])  # fail before encoding
    codes = Codes.from_encoder(model, dataset.images, grid, batch_size=batch_size, progress=progress)
    return suite.evaluate(codes, **kw)


def load_codes(path: str | Path) -> Codes:
    """A codes file (.npz: factors, codes, sizes, optional names) as Codes: a complete table
    when it covers the grid once, else a random sample. Problems raise one UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    if zipfile.is_zipfile(path):  # the sizes its headers declare, checked before any array is read
        check_memory(npz_bytes(path), f"the arrays of {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    if not hasattr(npz, "files"):
        raise UserError(f"{path}: a single array, not an .npz with factors, codes and sizes")
    with npz:
        missing = [k for k in ("factors", "codes", "sizes") if k not in npz.files]
        if missing:
            raise UserError(f"{path}: missing key(s) {', '.join(missing)} (found {', '.join(npz.files) or 'none'}); "
                            "expected factors (N,K), codes (N,D), sizes (K)")
        try:
            arrays = {k: npz[k] for k in ("factors", "codes", "sizes")}
            names = npz["names"] if "names" in npz.files else None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise UserError(f"{path}: cannot read its arrays ({type(e).__name__}: {e})") from None
    return Codes.from_points(arrays["factors"], arrays["codes"], arrays["sizes"], names=names, source=str(path))


def npz_bytes(path: str | Path) -> int:
    """Bytes the arrays of an .npz take once loaded, read from their ``.npy`` headers only
    (``np.lib.format``; no data is read). A header that declares more data than its member
    stores (a crafted or truncated file) is one ``UserError``."""
    total = 0
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f, max_header_size=10_000)
                nbytes = math.prod(int(n) for n in shape) * dtype.itemsize
                if nbytes > info.file_size:
                    raise UserError(f"{path}: array {info.filename[:-4]!r} declares {math.prod(shape):,} elements "
                                    f"{tuple(shape)} but holds {info.file_size:,} bytes; the file is damaged or crafted")
                total += nbytes
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    return total


def is_codes_file(path: str | Path) -> bool:
    """Whether ``path`` is an .npz with factors, codes and sizes (what ``encode`` writes), by
    its member names only."""
    try:
        with zipfile.ZipFile(path) as z:
            return {"factors.npy", "codes.npy", "sizes.npy"} <= set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def is_result_file(path: str | Path) -> bool:
    """Whether ``path`` is a JSON result of ``factorvae metrics`` (an object with ``settings``)."""
    result = read_json(path)
    return isinstance(result, dict) and isinstance(result.get("settings"), dict)


def choose_points(num_grid: int, points: int | None, rng: np.random.Generator) -> np.ndarray:
    """Flat grid indices to encode: all (sorted) when ``points`` is None and the grid is at
    most ALL_POINTS_UP_TO, else ``points`` (default DEFAULT_SAMPLE) distinct random ones."""
    if points is None:
        if num_grid <= ALL_POINTS_UP_TO:
            return np.arange(num_grid)
        points = DEFAULT_SAMPLE
    points = int(points)
    if points < 2:
        raise UserError(f"--points must be >= 2, got {points}")
    if points >= num_grid:
        return np.arange(num_grid)
    return np.sort(rng.choice(num_grid, size=points, replace=False))


def encode_points(model, dataset, points: int | None = None, seed: int = 0, batch_size: int = 256,
                  progress: bool = True) -> dict[str, np.ndarray]:
    """The arrays of a codes file: ``model.representation`` (encoder means) of ``points``
    grid points drawn uniformly without replacement with ``seed`` (default: every point when
    the grid has at most ALL_POINTS_UP_TO), with their factor classes, the grid sizes and
    factor names. Encodes under no_grad in eval mode, in batches, with a progress bar."""
    grid = getattr(dataset, "grid", None)
    if grid is None:
        raise UserError(f"data set {getattr(dataset, 'name', '?')} has no ground-truth factors; nothing to encode")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    flat = choose_points(len(grid), points, np.random.default_rng(int(seed)))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for a in tqdm(range(0, len(flat), batch_size), desc="encoding", unit="batch", disable=not progress):
                idx = flat[a:a + batch_size]
                out.append(model.representation(dataset.images(idx).to(device)).float().cpu().numpy())
    finally:
        model.train(was_training)
    z = np.concatenate(out)
    if not np.isfinite(z).all():
        raise UserError("the encoder returned NaN or infinite codes; the model may have diverged")
    return {"factors": grid.classes(flat), "codes": z, "sizes": np.asarray(grid.sizes, dtype=np.int64),
            "names": np.asarray(grid.names)}
