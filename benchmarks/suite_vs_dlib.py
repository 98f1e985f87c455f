"""The whole metric suite on a trained dSprites model, encoding included: factorvae against
disentanglement_lib's way of computing the same scores, on this machine (issue 21: >= 5x).

    python benchmarks/suite_vs_dlib.py RUN_DIR [--preset dlib] [--representation mean|both]
                                       [--threads 1] [--no-dlib-compute] [--json FILE]

Ours, as a user gets it: the run's model, its data set, ``posterior_codes`` (one Codes cache
for the mean and sampled representations) and every metric (``metrics="all"``) at the preset:
wall and CPU seconds from the data set opened to the last score, images encoded.

dlib's way, from its parts (dlib itself no longer installs):
- encoding: every metric encodes every image it draws (dlib's ``evaluate.py`` hands each metric
  the representation function), in its own batches: 64 images per vote in the beta-VAE and
  FactorVAE metrics, 1,000 at once in the strong task, 16 elsewhere
  (``generate_batch_factor_code``'s and ``obtain_representation``'s batch_size), and all over
  again for the sampled representation. Images per metric: the records' ``draws`` at the
  preset (what ``ext_metrics_speed.py`` prints). CPU seconds per image: this model's encoder
  timed here at those batch sizes (median of 5 windows of ~8,192 images), same threads; dlib's
  TF 1 encoder is not assumed faster.
- compute: the same metrics run here on the already-encoded codes (no encoding in the time)
  with dlib's learner, scikit-learn's ``GradientBoostingClassifier()`` (``metrics.gbt.DlibGBT``,
  unseeded as dlib leaves it), in place of our exact GBT. Everything else is our code, which is
  at least as fast as dlib's (``ext_metrics_speed.py``), and our reduced task fits K times
  fewer importance GBTs than dlib's: both make dlib's figure an underestimate. For ``both``
  dlib's compute is counted twice (the mean's time; the sampled codes cost the same).

CPU seconds are process time (every thread); wall seconds depend on the load (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from factorvae.metrics import gbt, suite
from factorvae.metrics.registry import RECORDS
from factorvae.metrics.sampled import posterior_codes
from factorvae.runs import load_run, open_dataset

#: images per representation_function call in dlib's metrics (16: generate_batch_factor_code)
DLIB_BATCH = {"beta_vae": 64, "factor_vae": 64, "strong_downstream_task": 1000}


class _NoSharing(dict):
    def __setitem__(self, key, value):
        pass


def seconds_per_image(model, channels: int, batch: int, repeats: int = 5, images: int = 8192) -> float:
    """CPU seconds per image of ``model.representation`` on batches of ``batch``: the median of
    ``repeats`` windows of ~``images`` images each (process time: less sensitive to the load)."""
    x = torch.rand(batch, channels, 64, 64)
    passes = max(1, images // batch)
    times = []
    with torch.inference_mode():
        model.representation(x)
        for _ in range(repeats):
            t = time.process_time()
            for _ in range(passes):
                model.representation(x)
            times.append((time.process_time() - t) / (passes * batch))
    return float(np.median(times))


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a trained dSprites run")
    ap.add_argument("--preset", default="dlib")
    ap.add_argument("--representation", default="mean", choices=("mean", "both"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (encoding); metrics use their own")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-dlib-compute", action="store_true", help="skip the (long) scikit-learn GBT run")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = suite.parse_metrics("all")
    params = suite.preset_params(args.preset)
    reps = ("mean", "sampled") if args.representation == "both" else ("mean",)
    r = load_run(args.run_dir, device="cpu", load_data=False)
    model = r.model.eval()
    print(f"{r.dir} (step {r.step:,}); preset {args.preset}; representation {args.representation}; torch threads "
          f"{args.threads}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}", flush=True)

    def ours():
        dataset = open_dataset(r.config, progress=False)
        codes = posterior_codes(model, dataset, seed=args.seed)
        res = {rep: suite.evaluate(codes[rep], metrics=names, preset=args.preset, seed=args.seed) for rep in reps}
        return dataset, codes, res

    (dataset, codes, res), wall, cpu = timed(ours)
    base = codes["mean"].base
    images = base.images_encoded
    print(f"ours: {wall:.0f} s wall, {cpu:.0f} s CPU, {images:,} images encoded ({base.num_encoded:,} distinct grid "
          f"points of {len(base.grid):,}); per metric (s, mean): "
          + ", ".join(f"{k} {v:.1f}" for k, v in res["mean"]["seconds"].items() if k != "total"), flush=True)

    N = len(base.grid)
    draws = {m: int(RECORDS[m].draws(params[m], N)) for m in names}
    per_image = {b: seconds_per_image(model, dataset.channels, b) for b in sorted({16, *DLIB_BATCH.values()})}
    encode = sum(draws[m] * per_image[DLIB_BATCH.get(m, 16)] for m in names) * len(reps)
    print(f"dlib encodes {sum(draws.values()) * len(reps):,} images ({len(reps)} x "
          + ", ".join(f"{m} {v:,}" for m, v in draws.items()) + "); our encoder here: "
          + ", ".join(f"batch {b}: {1 / s:,.0f} images/s" for b, s in per_image.items())
          + f" -> {encode:.0f} s", flush=True)
    out = {"run": str(r.dir), "step": r.step, "preset": args.preset, "representation": args.representation,
           "threads": args.threads, "load": os.getloadavg()[0], "ours": {"wall_s": wall, "cpu_s": cpu,
           "images": images, "seconds": res["mean"]["seconds"]}, "dlib_images": draws,
           "images_per_s": {b: 1 / s for b, s in per_image.items()}, "dlib_encode_s": encode}
    if not args.no_dlib_compute:
        gbt.GradientBoostedTrees = gbt.DlibGBT  # gbt.fit_gbt's default learner
        base.fits = _NoSharing()  # dlib fits every metric's classifiers anew
        np.random.seed(args.seed)
        dres, dwall, dcpu = timed(lambda: suite.evaluate(codes["mean"], metrics=names, preset=args.preset,
                                                         seed=args.seed))
        assert base.images_encoded == images, "the dlib-learner run encoded images: its time would include them"
        compute = dcpu * len(reps)
        print(f"dlib's learner on the cached codes: {dwall:.0f} s wall, {dcpu:.0f} s CPU per representation; per "
              "metric (s): " + ", ".join(f"{k} {v:.1f}" for k, v in dres["seconds"].items() if k != "total"))
        total = encode + compute
        print(f"dlib's way: {total:.0f} CPU s ({encode:.0f} encoding + {compute:.0f} compute); ours {cpu:.0f} CPU s, "
              f"{wall:.0f} s wall: {total / cpu:.1f}x (CPU), {sum(draws.values()) * len(reps) / images:.1f}x fewer images")
        out.update(dlib_compute_cpu_s=compute, dlib_seconds=dres["seconds"], ratio_cpu=total / cpu)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
