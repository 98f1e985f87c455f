"""`factorvae encode RUN_DIR --out codes.npz`: a run's codes for `factorvae metrics`.

Writes the encoder means (``model.representation``) of every grid point (default, when the
grid has at most a million points: then every metric can score the file) or of ``--points N``
grid points drawn uniformly without replacement with ``--seed`` (MIG, DCI, SAP,
modularity/explicitness), with their factor classes, the grid sizes and factor names: the
format docs/metrics.md describes. The file is written atomically, once encoding is done.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from factorvae.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("encode", help="write a run's codes of grid points to an .npz for `factorvae metrics`",
                       description="Encode grid points with a run's encoder (means) and write factors, codes, sizes "
                                   "and names to an .npz that `factorvae metrics` scores.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="CODES.npz", help="the .npz to write")
    p.add_argument("--images", metavar="PATH",
                   help="encode your own images instead of grid points: an image file or a folder of them (the "
                        "data set's preprocessing: channels, 64x64, scaled to [0, 1]); writes codes and files")
    p.add_argument("--points", help="number of random grid points (default: every point, up to 1,000,000)")
    p.add_argument("--seed", default="0", help="seed of the random points (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--batch-size", default="256", help="images per encoder call (default 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--representation", default="mean",
                   help="mean (default), sampled (one draw z ~ q(z|x) per image, seeded by --seed) or both "
                        "(codes = means, codes_sampled = draws)")
    p.set_defaults(func=run)


def parse_number(value: str, option: str, kind=int, minimum=0):
    """An option's value as ``kind`` (int or float), at least ``minimum``; else one line."""
    try:
        v = kind(value)
    except ValueError:
        raise UserError(f"{option} must be a {'whole ' if kind is int else ''}number, got {value!r}") from None
    if v < minimum:
        raise UserError(f"{option} must be >= {minimum}, got {v}")
    return v


def _whole(value: str, option: str, minimum: int) -> int:
    return parse_number(value, option, int, minimum)


def check_out(out: str) -> Path:
    """The output path, checked before any work: an .npz in a writable folder, replacing at most
    an earlier codes file."""
    from factorvae.io import check_out_file
    from factorvae.metrics.api import is_codes_file

    path = Path(out)
    if path.suffix != ".npz":
        raise UserError(f"--out must name an .npz file, got {out!r}")
    if path.is_dir():
        raise UserError(f"--out {out} is a directory")
    check_out_file(path, is_codes_file, "a codes file (factors, codes, sizes)")  # only an earlier encode's is replaced
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {out}: {parent} is not a writable directory")
    return path


def run(args) -> int:
    import numpy as np

    from factorvae.metrics.api import choose_points, encode_points
    from factorvae.metrics.plan import MEASURED, duration
    from factorvae.metrics.sampled import check_representation, encode_arrays
    from factorvae.io import atomic_write
    from factorvae.runs import load_run

    out = check_out(args.out)
    check_representation(args.representation)
    if args.images is not None:
        if args.points is not None:
            raise UserError("--points draws grid points; --images encodes your images: choose one")
        return encode_images(args, out)
    points = None if args.points is None else _whole(args.points, "--points", 2)
    seed = _whole(args.seed, "--seed", 0)
    batch_size = _whole(args.batch_size, "--batch-size", 1)
    r = load_run(args.run_dir, device=args.device, progress=not args.no_progress)
    grid = getattr(r.dataset, "grid", None)
    if grid is None:
        raise UserError(f"data set {r.config['data']['name']} has no ground-truth factors; nothing to encode")
    n = len(choose_points(len(grid), points, np.random.default_rng(seed)))
    expected = duration(n / MEASURED["encode_images_per_s"])
    print(f"encoding {n:,} of {len(grid):,} grid points of {r.config['data']['name']} with {r.dir} (step {r.step}); "
          f"~{expected} on one idle CPU core (paper networks)", file=sys.stderr, flush=True)
    if args.representation == "mean":
        arrays = encode_points(r.model, r.dataset, points=points, seed=seed, batch_size=batch_size,
                               progress=not args.no_progress)
    else:
        flat = choose_points(len(grid), points, np.random.default_rng(seed))
        arrays = encode_arrays(r.model, r.dataset, flat, args.representation, seed=seed, batch_size=batch_size,
                               progress=not args.no_progress)
    try:
        atomic_write(out, lambda f: np.savez(f, **arrays))
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    kind = "every grid point" if n == len(grid) else f"a random sample (seed {seed})"
    print(f"written {out}: {n:,} points x {arrays['codes'].shape[1]} codes, {kind}; "
          f"score it with `factorvae metrics {out}`")
    return 0


def encode_images(args, out: Path) -> int:
    """``--images PATH``: the run's codes of a user's image file or folder (sorted paths), with
    the file names, in an .npz (``codes`` (N, D), ``files``)."""
    import numpy as np

    from factorvae.data.images import scan
    from factorvae.io import atomic_write
    from factorvae.runs import load_run

    path = Path(args.images).expanduser()
    files = scan(path)[0] if path.is_dir() else [path]
    if not files:
        raise UserError(f"--images {path}: no image files in this folder")
    if not files[0].exists():
        raise UserError(f"--images {path}: no such file or folder")
    r = load_run(args.run_dir, device=args.device, load_data=False)
    print(f"encoding {len(files):,} image(s) with {r.dir} (step {r.step}), preprocessed as "
          f"{r.config['data']['name']}'s images", file=sys.stderr, flush=True)
    codes = r.encode(files, batch_size=_whole(args.batch_size, "--batch-size", 1))
    names = np.array([str(f.relative_to(path)) if path.is_dir() else f.name for f in files])
    try:
        atomic_write(out, lambda f: np.savez(f, codes=codes, files=names))
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"written {out}: {len(files):,} image(s) x {codes.shape[1]} codes (arrays codes, files); "
          "images without factor labels cannot be scored by `factorvae metrics`")
    return 0
