"""How close procedural 3D Shapes is to the official images: PSNR between each of 25 official
samples and its nearest image over the whole 480,000-image procedural grid.

    python benchmarks/shapes3d_match.py [--reference DIR] [--sheet docs/img/shapes3d_match.png]
                                        [--figure docs/img/shapes3d_psnr.png]

Reads ``3dshapes_official_samples.png`` (25 official images drawn 5x5 by the data set's
notebook, each tile upscaled from 64x64) from --reference (default: ``shared/reference`` next
to the repository or to its parent folder), cuts out each tile and box-resizes it back to 64x64; without it,
reads the tiles cut this way from tests/fixtures/shapes3d_official_tiles.png. --fixture writes
that copy (and the classes found, which the tests render) from the reference.

The search is over all 480,000 images without rendering them one by one: an image is
``clip(round(floor_rgb*A_floor + wall_rgb*A_wall + object_rgb*A_object + C))`` with maps that
depend only on (scale, shape, orientation) (``shapes3d.shading_bank``). For each of the 480 map
sets the three hues are ranked separately on the pixels each region dominates, and the best two
of each (8 triples) are then scored exactly: the nearest image is exact unless a hue outside a
region's best two would win, among the 32 blocks whose approximate error is lowest.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from factorvae.data import shapes3d as s3

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "shapes3d_official_tiles.png"  # the 25 tiles, 5x5, as cut here


def _runs(ix: np.ndarray) -> list[tuple[int, int]]:
    cuts = np.nonzero(np.diff(ix) > 1)[0]
    starts = np.r_[ix[0], ix[cuts + 1]]
    ends = np.r_[ix[cuts], ix[-1]]
    return list(zip(starts.tolist(), ends.tolist()))


def official_tiles(png: Path) -> np.ndarray:
    """(25, 64, 64, 3) uint8: the tiles of the official samples figure, resized back to 64x64."""
    im = Image.open(png).convert("RGB")
    ink = (np.asarray(im) < 250).any(2)  # the figure's background is white
    cols, rows = _runs(np.nonzero(ink.any(0))[0]), _runs(np.nonzero(ink.any(1))[0])
    return np.stack([np.asarray(im.crop((x0, y0, x1 + 1, y1 + 1)).resize((64, 64), Image.BOX))
                     for y0, y1 in rows for x0, x1 in cols])


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR in dB over the last three axes (peak 255)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))


#: blocks (of 480) whose best hue triples are scored exactly
TOP_BLOCKS = 32


def nearest(tile: np.ndarray, bank: np.ndarray) -> tuple[int, float]:
    """Grid index and PSNR of the procedural image nearest to ``tile`` (64, 64, 3)."""
    maps = bank.reshape(s3.BLOCK, s3.MAPS, -1)  # (480, MAPS, 4096)
    target = tile.reshape(-1, 3).T.astype(np.float32)  # (3, 4096)
    dom = maps[:, :3].argmax(1)  # (480, 4096): the region that dominates each pixel
    best, approx = [], np.zeros(s3.BLOCK)
    for r in range(3):
        k, px = np.nonzero(dom == r)
        const, a, want = maps[k, 3:, px].T, maps[k, r, px], target[:, px]
        err = np.empty((10, s3.BLOCK))
        for h in range(10):
            x = np.floor(const + a * s3.PALETTE[h][:, None] + np.float32(0.5)).clip(0, 255)
            err[h] = np.bincount(k, ((x - want) ** 2).sum(0), minlength=s3.BLOCK)
        best.append(np.argsort(err, 0)[:2].T)  # (480, 2): the two best hues of region r per block
        approx = approx + err.min(0)
    ks = np.argsort(approx)[:TOP_BLOCKS]
    cand = np.array([[best[0][k, a], best[1][k, b], best[2][k, c], k] for k in ks
                     for a in range(2) for b in range(2) for c in range(2)])
    sc, sh, o = np.unravel_index(cand[:, 3], (8, 4, 15))
    classes = np.stack([cand[:, 0], cand[:, 1], cand[:, 2], sc, sh, o], 1)
    imgs = s3._compose(maps.reshape(s3.BLOCK, s3.MAPS, 64, 64)[cand[:, 3]], s3.PALETTE[cand[:, 0]],
                       s3.PALETTE[cand[:, 1]], s3.PALETTE[cand[:, 2]])
    p = psnr(imgs.transpose(0, 2, 3, 1), tile[None])
    i = int(p.argmax())
    return int(s3.GRID.index(classes[i : i + 1])[0]), float(p[i])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    near = [d / "shared" / "reference" for d in (ROOT.parent, ROOT.parent.parent)]
    ap.add_argument("--reference", default=str(next((d for d in near if d.exists()), near[0])))
    ap.add_argument("--fixture", action="store_true",
                    help="write the tiles and their nearest classes to tests/fixtures")
    ap.add_argument("--sheet", help="write official | nearest pairs as a PNG here")
    ap.add_argument("--figure", help="write a PSNR-per-sample bar chart here")
    args = ap.parse_args()
    png = Path(args.reference) / "3dshapes_official_samples.png"
    if png.exists():
        tiles = official_tiles(png)
    else:
        mosaic = np.asarray(Image.open(FIXTURE).convert("RGB"))
        tiles = mosaic.reshape(5, 64, 5, 64, 3).transpose(0, 2, 1, 3, 4).reshape(25, 64, 64, 3)
    t0 = time.perf_counter()
    bank = s3.shading_bank()
    t_bank = time.perf_counter() - t0
    found = [nearest(t, bank) for t in tiles]
    idx = np.array([i for i, _ in found])
    p = np.array([v for _, v in found])
    t_search = time.perf_counter() - t0 - t_bank
    print(f"source: {png if png.exists() else FIXTURE}; bank {t_bank:.1f} s, search {t_search:.1f} s")
    for k, (i, v) in enumerate(found):
        cls = s3.GRID.classes(np.array([i]))[0].tolist()
        print(f"sample {k:2d}: nearest index {i:6d} classes {cls} PSNR {v:5.2f} dB")
    print(f"PSNR dB: min {p.min():.2f}  median {np.median(p):.2f}  mean {p.mean():.2f}  max {p.max():.2f}")
    if args.fixture:
        mosaic = tiles.reshape(5, 5, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(320, 320, 3)
        Image.fromarray(mosaic).save(FIXTURE, optimize=True)
        FIXTURE.with_suffix(".json").write_text(json.dumps({
            "source": "3dshapes_official_samples.png: 25 official 3D Shapes images drawn 5x5 by the data set's "
                      "notebook; tiles cut out and box-resized to 64x64 by benchmarks/shapes3d_match.py",
            "classes": s3.GRID.classes(idx).tolist(),
            "classes_note": f"the factor classes of each tile's nearest procedural image (render version "
                            f"{s3.RENDER_VERSION})"}, indent=1))
        print(f"wrote {FIXTURE} and its .json")
    if args.sheet:
        ours = s3.render(s3.GRID.classes(idx)).transpose(0, 2, 3, 1)
        white = lambda h, w: np.full((h, w, 3), 255, np.uint8)  # noqa: E731 - gaps between tiles
        pairs = [np.concatenate([a, white(64, 2), b], 1) for a, b in zip(tiles, ours)]
        rows = [np.concatenate(sum(([pr, white(64, 8)] for pr in pairs[r * 5 : r * 5 + 5]), [])[:-1], 1)
                for r in range(5)]
        sheet = np.concatenate(sum(([r, white(6, rows[0].shape[1])] for r in rows), [])[:-1], 0)
        Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST)
        big.save(args.sheet, optimize=True)
        print(f"wrote {args.sheet}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 2.4), dpi=100)
        ax.bar(np.arange(len(p)), p, color="tab:blue")
        ax.axhline(20, color="k", ls="--", lw=1, label="target 20 dB")
        ax.set(xlabel="official sample", ylabel="PSNR to nearest (dB)", ylim=(0, max(35, p.max() + 2)))
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
