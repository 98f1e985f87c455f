"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018), as
disentanglement_lib computes it (Eastwood & Williams 2018; disentanglement_lib's dci.py).

For each factor k a gradient-boosted tree classifier (scikit-learn's
``GradientBoostingClassifier()`` defaults: 100 depth-3 trees, learning rate 0.1) predicts
factor k from all codes; R[:, k] = its impurity-based feature importances.
- disentanglement: D_j = 1 - H_K(R[j, :] / sum_k R[j, k]) per code (entropy in base K),
  weighted by code j's share of the total importance;
- completeness: C_k = 1 - H_D(R[:, k] / sum_j R[j, k]) per factor, weighted likewise;
- informativeness_train / _test: mean classification accuracy over factors (dlib reports
  accuracy, not the paper's prediction error).

Speed: the trees come from :class:`factorvae.metrics.gbt.GradientBoostedTrees`, an exact
vectorised re-implementation of that classifier (same splits, leaves, learning rate and
importances; ties between equally good splits broken at random as scikit-learn does),
with one factor per thread. ``backend="sklearn"`` fits scikit-learn's own classifier
instead (slower; for checking).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.stats

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.record import Metric
from factorvae.metrics.gbt import SklearnGBT, fit_gbt

BACKENDS = ("exact", "sklearn")


def map_factors(one, K: int, workers: int) -> list:
    """``[one(k) for k in range(K)]``, over ``workers`` threads when more than one (the fits
    release the GIL in NumPy and scikit-learn)."""
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, range(K)))
    return [one(k) for k in range(K)]


def fit_importances(x_train, y_train, x_test, y_test, backend: str = "exact", n_jobs: int | None = None,
                    n_estimators: int = 100, cache: dict | None = None):
    """Importance matrix (D, K) and per-factor train/test accuracies (one GBT per factor,
    ``gbt.fit_gbt``: reused from ``cache`` when another metric fitted it on the same data)."""
    K = y_train.shape[1]
    cores = n_jobs if n_jobs else (os.cpu_count() or 1)
    workers = min(K, cores)
    inner = max(1, cores // workers)  # threads per factor: the chunks of one stage's trees

    def one(k):
        model = fit_gbt(x_train, y_train[:, k], cache, n_estimators, inner, SklearnGBT if backend == "sklearn" else None)
        train_pred = model.predict_train()
        return (np.abs(model.feature_importances_), float(np.mean(train_pred == y_train[:, k])),
                float(np.mean(model.predict(x_test) == y_test[:, k])))

    results = map_factors(one, K, workers)
    importance = np.stack([r[0] for r in results], axis=1)
    return importance, np.array([r[1] for r in results]), np.array([r[2] for r in results])


def disentanglement_per_code(importance: np.ndarray) -> np.ndarray:
    return 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])


def disentanglement(importance: np.ndarray) -> float:
    per_code = disentanglement_per_code(importance)
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    code_importance = importance.sum(axis=1) / importance.sum()
    return float(np.sum(per_code * code_importance))


def completeness_per_factor(importance: np.ndarray) -> np.ndarray:
    return 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])


def completeness(importance: np.ndarray) -> float:
    per_factor = completeness_per_factor(importance)
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    factor_importance = importance.sum(axis=0) / importance.sum()
    return float(np.sum(per_factor * factor_importance))


def dci(codes: Codes, rng: np.random.Generator, num_train: int = 10000, num_test: int = 5000,
        backend: str = "exact", n_jobs: int | None = None, n_estimators: int = 100) -> dict:
    """DCI with gradient-boosted trees (dlib ``dci``, study settings by default; ``n_estimators``
    is scikit-learn's default, 100, as in dlib: lower it only for quick looks)."""
    if backend not in BACKENDS:
        raise UserError(f"dci: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if num_train < 2 or num_test < 1 or n_estimators < 1:
        raise UserError("dci: num_train >= 2, num_test >= 1 and n_estimators >= 1 are needed")
    (y_train, x_train), (y_test, x_test) = codes.sample_split(num_train, num_test, rng)
    importance, acc_train, acc_test = fit_importances(x_train, y_train, x_test, y_test, backend, n_jobs,
                                                      n_estimators, codes.fits)
    if codes.num_codes == 1:  # entropy in base 1 is undefined: one code is trivially complete
        comp = 1.0
    else:
        comp = completeness(importance)
    if codes.grid.num_factors == 1:
        dis = 1.0
    else:
        dis = disentanglement(importance)
    return {
        "disentanglement": dis,
        "completeness": comp,
        "informativeness_train": float(np.mean(acc_train)),
        "informativeness_test": float(np.mean(acc_test)),
        "importance_matrix": importance.tolist(),
    }


_DLIB = {"num_train": 10000, "num_test": 5000}

METRIC = Metric(
    name="dci", function=dci, label="DCI disentanglement",
    keys=("disentanglement", "completeness", "informativeness_train", "informativeness_test"),
    headline="disentanglement",
    presets={"dlib": _DLIB, "paper": _DLIB, "fast": {"num_train": 2000, "num_test": 1000}},
    seconds={"fast": 18.3, "dlib": 73.3, "paper": 75.3},
)
