"""Time and memory of one whole evaluation at a preset on dSprites, end to end: the check of
``benchmarks/eval_cost.py``'s prediction (``factorvae.metrics.plan``, docs/metrics.md).

    python benchmarks/eval_presets.py --preset fast [--threads 1] [--batch-size 256] [--json FILE]

One preset per process (peak RSS is per process). The model is a randomly initialised FactorVAE
with the paper's dSprites networks (training does not change the amount of work);
``factor_vae.prune_threshold=0`` so that its near-constant means still vote (as in
benchmarks/metrics_speed.py). Prints wall and CPU time (CPU time is what an idle core would
take), seconds inside the encoder, images encoded, seconds per metric, peak resident memory
and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch

from factorvae.metrics.codes import Codes
from factorvae.metrics.suite import evaluate


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="fast")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from factorvae.config import resolve
    from factorvae.data import load_dataset
    from factorvae.runs import build_model

    dataset = load_dataset("dsprites", progress=False)
    model, _ = build_model(resolve({"model": {"name": "factorvae"}}), dataset.channels, torch.device("cpu"))
    model.eval()
    before = rss_mb()
    inside = [0.0]

    def encode(x):
        t = time.perf_counter()
        z = model.representation(x)
        inside[0] += time.perf_counter() - t
        return z

    t0, c0 = time.perf_counter(), time.process_time()
    codes = Codes.from_encoder(encode, dataset.images, dataset.grid, batch_size=args.batch_size, progress=False)
    r = evaluate(codes, preset=args.preset, seed=0, overrides={"factor_vae": {"prune_threshold": 0.0}})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = rss_mb()
    out = {"preset": args.preset, "threads": args.threads, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
           "encoder_s": round(inside[0], 1), "images_encoded": codes.images_encoded,
           "images_per_s": round(codes.images_encoded / max(inside[0], 1e-9)),
           "metric_s": {m: round(s, 1) for m, s in r["seconds"].items()},
           "rss_before_eval_mb": round(before), "peak_rss_mb": round(peak),
           "loadavg": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(out))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
