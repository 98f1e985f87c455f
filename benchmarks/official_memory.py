"""Peak memory and time of the first load (the cache copy) of SmallNORB, Cars3D and MPI3D
from files in the official formats, each in a fresh subprocess (peak resident memory: ``VmHWM`` of /proc/self/status; Linux's
``ru_maxrss`` keeps the parent's peak across exec, and the parent holds the files it wrote).

    python benchmarks/official_memory.py [--dir /tmp] [--mpi3d-axis 4 40]

SmallNORB and Cars3D are written at their official sizes (48,600 and 17,568 images; random
pixels, the official factor layout); MPI3D at a fraction of its 1,036,800 images (the
horizontal axis cut to ``--mpi3d-axis`` values: 4 -> 103,680 images, 40 -> the whole file,
12.7 GB), to show the peak does not grow with the file: each loader streams a bounded chunk.
Also printed: the peak of importing the package alone (the baseline every process pays).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, re, sys, time
import numpy as np
from factorvae.data import cars3d, mpi3d, smallnorb
from factorvae.data.grid import FactorGrid
which, path, cache, axis = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if which == "smallnorb":
    d = smallnorb.build(path, cache=cache, progress=False)
elif which == "cars3d":
    d = cars3d.build(path, cache=cache, progress=False)
else:
    grid = FactorGrid(mpi3d.GRID.names, mpi3d.GRID.sizes[:5] + (axis, 40))
    d = mpi3d.build("toy", path, grid, cache=cache, progress=False)
t = time.perf_counter() - t0
x = d.images(np.random.default_rng(0).integers(0, len(d), 64))
# VmHWM: this process's peak resident memory (ru_maxrss would include the parent's, kept across exec)
hwm = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"which": which, "images": len(d), "s": round(t, 1), "peak_rss_mb": round(hwm / 1024)}))
"""


def write_norb(folder: Path, rng) -> None:
    import numpy as np

    from factorvae.data import smallnorb

    full = smallnorb.FULL_GRID
    cl = full.all_classes()
    for split, insts in zip(smallnorb.SPLITS, ((4, 6, 7, 8, 9), (0, 1, 2, 3, 5))):
        c = cl[np.isin(cl[:, 1], insts)]
        n = len(c)
        with open(folder / f"{split}-dat.mat", "wb") as f:
            f.write(np.array([0x1E3D4C55, 4, n, 2, 96, 96], "<i4").tobytes())
            for a in range(0, n, 2000):
                f.write(rng.integers(0, 256, (min(2000, n - a), 2, 96, 96), dtype=np.uint8).tobytes())
        (folder / f"{split}-cat.mat").write_bytes(np.array([0x1E3D4C54, 1, n, 1, 1], "<i4").tobytes()
                                                  + c[:, 0].astype("<i4").tobytes())
        info = np.column_stack([c[:, 1], c[:, 2], 2 * c[:, 3], c[:, 4]]).astype("<i4")
        (folder / f"{split}-info.mat").write_bytes(np.array([0x1E3D4C54, 2, n, 4, 1], "<i4").tobytes() + info.tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", help="where to write the files and caches (default: system temp)")
    ap.add_argument("--mpi3d-axis", type=int, nargs="+", default=[1, 4], help="horizontal-axis values in the MPI3D file")
    ap.add_argument("--only", nargs="+", default=["smallnorb", "cars3d", "mpi3d"], help="which data sets")
    args = ap.parse_args()
    import numpy as np
    import scipy.io

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        runs = []
        if "smallnorb" in args.only:
            (tmp / "norb").mkdir()
            write_norb(tmp / "norb", rng)
            runs.append(("smallnorb", tmp / "norb", 0))
        if "cars3d" in args.only:
            (tmp / "cars").mkdir()
            for k in range(183):
                scipy.io.savemat(tmp / "cars" / f"car_{k:03d}_mesh.mat",
                                 {"im": rng.integers(0, 256, (128, 128, 3, 24, 4), dtype=np.uint8)})
            runs.append(("cars3d", tmp / "cars", 0))
        for axis in args.mpi3d_axis if "mpi3d" in args.only else []:
            n = 6 * 6 * 2 * 3 * 3 * axis * 40
            f = tmp / f"mpi3d_toy_{axis}.npz"
            with open(f, "wb") as fh:  # np.savez of a memmap: written without holding it in memory
                arr = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 64, 64, 3))
                for a in range(0, n, 10_000):
                    arr[a:a + 10_000] = rng.integers(0, 256, (min(10_000, n - a), 64, 64, 3), dtype=np.uint8)
                arr.flush()
                np.savez(fh, images=arr)
                del arr
            (tmp / "images.npy").unlink()
            runs.append(("mpi3d", f, axis))
        base = subprocess.run([sys.executable, "-c", "import re, factorvae.data, torch; print(int(re.search("
                               "r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) // 1024)"],
                              capture_output=True, text=True, check=True).stdout.strip()
        print({"import factorvae.data": True, "peak_rss_mb": int(base)})
        for which, path, axis in runs:
            out = subprocess.run([sys.executable, "-c", CHILD, which, str(path), str(tmp / "cache"), str(axis)],
                                 capture_output=True, text=True, check=True).stdout
            print(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
