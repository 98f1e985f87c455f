"""Metric-suite speed on dSprites: the Codes cache (each needed grid point encoded once) vs.
re-encoding every request, as disentanglement_lib does (same metrics, settings and seed).

    python benchmarks/metrics_speed.py [RUN_DIR] [--preset dlib|paper|fast] [--metrics a,b]
                                       [--device cpu] [--threads N] [--batch-size 256]
                                       [--modes cached,reencode] [--json FILE]

Without RUN_DIR the model is a randomly initialised FactorVAE with the paper's dSprites
networks (training does not change the amount of work: both ways encode the same images).
Its encoder means hardly vary, so every dimension would count as collapsed and the FactorVAE
metric would stop before voting: for it the script sets ``factor_vae.prune_threshold=0``.
Both modes draw the same grid points, so they give the same scores up to float rounding of
the encoder (its output can depend on the batch it is computed in); the script checks the
headline numbers agree within 5e-3. Printed per mode: wall time, time inside the encoder, encoder
forward passes (batches) and images encoded, and per-metric seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from factorvae.metrics.codes import Codes
from factorvae.metrics.suite import METRICS, evaluate, headline, parse_metrics, preset_params


def load(run_dir, device):
    if run_dir:
        from factorvae.runs import load_run

        r = load_run(run_dir, device=device)
        return r.model, r.dataset, f"run {r.dir} (step {r.step})"
    from factorvae.config import resolve
    from factorvae.data import load_dataset
    from factorvae.runs import build_model, pick_device

    dataset = load_dataset("dsprites", progress=True)
    cfg = resolve({"model": {"name": "factorvae"}})
    model, _ = build_model(cfg, dataset.channels, pick_device(device))
    model.eval()
    return model, dataset, "randomly initialised FactorVAE (paper dSprites networks; factor_vae.prune_threshold=0)"


def one_mode(model, dataset, cache: bool, args) -> dict:
    device = next(model.parameters()).device
    inside = [0.0]

    def encode(x):
        t = time.perf_counter()
        z = model.representation(x.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        inside[0] += time.perf_counter() - t
        return z

    t0 = time.perf_counter()
    codes = Codes.from_encoder(encode, dataset.images, dataset.grid, batch_size=args.batch_size, cache=cache,
                               progress=False)
    overrides = None if args.run_dir else {"factor_vae": {"prune_threshold": 0.0}}
    res = evaluate(codes, metrics=args.metrics, preset=args.preset, seed=args.seed, overrides=overrides)
    wall = time.perf_counter() - t0
    return {"mode": "cached" if cache else "reencode", "wall_s": round(wall, 2), "encoder_s": round(inside[0], 2),
            "forward_passes": codes.encoder_calls, "images_encoded": codes.images_encoded,
            "distinct_points": int(codes.num_encoded) if cache else None,
            "metric_seconds": res["seconds"], "headline": headline(res)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", help="a trained dSprites run (default: random-init model)")
    ap.add_argument("--preset", default="dlib")
    ap.add_argument("--metrics", default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--modes", default="cached,reencode")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    args.metrics = parse_metrics(args.metrics)
    preset_params(args.preset)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)

    model, dataset, what = load(args.run_dir, args.device)
    device = next(model.parameters()).device
    if device.type == "cuda":
        dataset.to(device)  # gather images on the GPU, as the trainer does
    print(f"{what}; preset {args.preset}; metrics {','.join(args.metrics)}; device {args.device}; "
          f"torch threads {torch.get_num_threads()}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for mode in args.modes.split(","):
        r = one_mode(model, dataset, mode == "cached", args)
        rows.append(r)
        print(f"{r['mode']:>9}: {r['wall_s']:8.1f} s total, {r['encoder_s']:8.1f} s in the encoder, "
              f"{r['forward_passes']} forward passes, {r['images_encoded']} images encoded"
              + (f" ({r['distinct_points']} distinct grid points)" if r["distinct_points"] is not None else ""),
              flush=True)
        print("           per metric (s): " + ", ".join(f"{k} {v}" for k, v in r["metric_seconds"].items()))
    if len(rows) == 2:
        a, b = rows
        print(f"speed-up {b['wall_s'] / max(a['wall_s'], 1e-9):.1f}x; images encoded "
              f"{b['images_encoded'] / max(a['images_encoded'], 1):.1f}x fewer with the cache")
        diff = {m: abs(a["headline"][m] - b["headline"][m]) for m in a["headline"]}
        print("headline scores, cached vs re-encoded: " + ", ".join(
            f"{m} {a['headline'][m]:.4f}/{b['headline'][m]:.4f}" for m in a["headline"]))
        # Same grid points both ways; only float rounding differs (an encoder's output can depend
        # on the batch it is computed in, e.g. cuDNN picks kernels by batch size), which may
        # flip a few near-tied votes or classifier decisions.
        if max(diff.values()) > 5e-3:
            print("warning: the two modes disagree by more than 5e-3", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"what": what, "preset": args.preset, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
