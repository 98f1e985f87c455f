"""`factorvae data list | show | generate`: the data sets, what they look like, and their caches."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from factorvae.errors import UserError

# Commands import the library inside their functions: `factorvae --help` registers every
# command's parser and should not import torch and the data sets for that.


def register(sub) -> None:
    p = sub.add_parser("data", help="list, show or pre-build data sets",
                       description="List the data sets, draw samples and factor sweeps, or build a cache ahead of training.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    def common(q, path_help="official file (grid data sets) or image folder"):
        q.add_argument("--data-path", help=path_help)
        q.add_argument("--cache-dir", help="where generated data sets are cached (default $FACTORVAE_CACHE or ~/.cache/factorvae)")
        q.add_argument("--channels", help="image folders: 1 (greyscale), 3 (RGB) or auto (default)")
        q.add_argument("--scream-path", help="scream_dsprites: the image its backgrounds are cut from")

    q = dsub.add_parser("list", help="data sets, their factors, sizes and caches")
    q.add_argument("--cache-dir", help="cache folder to report on")
    q.set_defaults(func=run_list)

    q = dsub.add_parser("show", help="write a PNG of random samples, then one row per factor stepping through its values")
    q.add_argument("dataset")
    q.add_argument("--out", required=True, help="PNG file to write")
    common(q)
    q.add_argument("--seed", type=int, default=0, help="random seed of the samples (default 0)")
    q.add_argument("--columns", type=int, default=15, help="images per row (default 15)")
    q.add_argument("--sample-rows", type=int, default=2, help="rows of random samples (default 2; 6 for data without factors)")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=run_show)

    q = dsub.add_parser("generate", help="build a data set's cache now (with a progress bar)")
    q.add_argument("dataset")
    common(q)
    q.add_argument("--force", action="store_true", help="rebuild even if a valid cache exists")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=run_generate)


# -- list -------------------------------------------------------------------------------------

def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def cache_status(name: str, cache=None) -> str:
    """Where a data set's cache is and whether it is built (from the files' presence; contents
    are validated when the data set is loaded)."""
    from factorvae.data import get_dataset_info
    from factorvae.data.store import cache_dir

    info = get_dataset_info(name)
    if info.grid is not None and info.needs_path:
        return f"needs --data-path (official files); a copy is cached in {cache_dir(cache)} on first use"
    if info.grid is not None and info.generate is None:
        return "none needed (rendered in memory on load)"
    if info.cache_path is not None:
        f = info.cache_path(cache)
        if f.exists() and f.with_suffix(".json").exists():
            return f"{f} ({_size(f)})"
        base = "dsprites" if "dsprites" in name else name
        return f"not built: {f} (factorvae data generate {base}, or built on first use)"
    root = cache_dir(cache)
    folders = sorted((root / "folders").glob("*.npy")) if (root / "folders").is_dir() else []
    return f"needs --data-path; {len(folders)} folder cache(s) in {root / 'folders'}"


def run_list(args) -> int:
    from factorvae.data import DATASETS

    for name, info in DATASETS.items():
        grid = info.grid
        n = f"{info.num_images or len(grid):,} images" if grid is not None else "any number of images"
        ch = "1 channel" if info.channels == 1 else "3 channels"
        if info.auto_channels:
            ch = "1 or 3 channels"
        print(f"{name:<15} ({ch}, {n})  {info.description}")
        if grid is not None:
            print("  factors: " + ", ".join(f"{a} ({s})" for a, s in zip(grid.names, grid.sizes))
                  + (f"; nuisance: {', '.join(info.nuisance)} (not scored)" if info.nuisance else ""))
        else:
            print("  factors: none (no ground truth: metrics do not apply; traversals, reconstructions, samples do)")
        print(f"  cache:   {cache_status(name, args.cache_dir)}")
    return 0


# -- show -------------------------------------------------------------------------------------

def factor_sweeps(grid, rng: np.random.Generator, columns: int) -> tuple[list[np.ndarray], list[str]]:
    """For each factor with more than one value: factor classes (K, F) that step through its
    values (at most ``columns``, evenly spaced) from one random base point."""
    base = grid.sample(1, rng)[0]
    rows, labels = [], []
    for k, (name, size) in enumerate(zip(grid.names, grid.sizes)):
        if size < 2:
            continue
        steps = np.unique(np.round(np.linspace(0, size - 1, min(size, columns))).astype(int))
        cl = np.repeat(base[None], len(steps), axis=0)
        cl[:, k] = steps
        rows.append(cl)
        labels.append(f"{name} ({size})" if len(steps) == size else f"{name} ({len(steps)} of {size})")
    return rows, labels


def run_show(args) -> int:
    from factorvae.data import get_dataset_info, load_dataset
    from factorvae.viz.tiles import save_png, tile, to_uint8

    info = get_dataset_info(args.dataset)
    if args.columns < 1 or args.sample_rows < 0:
        raise UserError("--columns must be >= 1 and --sample-rows >= 0")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {out}")
    rng = np.random.default_rng(args.seed)
    cols = args.columns
    grid = info.grid
    if grid is not None and args.channels is not None:
        raise UserError("--channels applies to image folders only")
    if grid is not None and args.data_path is None and info.render is not None:
        draw = info.render  # single images, exactly what the cache holds: no cache needed
        n = len(grid)
    else:
        data = load_dataset(args.dataset, args.data_path, args.cache_dir, progress=not args.no_progress,
                            channels=args.channels, scream_path=args.scream_path)
        grid = data.grid
        draw = lambda classes: data.images(grid.index(classes))  # noqa: E731
        n = len(grid) if grid is not None else len(data)  # nuisance data sets hold more images than points
    sample_rows = args.sample_rows if grid is not None else max(args.sample_rows, 6)
    count = min(n, sample_rows * cols)
    rows, labels = [], []
    if count:
        idx = rng.choice(n, count, replace=False)
        imgs = to_uint8(draw(grid.classes(idx)) if grid is not None else data.images(idx))
        for s in range(0, count, cols):
            rows.append(imgs[s : s + cols])
            labels.append("samples" if s == 0 else "")
    if grid is not None:
        sweeps, names = factor_sweeps(grid, rng, cols)
        for cl, label in zip(sweeps, names):
            rows.append(to_uint8(draw(cl)))
            labels.append(label)
    if not rows:
        raise UserError(f"nothing to show for {args.dataset!r}")
    save_png(tile(rows, labels, fill=96, label_x=4), out)
    what = "random samples" + (", then one row per factor" if grid is not None else " (no factors)")
    print(f"{args.dataset}: {what} -> {out}")
    _print_official(args.dataset, data.info if args.data_path is not None else {})
    return 0


def _print_official(name: str, info: dict) -> None:
    """The MD5 verdict on an official file given with --data-path (see data/official.py)."""
    from factorvae.data.official import describe

    if "official_file" in info:
        print(f"{name}: {info['source']}: {describe(info['official_file'])}")


# -- generate -----------------------------------------------------------------------------------

def run_generate(args) -> int:
    from factorvae.data import get_dataset_info, images, load_dataset

    info = get_dataset_info(args.dataset)
    t0 = time.perf_counter()
    progress = not args.no_progress
    if info.grid is None:
        if args.data_path is None:
            raise UserError(f"data set {args.dataset!r} needs --data-path DIR (a folder of images)")
        channels = args.channels if args.channels is not None or info.auto_channels else info.channels
        path, meta = images.build(args.data_path, channels=channels, cache=args.cache_dir, progress=progress,
                                  name=args.dataset, force=args.force)
        info_ = {k: meta[k] for k in ("source", "images", "channels", "skipped_unreadable", "skipped_non_image",
                                      "skipped_examples")}
        images._report(args.dataset, info_)
        print(f"{args.dataset}: {meta['images']:,} images, {meta['channels']} channel(s) -> {path} ({_size(path)}, "
              f"{time.perf_counter() - t0:.1f} s)")
        return 0
    if args.channels is not None:
        raise UserError("--channels applies to image folders only")
    if args.data_path is not None:  # an official file: read and validate it
        data = load_dataset(args.dataset, args.data_path, args.cache_dir, progress=progress,
                            scream_path=args.scream_path)
        kept = ("a copy is cached and memory-mapped" if info.needs_path or args.dataset == "shapes3d"
                else "it is read on every use, only its MD5 is cached")
        print(f"{args.dataset}: {args.data_path} has the official structure ({len(data):,} images, "
              f"{time.perf_counter() - t0:.1f} s); {kept}")
        _print_official(args.dataset, data.info)
        return 0
    if info.generate is None:
        print(f"{args.dataset}: nothing to build (rendered in memory on load)")
        return 0
    path = info.generate(args.cache_dir, progress=progress, force=args.force)
    print(f"{args.dataset}: {path} ({_size(path)}, {time.perf_counter() - t0:.1f} s)")
    return 0
