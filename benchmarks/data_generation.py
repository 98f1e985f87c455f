"""Time, disk and memory of building each generated data set's cache, and of loading it.

    python benchmarks/data_generation.py                    # all: dsprites, shapes3d, toy
    python benchmarks/data_generation.py shapes3d --keep    # keep the cache it builds

Each data set is built in a fresh subprocess into a temporary cache folder (so nothing a user
has cached is touched or reused), and its peak resident memory is that process's. Prints one
table; numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time
name, cache = sys.argv[1], sys.argv[2]
from factorvae.data import get_dataset_info, load_dataset
info = get_dataset_info(name)
t0 = time.perf_counter()
if info.generate is not None:
    info.generate(cache, progress=False)
t_build = time.perf_counter() - t0
rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
data = load_dataset(name, None, cache, progress=False)   # validates the cache (spot check)
t_load = time.perf_counter() - t0
import torch
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
data.sample_batch(64, g)
t0 = time.perf_counter()
for _ in range(100):
    data.sample_batch(64, g)
t_batch = (time.perf_counter() - t0) / 100
print(json.dumps({"build_s": t_build, "load_s": t_load, "batch_ms": 1e3 * t_batch, "rss_build_mb": rss_build,
                  "n": len(data), "channels": data.channels}))
"""


PARTS = r"""
import json, time
import numpy as np
from factorvae.data import shapes3d as s3
t0 = time.perf_counter(); bank = s3.shading_bank(); t_bank = time.perf_counter() - t0
buf = np.empty((10 * s3.BLOCK, 3, 64, 64), np.uint8)
t0 = time.perf_counter()
for f in range(10):
    for w in range(10):
        s3.render_into(buf, [f], [w], bank=bank)
t_compose = time.perf_counter() - t0
print(json.dumps({"bank_s": t_bank, "compose_s": t_compose}))
"""


def disk_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=["dsprites", "shapes3d", "toy"])
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache folder")
    ap.add_argument("--dir", help="parent of the temporary cache folder (default: system temp)")
    ap.add_argument("--parts", action="store_true", help="also time 3D Shapes' ray casting and composition "
                    "without writing to disk")
    args = ap.parse_args()
    if args.parts:
        r = json.loads(subprocess.run([sys.executable, "-c", PARTS], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
        print(f"3D Shapes parts: ray casting the 480 views {r['bank_s']:.1f} s, composing 480,000 images "
              f"{r['compose_s']:.1f} s (in memory, no disk)")
    print(f"{'data set':<16}{'images':>10}{'C':>3}{'build s':>10}{'disk':>11}{'peak RSS':>11}{'load s':>9}{'batch ms':>10}")
    for name in args.datasets:
        cache = tempfile.mkdtemp(prefix=f"fvae-bench-{name}-", dir=args.dir)
        try:
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", CHILD, name, cache], capture_output=True, text=True)
            if res.returncode:
                print(f"{name}: failed\n{res.stderr[-2000:]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            disk = disk_bytes(cache)
            print(f"{name:<16}{r['n']:>10,}{r['channels']:>3}{r['build_s']:>10.1f}{disk / 1e9:>9.2f}GB"
                  f"{r['rss_build_mb']:>9.0f}MB{r['load_s']:>9.2f}{r['batch_ms']:>10.2f}"
                  f"   (process total {time.perf_counter() - t0:.1f} s)")
        finally:
            if args.keep:
                print(f"  cache kept in {cache}")
            else:
                shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
