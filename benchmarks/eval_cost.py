"""CPU cost of one evaluation at each preset on dSprites, split into what it is made of: the
figures ``factorvae.metrics.plan.MEASURED`` quotes.

    python benchmarks/eval_cost.py [--presets fast,dlib,paper] [--metrics a,b|all] [--encode 16384] [--json FILE]

CPU seconds (``time.process_time``, one thread), not wall time: on a shared machine wall time
measures the neighbours. Three parts:

1. encoder cost per image: a randomly initialised FactorVAE with the paper's dSprites networks
   encodes ``--encode`` random grid images in batches of 256 (training does not change it);
2. images each preset makes the Codes cache encode: the preset's real draws, counted exactly
   (an encoder that looks codes up in a table, so no network runs);
3. each metric's own compute on those codes: a synthetic 10-d representation of the dSprites
   grid (5 rotated, noisy factor dims + 5 noise dims; trees, SVMs and logistic regressions
   cost the same on it as on a model's codes). DCI runs with ``n_jobs=1``.

Then expected CPU time = images x encoder cost + metric compute; peak RSS of this process is
printed too (the data set's memory-mapped images count when touched). ``--metrics`` names the
metrics to time (default: the default set; ``all``: every registered one); ``--encode 0`` skips
part 1 and needs no images (only the grid). A preset whose parameters for a metric equal an
earlier preset's reuses that measurement (the same work).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch

from factorvae.metrics.codes import Codes
from factorvae.metrics.registry import RECORDS
from factorvae.metrics.suite import metric_rng, parse_metrics, preset_params


def synthetic_codes(grid, rng):
    y = grid.all_classes()[:, [k for k, s in enumerate(grid.sizes) if s > 1]].astype(np.float32)
    y = (y - y.mean(0)) / y.std(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)) * 0.3 + np.eye(5))
    z = np.concatenate([y @ q.astype(np.float32) + 0.1 * rng.normal(size=y.shape).astype(np.float32),
                        rng.normal(size=(len(y), 5)).astype(np.float32)], axis=1)
    return z


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", default="fast,dlib,paper")
    p.add_argument("--metrics", default=None, help="a,b or all (default: the default set)")
    p.add_argument("--encode", type=int, default=16384)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)

    from factorvae.config import resolve
    from factorvae.data import load_dataset
    from factorvae.data.dsprites import GRID
    from factorvae.runs import build_model

    names = parse_metrics(args.metrics)
    grid, per_image = GRID, 0.0
    rng = np.random.default_rng(0)
    if args.encode:
        dataset = load_dataset("dsprites", progress=False)
        model, _ = build_model(resolve({"model": {"name": "factorvae"}}), dataset.channels, torch.device("cpu"))
        model.eval()
        idx = rng.choice(len(grid), args.encode, replace=False)
        t = time.process_time()
        with torch.no_grad():
            for a in range(0, len(idx), 256):
                model.representation(dataset.images(idx[a:a + 256]))
        per_image = (time.process_time() - t) / len(idx)
    out = {"encode_cpu_ms_per_image": round(per_image * 1000, 3), "presets": {},
           "loadavg": [round(x, 2) for x in os.getloadavg()]}
    done: list[tuple[str, dict, float]] = []  # (metric, params, cpu s) already measured
    print(json.dumps(out), flush=True)

    table = torch.from_numpy(synthetic_codes(grid, rng))
    for preset in args.presets.split(","):
        params = preset_params(preset)
        params["dci"]["n_jobs"] = 1
        codes = Codes.from_encoder(lambda x: x, lambda i: table[torch.as_tensor(i)], grid, batch_size=4096,
                                   progress=False)
        cpu = {}
        for name in names:
            same = [s for m, q, s in done if m == name and q == params[name]]
            if same:
                cpu[name] = same[0]
                continue
            t = time.process_time()
            RECORDS[name].function(codes, metric_rng(0), **params[name])
            cpu[name] = round(time.process_time() - t, 1)
            done.append((name, params[name], cpu[name]))
            print(json.dumps({preset: {name: cpu[name]}, "loadavg": os.getloadavg()[0]}), flush=True)
        images = codes.images_encoded
        out["presets"][preset] = {"images_encoded": images, "metric_cpu_s": cpu,
                                  "expected_cpu_s": round(images * per_image + sum(cpu.values())),
                                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
        print(json.dumps({preset: out["presets"][preset]}), flush=True)
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
