"""FactorVAE steps/s with 1 vs 2 torch threads, optionally while a busy process holds one core:
the measurement behind `factorvae train --threads`'s default.

    python benchmarks/threads.py [--repeats 5] [--window 5] [--busy]

Windows of ``--window`` FactorVAE training steps (batch 64 + 64, the paper's dSprites networks)
alternate between 1 and 2 intra-op threads, ``--repeats`` each; the median steps/s per thread
count is printed with the 1-minute load average before and after. ``--busy`` starts one
pure-Python spin loop (one core) for the duration, a stand-in for "anything else running".
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch

from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.runs import build_model


def spin() -> None:
    while True:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--window", type=int, default=5, help="steps per timed window")
    ap.add_argument("--busy", action="store_true", help="hold one core with a spin loop meanwhile")
    args = ap.parse_args()
    dataset = load_dataset("dsprites", progress=False)
    cfg = resolve({"model": {"name": "factorvae"}, "train": {"device": "cpu"}})
    model, _ = build_model(cfg, dataset.channels, torch.device("cpu"))
    model.train()
    g = torch.Generator().manual_seed(0)
    xs = [dataset.sample_batch(64, g) for _ in range(4)]
    busy = mp.Process(target=spin, daemon=True) if args.busy else None
    if busy:
        busy.start()
    load0 = os.getloadavg()
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        for i in range(3):  # warm-up
            model.train_step(xs[i % 4], xs[(i + 1) % 4], i)
        for _ in range(args.repeats):
            for threads in rates:
                torch.set_num_threads(threads)
                t0 = time.perf_counter()
                for i in range(args.window):
                    model.train_step(xs[i % 4], xs[(i + 1) % 4], i)
                rates[threads].append(args.window / (time.perf_counter() - t0))
    finally:
        if busy:
            busy.terminate()
            busy.join()
    print(f"cpus: {os.cpu_count()}, busy spin process: {'yes' if args.busy else 'no'}, "
          f"{args.repeats} windows x {args.window} steps per thread count")
    for threads, v in rates.items():
        print(f"threads={threads}: median {statistics.median(v):.2f} steps/s  "
              f"(windows: {', '.join(f'{r:.2f}' for r in v)})")
    print(f"load average (1/5/15 min) before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
