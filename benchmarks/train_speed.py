"""Training speed: steps/s for β-VAE and FactorVAE (batch 64 + 64) on the paper's dSprites
networks, and the share of step time spent outside forward/backward/optimiser (data, logging).

    python benchmarks/train_speed.py [--steps 60] [--device cpu] [--threads N]

Method: (1) time `Method.train_step` alone on pre-made batches (compute only); (2) time the real
trainer loop (`factorvae.train.train`, with batch gathers from the uint8 store, log accumulation,
metrics.jsonl, TensorBoard, checkpoints at the end excluded) over the same number of steps;
overhead = 1 - compute / loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.runs import build_model, pick_device


def time_compute(cfg, dataset, steps, device):
    model, _ = build_model(cfg, dataset.channels, device)
    g = torch.Generator(device=device).manual_seed(0)
    xs = [dataset.sample_batch(64, g) for _ in range(8)]
    for i in range(5):  # warm-up
        model.train_step(xs[i % 8], xs[(i + 1) % 8], i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        model.train_step(xs[i % 8], xs[(i + 1) % 8], i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def time_loop(cfg, dataset, steps):
    from factorvae.train import train

    cfg = resolve(cfg, {"train": {"steps": steps + 5, "log_every": 10, "ckpt_every": 10**9, "image_every": 10**9}})
    with tempfile.TemporaryDirectory() as d:
        train(cfg, d, progress=False, dataset=dataset)
        recs = [r for r in __import__("factorvae.runs", fromlist=["RunDir"]).RunDir(d).read_metrics() if "steps_per_s" in r]
    # skip the first logging window (warm-up)
    rates = [r["steps_per_s"] for r in recs[1:]] or [recs[-1]["steps_per_s"]]
    return 1.0 / (sum(rates) / len(rates))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dataset = load_dataset("dsprites", progress=True).to(device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'model':<10} {'compute ms/step':>16} {'loop ms/step':>13} {'steps/s':>8} {'overhead':>9}")
    for name in ("betavae", "factorvae"):
        cfg = resolve({"model": {"name": name}, "train": {"device": str(device)}})
        c = time_compute(cfg, dataset, args.steps, device)
        loop = time_loop(cfg, dataset, args.steps)
        print(f"{name:<10} {c * 1e3:16.1f} {loop * 1e3:13.1f} {1 / loop:8.2f} {max(0.0, 1 - c / loop):9.1%}")


if __name__ == "__main__":
    main()
