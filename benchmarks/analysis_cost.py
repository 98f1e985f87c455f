"""CPU cost of a sweep trial's analyses (``factorvae.sweep.trial.evaluate_trial``): true TC,
reconstruction error, importance-sampled log p(x); the unit costs behind
``factorvae.sweep.trial.ANALYSIS_COST`` (README, "Sweeps: what an evaluation costs").

    python benchmarks/analysis_cost.py [--threads 1] [--n 20000]

A randomly initialised FactorVAE with the paper's dSprites networks on N random binary 64x64
images (the work does not depend on the weights or the pictures). Unit costs, CPU seconds:
- ``encode``: per image encoded (true TC encodes its whole mixture, M images),
- ``tc_pair``: per (sample, mixture component) pair of the TC's logsumexps (S x M),
- ``recon``: per image of the reconstruction error (encode + decode),
- ``log_px``: per image and importance sample (K decodes per image).
Prints them with the load average (a busy machine is slower: CPU time is what an idle core takes).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from factorvae.config import resolve
from factorvae.data.store import ImageData
from factorvae.metrics.likelihood import estimate_log_likelihood
from factorvae.metrics.recon import reconstruction_error
from factorvae.metrics.tc import encode_posteriors, model_total_correlation
from factorvae.runs import build_model


def cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=20000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    data = (torch.rand((args.n, 1, 64, 64), generator=gen) < 0.1).to(torch.uint8)
    dataset = ImageData("random", data, None, scale=1.0)
    model, _ = build_model(resolve({"model": {"name": "factorvae"}}), 1, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        enc = cpu(lambda: encode_posteriors(model, dataset, torch.arange(args.n).numpy())) / args.n
        s = 1000
        tc = cpu(lambda: model_total_correlation(model, dataset, s, 0))
        pair = max(tc - enc * args.n, 0.0) / (s * args.n)
        rec = cpu(lambda: reconstruction_error(model, dataset, 2000)) / 2000
        lp = cpu(lambda: estimate_log_likelihood(model, dataset, 32, 100)) / (32 * 100)
    out = {"encode": enc, "tc_pair": pair, "recon": rec, "log_px": lp, "threads": args.threads,
           "load_average": os.getloadavg()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
