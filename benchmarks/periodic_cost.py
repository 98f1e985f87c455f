"""How long a group's training loop is blocked by one periodic Fig. 5 evaluation (``eval_every``),
synchronous (``train.eval_async: false``: ``group_train.evaluate_group``, the metric suites in
threads of the training process) against asynchronous (``true``: ``async_eval.AsyncEval.submit``,
the whole grid encoded at the step, the scoring handed to the warm worker process).

    python benchmarks/periodic_cost.py [--models 2,4] [--metrics default|a,b] [--preset fast] [--data toy] [--repeats 3]

Wall seconds, median of ``--repeats`` (each evaluation of one round of N untrained FactorVAEs
with the paper's 2D Shapes networks; the metrics cost about the same on any codes), torch on
one thread, ``os.getloadavg()`` printed with each figure. For the asynchronous path it also
prints how long the worker took to send the scores back (training goes on meanwhile; a worker
slower than ``eval_every`` steps of training makes the next evaluation wait:
``async_eval.MAX_IN_FLIGHT``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from factorvae.async_eval import AsyncEval
from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.group_train import evaluate_group
from factorvae.metrics.suite import parse_metrics
from factorvae.runs import build_model

#: the paper's 2D Shapes networks (Table 1; configs/sweeps/headline_pair.yaml)
PAPER = {"z_dim": 10, "arch": {"channels": [32, 32, 64, 64], "fc": 128, "encoder_fc_relu": True}}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="2,4", help="group sizes, comma-separated")
    ap.add_argument("--metrics", default="default", help="'default' (the six of train.eval_metrics: null) or a,b")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--data", default="toy")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    metrics = None if args.metrics == "default" else parse_metrics(args.metrics)
    dataset = load_dataset(args.data, progress=False)
    print(f"{args.data}: {len(dataset.grid):,} grid points; preset {args.preset}; metrics "
          f"{', '.join(parse_metrics(metrics))}; CPU, torch threads 1, {os.cpu_count()} cores")
    with AsyncEval() as evaluator:
        evaluator.warm()
        evaluator.drain()
        for n in (int(x) for x in args.models.split(",")):
            cfg = resolve({"model": {"name": "factorvae", **PAPER}, "data": {"name": args.data},
                           "train": {"device": "cpu"}})
            models = [build_model(cfg, dataset.channels, torch.device("cpu"), seed=i)[0] for i in range(n)]
            seeds = list(range(n))
            sync, blocked, back = [], [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                evaluate_group(models, dataset, args.preset, seeds, metrics)
                sync.append((time.perf_counter() - t, load()))
            for _ in range(args.repeats):
                done = []
                t = time.perf_counter()
                evaluator.submit(models, dataset, args.preset, seeds, metrics, 0, [f"model {i}" for i in seeds],
                                 [done.append] * n)
                blocked.append((time.perf_counter() - t, load()))
                evaluator.drain()  # one round at a time: the next blocked figure waits for nothing
                back.append((time.perf_counter() - t, load()))
                assert len(done) == n
            for name, rows in (("sync: blocked", sync), ("async: blocked", blocked), ("async: scores back after", back)):
                secs = [r[0] for r in rows]
                print(f"N={n}  {name:<25} median {statistics.median(secs):6.2f} s  "
                      f"({', '.join(f'{s:.2f}' for s in secs)}; load {', '.join(r[1] for r in rows)})", flush=True)


if __name__ == "__main__":
    main()
