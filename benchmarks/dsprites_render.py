"""dSprites renderer: fidelity to the 12 official images and the time to render the whole grid.

    python benchmarks/dsprites_render.py            # IoU of each official image, then 3 timed renders
    python benchmarks/dsprites_render.py --repeats 5

Rendering consumes the 720 sprite blocks without keeping them (no disk, ~40 MB at a time). Prints
the median of the repeats and the load average; figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from factorvae.data import dsprites as ds

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "dsprites_official_12.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with np.load(FIXTURE) as z:
        official, values = z["imgs"].astype(bool), z["latents_values"]
    classes = np.stack([np.abs(np.asarray(v)[None, :] - values[:, k : k + 1]).argmin(1)
                        for k, v in enumerate(ds.GRID.values)], axis=1)
    ours = ds.render(classes).astype(bool)
    iou = (ours & official).sum(axis=(1, 2)) / (ours | official).sum(axis=(1, 2))
    for i, (c, v) in enumerate(zip(classes, iou)):
        print(f"official image {i:2d}: {ds.SHAPES[c[1]]:<8} scale {ds.GRID.values[2][c[2]]:.1f}  IoU {v:.4f}  "
              f"differing pixels {int((ours[i] ^ official[i]).sum())}")
    print(f"IoU median {np.median(iou):.4f}, min {iou.min():.4f}")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _block in ds.sprite_blocks():
            pass
        times.append(time.perf_counter() - t0)
    print(f"render the 737,280 images: median {statistics.median(times):.1f} s of {args.repeats} "
          f"({', '.join(f'{t:.1f}' for t in times)}); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
