"""CPU time of disentanglement_lib's other metric families (IRS, unsupervised, downstream
tasks, fairness, strong / reduced tasks, UDR) here vs dlib 1.5, on the parity grids, and the
images each side encodes for the whole suite on dSprites.

    python benchmarks/ext_metrics_speed.py [--cases i_perfect,ii_rotated] [--metrics irs,fairness] [--seed 0]
                                           [--replica]

dlib's CPU seconds are those of the shared parity set's EXT_METRICS.md ("dlib time per metric
and grid": process time of the metric call, seed 0; IRS / unsupervised / UDR: mean over 3
seeds), measured on a shared 2-vCPU machine like this one. Ours: process time (all threads)
of the metric function at the ``dlib`` preset on the same grid, codes already in the cache.

Images: dlib's metrics each encode every point they draw (evaluate.py calls the
representation function per batch, per metric); ours encode each distinct grid point once
for all metrics (and both representations): the expected number of distinct points among
all the draws, N (1 - exp(-draws / N)).

scikit-learn is imported before any timing (dlib's figures exclude its imports). ``--replica``
also times, in the same process and on the same draws, dlib's own logistic-regression loop
(``downstream_task.py`` + ``utils.logistic_regression_cv``: one
``LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5))`` per factor, sequential, fitted on the
transposed code matrix): a same-machine, same-load baseline for ``downstream_task_logreg``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import KFold

from factorvae.metrics import (downstream, fairness, irs, reduced_downstream, strong_downstream, suite,
                               unsupervised)
from factorvae.metrics.codes import Codes
from factorvae.metrics.registry import RECORDS as REGISTRY
from factorvae.metrics.suite import metric_rng
from factorvae.metrics.udr import load_udr_npz, udr

PARITY = Path(__file__).parents[1] / "tests" / "fixtures" / "parity"
CASES = ["i_perfect", "ii_rotated", "iii_absent", "iii_entangled", "iv_noise", "v_extra_dims"]
RECORDS = {r.name: r for r in (irs.METRIC, unsupervised.METRIC, downstream.METRIC_LOGREG, downstream.METRIC_BOOST,
                               fairness.METRIC, strong_downstream.METRIC, reduced_downstream.METRIC)}
#: dlib 1.5 CPU seconds per metric call (EXT_METRICS.md, "dlib time per metric and grid")
DLIB_CPU = {
    "i_perfect": {"irs": 0.1, "unsupervised": 0.1, "downstream_task_logreg": 21.4, "downstream_task_boost": 52.3,
                  "fairness": 38.3, "strong_downstream_task": 15.7, "reduced_downstream_task": 26.6},
    "ii_rotated": {"irs": 0.1, "unsupervised": 0.1, "downstream_task_logreg": 21.4, "downstream_task_boost": 72.7,
                   "fairness": 58.3, "strong_downstream_task": 21.9, "reduced_downstream_task": 29.5},
    "iii_absent": {"irs": 0.1, "unsupervised": 0.1, "downstream_task_logreg": 19.1, "downstream_task_boost": 51.5,
                   "fairness": 36.5, "strong_downstream_task": 18.5, "reduced_downstream_task": 34.2},
    "iii_entangled": {"irs": 0.1, "unsupervised": 0.1, "downstream_task_logreg": 15.9, "downstream_task_boost": 53.0,
                      "fairness": 42.7, "strong_downstream_task": 18.8, "reduced_downstream_task": 34.5},
    "iv_noise": {"irs": 0.1, "unsupervised": 0.1, "downstream_task_logreg": 3.8, "downstream_task_boost": 70.7,
                 "fairness": 56.8, "strong_downstream_task": 20.9, "reduced_downstream_task": 29.1},
    "v_extra_dims": {"irs": 0.1, "unsupervised": 0.3, "downstream_task_logreg": 24.6, "downstream_task_boost": 74.1,
                     "fairness": 59.4, "strong_downstream_task": 23.2, "reduced_downstream_task": 28.7},
    "udr_i_perfect": {"udr_lasso": 0.0, "udr_spearman": 0.2},
    "udr_v_extra_dims": {"udr_lasso": 0.0, "udr_spearman": 0.6},
}
#: dSprites' scored factor sizes (shape, scale, orientation, posX, posY) and grid points
DSPRITES = (3, 6, 40, 32, 32)


def dsprites_draws() -> dict[str, int]:
    """Grid points each metric draws on dSprites at the dlib preset (exact for this grid)."""
    K, total = len(DSPRITES), sum(DSPRITES)
    p = {n: r.presets["dlib"] for n, r in RECORDS.items()}
    s = p["strong_downstream_task"]
    return {
        "irs": p["irs"]["num_train"], "unsupervised": p["unsupervised"]["num_train"],
        "downstream_task_logreg": downstream.draws_per_size(p["downstream_task_logreg"], 0),
        "downstream_task_boost": downstream.draws_per_size(p["downstream_task_boost"], 0),
        "fairness": p["fairness"]["num_train"] + p["fairness"]["num_test_points_per_class"] * (K - 1) * total,
        "strong_downstream_task": sum(n + s["num_test"] for n in s["num_train"]) * (1 + K * s["n_experiment"]),
        "reduced_downstream_task": reduced_downstream.reduced_draws(p["reduced_downstream_task"], 0),
    }


def dlib_logreg_replica(codes: Codes, rng: np.random.Generator, num_train=(10, 100, 1000, 10000),
                        num_test: int = 5000) -> dict:
    """dlib's compute_downstream_task with logistic_regression_cv, as dlib runs it (sklearn's
    default scoring, sequential factors, (D, n) codes transposed), on our draws."""
    out = {}
    for n in num_train:
        (y_train, x_train), (y_test, x_test) = codes.sample_split(n, num_test, rng)
        mus_train, mus_test = np.ascontiguousarray(x_train.T), np.ascontiguousarray(x_test.T)
        acc = []
        for k in range(y_train.shape[1]):
            model = LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(np.transpose(mus_train), y_train[:, k])
            acc.append(np.mean(model.predict(np.transpose(mus_test)) == y_test[:, k]))
        out[f"{n}:mean_test_accuracy"] = float(np.mean(acc))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--metrics", default=",".join(list(RECORDS) + ["udr"]))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replica", action="store_true", help="also time dlib's own logistic loop here")
    args = ap.parse_args()
    names = args.metrics.split(",")
    print(f"load average {os.getloadavg()[0]:.1f}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    print(f"{'case':<16} {'metric':<24} {'ours CPU s':>10} {'dlib CPU s':>10} {'dlib/ours':>9}")
    for case in args.cases.split(","):
        d = np.load(PARITY / f"{case}.npz")
        codes = Codes.from_arrays(d["factors"], d["codes"], d["sizes"])
        for name in names:
            if name not in RECORDS:
                continue
            t = time.process_time()
            RECORDS[name].function(codes, metric_rng(args.seed), **RECORDS[name].presets["dlib"])
            ours = time.process_time() - t
            ref = DLIB_CPU[case][name]
            print(f"{case:<16} {name:<24} {ours:10.2f} {ref:10.1f} {ref / max(ours, 1e-3):9.1f}", flush=True)
            if name == "downstream_task_logreg" and args.replica:
                t = time.process_time()
                dlib_logreg_replica(codes, metric_rng(args.seed), **RECORDS[name].presets["dlib"])
                rep = time.process_time() - t
                print(f"{case:<16} {'  dlib loop, here':<24} {ours:10.2f} {rep:10.2f} {rep / max(ours, 1e-3):9.1f}",
                      flush=True)
    if "udr" in names:
        for case in ("udr_i_perfect", "udr_v_extra_dims"):
            models, logvars, _ = load_udr_npz(PARITY / f"{case}.npz")
            for corr in ("lasso", "spearman"):
                udr(models, np.random.default_rng(args.seed), logvars, corr, num_data_points=20)  # imports, untimed
                t = time.process_time()
                udr(models, np.random.default_rng(args.seed), logvars, corr)
                ours = time.process_time() - t
                ref = DLIB_CPU[case][f"udr_{corr}"]
                print(f"{case:<16} {'udr_' + corr:<24} {ours:10.2f} {ref:10.1f} {ref / max(ours, 1e-3):9.1f}")
    draws = dsprites_draws()
    N = math.prod(DSPRITES)
    six = {m: REGISTRY[m].draws(p, N) for m, p in suite.PRESETS["dlib"].items() if REGISTRY[m].default}
    for label, d in (("the 7 new metrics", draws), ("all 13 (the six of before too)", {**six, **draws})):
        dlib_images = sum(d.values())
        ours_images = round(N * -math.expm1(-dlib_images / N))
        print(f"\ndSprites, {label}, dlib preset, one representation: dlib encodes {dlib_images:,} images "
              f"({', '.join(f'{k} {v:,}' for k, v in d.items())}); one Codes cache encodes ~{ours_images:,} "
              f"distinct grid points: {dlib_images / ours_images:.1f}x fewer; mean and sampled: "
              f"{2 * dlib_images / ours_images:.1f}x (dlib encodes again per representation, ours once).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
