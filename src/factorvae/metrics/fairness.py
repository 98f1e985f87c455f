"""Fairness of classifiers trained on the representation (Locatello et al., NeurIPS 2019, "On
the Fairness of Disentangled Representations", §4, Eq. (1)-(2); disentanglement_lib's fairness.py).

For each target factor i a classifier (gradient-boosted trees, dlib's ``fairness.gin``) is
trained on the codes of ``num_train`` random grid points. For each sensitive factor j != i:
draw ``num_test_points_per_class`` factor vectors, set factor j to each of its classes c in
turn (an exact intervention: the codes of those grid points) and count the predicted classes
of i. Unfairness of (i, j): the total variation distance between the prediction histogram
under j = c and the pooled histogram, averaged over c (weighted by the number of predictions,
``mean_fairness``) or maximised over c (``max_fairness``). Then aggregated as dlib does:
``p:pred{i}:sens{j}``, ``p:pred{i}:{mean,max}_sens``, ``p:sens{j}:{mean,max}_pred``,
``p:{mean,max}_sens:{mean,max}_pred`` and ``p:{mean,max}_pred:{mean,max}_sens`` for p in
``mean_fairness``, ``max_fairness``. The paper's score is ``mean_fairness:mean_pred:mean_sens``
(lower = fairer).
"""

from __future__ import annotations

import os

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.dci import map_factors
from factorvae.metrics.downstream import gbt_predict
from factorvae.metrics.record import Metric


def inter_group_fairness(counts: np.ndarray) -> tuple[float, float]:
    """(count-weighted mean, max) over sensitive classes (columns) of the total variation
    distance between that column's prediction distribution and the pooled one (Eq. (2))."""
    pooled = counts.sum(axis=1) / counts.sum()
    per_class = counts.sum(axis=0)
    tv = np.abs(counts / per_class[None, :] - pooled[:, None]).sum(axis=0) / 2.0
    return float(np.sum(tv * per_class) / per_class.sum()), float(tv.max())


def scores_dict(matrix: np.ndarray, prefix: str) -> dict:
    """dlib's aggregation of a (target i, sensitive j) matrix, diagonal excluded."""
    K = matrix.shape[0]
    off = ~np.eye(K, dtype=bool)
    out = {f"{prefix}:pred{i}:sens{j}": float(matrix[i, j]) for i in range(K) for j in range(K) if i != j}
    rows = [matrix[i][off[i]] for i in range(K)]
    cols = [matrix[:, j][off[:, j]] for j in range(K)]
    row_mean, row_max = [r.mean() for r in rows], [r.max() for r in rows]
    col_mean, col_max = [c.mean() for c in cols], [c.max() for c in cols]
    for i in range(K):
        out[f"{prefix}:pred{i}:mean_sens"], out[f"{prefix}:pred{i}:max_sens"] = float(row_mean[i]), float(row_max[i])
    for j in range(K):
        out[f"{prefix}:sens{j}:mean_pred"], out[f"{prefix}:sens{j}:max_pred"] = float(col_mean[j]), float(col_max[j])
    for a, agg in (("mean", np.mean), ("max", np.max)):
        for b, vals in (("mean", (col_mean, row_mean)), ("max", (col_max, row_max))):
            out[f"{prefix}:{a}_sens:{b}_pred"] = float(agg(vals[0]))
            out[f"{prefix}:{a}_pred:{b}_sens"] = float(agg(vals[1]))
    return out


def fairness(codes: Codes, rng: np.random.Generator, num_train: int = 10000, num_test_points_per_class: int = 100,
             n_jobs: int | None = None) -> dict:
    """Unfairness of a GBT predicting factor i under interventions on factor j (Locatello et
    al. 2019b, Eq. (2); dlib ``compute_fairness``)."""
    K = codes.grid.num_factors
    if K < 2:
        raise UserError("fairness needs at least two factors (a target and a sensitive one)")
    if num_train < 2 or num_test_points_per_class < 1:
        raise UserError("fairness: num_train >= 2 and num_test_points_per_class >= 1 are needed")
    sizes = codes.grid.sizes
    y_train, x_train = codes.sample(num_train, rng)
    # the intervened factor vectors of every (i, j), drawn up front so the draws do not depend on threads
    tests = {}
    for i in range(K):
        for j in range(K):
            if i != j:
                base = codes.grid.sample(num_test_points_per_class, rng)
                inter = np.repeat(base[None], sizes[j], axis=0)
                inter[:, :, j] = np.arange(sizes[j])[:, None]
                tests[i, j] = inter.reshape(-1, K)
    codes.prefetch(np.concatenate(list(tests.values())))

    def one(i):
        js = [j for j in range(K) if j != i]
        _, preds = gbt_predict(x_train, y_train[:, i], [codes.get(tests[i, j]) for j in js], codes.fits)
        rows = {}
        for j, p in zip(js, preds):
            p = p.reshape(sizes[j], num_test_points_per_class)
            counts = np.stack([np.bincount(p[c], minlength=sizes[i]) for c in range(sizes[j])], axis=1)
            rows[j] = inter_group_fairness(counts)
        return rows

    results = map_factors(one, K, min(K, n_jobs or os.cpu_count() or 1))
    mean_f, max_f = np.zeros((K, K)), np.zeros((K, K))
    for i, rows in enumerate(results):
        for j, (a, b) in rows.items():
            mean_f[i, j], max_f[i, j] = a, b
    return {**scores_dict(mean_f, "mean_fairness"), **scores_dict(max_f, "max_fairness")}


def fairness_draws(params, num_grid: int, sizes=None) -> int:
    """num_train + per (i, j) pair num_test_points_per_class x |j| (the grid's sizes unknown
    here: counted for 5 factors of 10 classes, a dSprites-like order of magnitude)."""
    K, classes = 5, 10
    return int(params["num_train"] + K * (K - 1) * params["num_test_points_per_class"] * classes)


_KEYS = tuple(f"{p}:{a}_{x}:{b}_{y}" for p in ("mean_fairness", "max_fairness")
              for x, y in (("pred", "sens"), ("sens", "pred")) for a in ("mean", "max") for b in ("mean", "max"))
_DLIB = {"num_train": 10000, "num_test_points_per_class": 100}
# CPU s of the metric alone, codes cached (benchmarks/eval_cost.py --encode 0, load average 1.5-6.6)
METRIC = Metric(
    name="fairness", function=fairness, keys=_KEYS, headline="mean_fairness:mean_pred:mean_sens", label="unfairness",
    presets={"dlib": _DLIB, "paper": _DLIB, "fast": {"num_train": 2000, "num_test_points_per_class": 50}},
    draws=fairness_draws, fixes_factor=True, default=False, seconds={"fast": 18.5, "dlib": 94.1, "paper": 94.1})
