"""Peak memory and time of loading an official-format 3D Shapes .h5: read into memory
(``read_h5``, what every run did before) versus copied once into the cache and memory-mapped
(``cache_h5``, what ``--data-path 3dshapes.h5`` does now).

    python benchmarks/shapes3d_official_memory.py [--floors 1] [--dir /tmp]

Writes a file in the official format (``images`` (N, 64, 64, 3) uint8 in chunks of 100
images, ``labels`` (N, 6)) holding the official grid restricted to the first ``--floors``
floor hues (48,000 images per floor hue; the official file has 10), then measures each way in
a fresh subprocess (peak RSS: ``ru_maxrss``). Memory of the in-memory read grows with N
(5.9 GB for the official file); the cached copy is streamed one chunk at a time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
from factorvae.data import shapes3d as s3
from factorvae.data.grid import FactorGrid
mode, path, cache, floors = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
grid = FactorGrid(s3.FACTORS, (floors,) + s3.GRID.sizes[1:], values=(s3.GRID.values[0][:floors],) + s3.GRID.values[1:])
t0 = time.perf_counter()
if mode == "read":
    arr = s3.read_h5(path, grid, progress=False)
else:
    arr = np.load(s3.cache_h5(path, grid, cache, progress=False), mmap_mode="r")
t = time.perf_counter() - t0
x = arr[np.random.default_rng(0).integers(0, len(arr), 64)]  # a batch, as training gathers it
print(json.dumps({"s": t, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n": len(arr)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--floors", type=int, default=1, help="floor hues in the file (48,000 images each)")
    ap.add_argument("--dir", help="where to write the file and the cache (default: system temp)")
    args = ap.parse_args()
    import h5py
    import numpy as np

    from factorvae.data import shapes3d as s3

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "3dshapes-part.h5"
        n = args.floors * 48_000
        rng = np.random.default_rng(0)
        with h5py.File(path, "w") as f:
            f.create_dataset("labels", data=s3.GRID.factor_values(s3.GRID.all_classes()[:n]))
            images = f.create_dataset("images", shape=(n, 64, 64, 3), dtype=np.uint8, chunks=(100, 64, 64, 3))
            for s in range(0, n, 4800):
                images[s : s + 4800] = rng.integers(0, 256, (min(4800, n - s), 64, 64, 3), dtype=np.uint8)
        print(f"{n} images, {path.stat().st_size / 1e9:.2f} GB file")
        for mode in ("read", "cache (first run)", "cache (later runs)"):
            out = subprocess.run([sys.executable, "-c", CHILD, mode.split()[0], str(path), str(Path(tmp) / "cache"),
                                  str(args.floors)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{mode:20s} {r['s']:7.2f} s   peak RSS {r['peak_rss_mb']:8.0f} MB")


if __name__ == "__main__":
    main()
