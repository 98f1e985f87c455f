"""Downstream classification tasks (Locatello et al., ICML 2019, "Challenging Common
Assumptions...", §4.4 and Appendix: "are disentangled representations useful for downstream
tasks?"; disentanglement_lib's downstream_task.py with its two predictors).

For each training size n in ``num_train``: draw n training and ``num_test`` test grid points
(fresh draws per n), fit one classifier per factor on the raw codes, report its accuracy:
``n:mean_train_accuracy``, ``n:mean_test_accuracy``, ``n:min_train_accuracy``,
``n:min_test_accuracy`` (the worst factor) and ``n:train_accuracy_factor_k`` /
``n:test_accuracy_factor_k`` per factor (dlib's keys; its variable names say "loss", the
values are accuracies).

Predictors, as dlib's ``utils.py`` builds them:
- ``logreg``: ``LogisticRegressionCV(Cs=10, cv=KFold(5))``, scoring accuracy (sklearn's default
  until 1.11, when it becomes the log-loss). We pass ``scoring=None``: sklearn's name for that
  old default, the very path dlib ran (``LogisticRegression.score`` per fold and C), so the
  chosen C does not change with sklearn 1.11; ``scoring="accuracy"`` gives the same values
  through the generic scorer, ~10% slower on small folds;
- ``boost``: ``GradientBoostingClassifier()`` defaults (100 depth-3 trees, learning rate 0.1),
  here the project's exact re-implementation (``metrics/gbt.py``), seeded from ``rng`` where
  dlib leaves it unseeded.
The factors' classifiers run on threads (results do not depend on it).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.dci import fit_importances, map_factors
from factorvae.metrics.gbt import fit_gbt
from factorvae.metrics.record import Metric

PREDICTORS = ("logreg", "boost")


def _logreg_one(x_train, y, x_test, seed: int):
    """Train and test predictions of dlib's ``logistic_regression_cv`` for one factor."""
    from sklearn.linear_model import LogisticRegressionCV  # heavy (scikit-learn): only when this metric runs
    from sklearn.model_selection import KFold

    if len(np.unique(y)) < 2:  # sklearn refuses one class; a constant prediction is the honest answer
        return np.full(len(x_train), y[0]), np.full(len(x_test), y[0])
    model = LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5), scoring=None, random_state=seed)
    model.fit(x_train, y)  # its warnings: silenced by the caller, around the threads
    return model.predict(x_train), model.predict(x_test)


def gbt_predict(x_train, y, x_eval: list[np.ndarray], cache: dict | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """One exact GBT (sklearn's defaults) fitted on (x_train, y) (``gbt.fit_gbt``, shared through
    ``cache``): its training predictions and its predictions for each array of ``x_eval``."""
    model = fit_gbt(x_train, y, cache)
    train = model.predict_train()
    if train is None:  # one class
        train = np.full(len(x_train), model.classes_[0])
    return train, [model.predict(x) for x in x_eval]


def factor_accuracies(predictor: str, x_train, y_train, x_test, y_test, rng: np.random.Generator,
                      n_jobs: int | None = None, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-factor train and test accuracy of ``predictor`` fitted on the codes, one per factor
    (GBTs shared through ``cache``, ``Codes.fits``)."""
    if predictor == "boost":
        _, train, test = fit_importances(x_train, y_train, x_test, y_test, n_jobs=n_jobs, cache=cache)
        return train, test
    if predictor != "logreg":
        raise UserError(f"unknown predictor {predictor!r}; choose one of {', '.join(PREDICTORS)}")
    K = y_train.shape[1]
    seeds = rng.integers(2**31 - 1, size=K)

    def one(k):
        p_train, p_test = _logreg_one(x_train, y_train[:, k], x_test, int(seeds[k]))
        return np.mean(p_train == y_train[:, k]), np.mean(p_test == y_test[:, k])

    # Tiny folds and unscaled codes: convergence and class-count notes, silenced here. Not in the
    # threads: the filters are global, and threads entering and leaving catch_warnings restore
    # each other's state, which let the notes through
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = map_factors(one, K, min(K, n_jobs or os.cpu_count() or 1))
    return np.array([r[0] for r in res]), np.array([r[1] for r in res])


def accuracy_scores(prefix: str, train: np.ndarray, test: np.ndarray) -> dict:
    """dlib's keys for per-factor accuracies: mean, min and each factor's."""
    out = {f"{prefix}:mean_train_accuracy": float(np.mean(train)), f"{prefix}:mean_test_accuracy": float(np.mean(test)),
           f"{prefix}:min_train_accuracy": float(np.min(train)), f"{prefix}:min_test_accuracy": float(np.min(test))}
    for k in range(len(train)):
        out[f"{prefix}:train_accuracy_factor_{k}"] = float(train[k])
        out[f"{prefix}:test_accuracy_factor_{k}"] = float(test[k])
    return out


def train_sizes(name: str, num_train) -> list[int]:
    sizes = [num_train] if isinstance(num_train, int) else list(num_train)
    if not sizes or any(not isinstance(n, int) or n < 2 for n in sizes):
        raise UserError(f"{name}: num_train must be a whole number >= 2 or a list of them, got {num_train!r}")
    return sizes


def downstream_task(codes: Codes, rng: np.random.Generator, num_train=(10, 100, 1000, 10000), num_test: int = 5000,
                    predictor: str = "logreg", n_jobs: int | None = None) -> dict:
    """Accuracy of a per-factor classifier on the codes, per training size, the sizes drawn in
    the order given (dlib ``compute_downstream_task``; Locatello et al. 2019, §4.4)."""
    sizes = train_sizes(f"downstream_task_{predictor}", num_train)
    if num_test < 1:
        raise UserError(f"downstream_task_{predictor}: num_test >= 1 is needed")
    out: dict = {}
    for n in sizes:
        (y_train, x_train), (y_test, x_test) = codes.sample_split(n, num_test, rng)
        train, test = factor_accuracies(predictor, x_train, y_train, x_test, y_test, rng, n_jobs, codes.fits)
        out.update(accuracy_scores(str(n), train, test))
    return out


def downstream_task_logreg(codes: Codes, rng: np.random.Generator, num_train=(10, 100, 1000, 10000),
                           num_test: int = 5000) -> dict:
    """Downstream task with cross-validated logistic regression (dlib ``downstream_task_logistic_regression``)."""
    return downstream_task(codes, rng, num_train, num_test, "logreg")


def downstream_task_boost(codes: Codes, rng: np.random.Generator, num_train=(10, 100, 1000, 10000),
                          num_test: int = 5000) -> dict:
    """Downstream task with gradient-boosted trees (dlib ``downstream_task_boosted_trees``)."""
    return downstream_task(codes, rng, num_train, num_test, "boost")


def draws_per_size(params, num_grid: int) -> int:
    """Grid points drawn: every training size plus a test set per size."""
    sizes = train_sizes("downstream_task", params["num_train"])
    return int(sum(sizes) + len(sizes) * params["num_test"])


SIZES = (10, 100, 1000, 10000)
KEYS = tuple(f"{n}:{s}_{p}_accuracy" for n in SIZES for s in ("mean", "min") for p in ("train", "test"))
# Sizes are drawn in the order listed (each a fresh draw: the order changes no size's distribution).
# Largest first: that draw is then the training and test set DCI draws from the same seed (10,000
# and 5,000 at the dlib preset), so the boosted trees' 10,000-point fits are DCI's (Codes.fits) and
# 10000:mean_test_accuracy equals DCI's informativeness_test, the same quantity. dlib draws 10 first.
_DLIB = {"num_train": sorted(SIZES, reverse=True), "num_test": 5000}
# fast: the same training sizes (the headline needs 10000), a smaller test set
_FAST = {"num_train": sorted(SIZES, reverse=True), "num_test": 1000}
# CPU s of the metric alone, codes cached (benchmarks/eval_cost.py --encode 0, load average 1.5-6.6)
METRIC_LOGREG = Metric(
    name="downstream_task_logreg", function=downstream_task_logreg, keys=KEYS, headline="10000:mean_test_accuracy",
    label="downstream (logistic regression)", presets={"dlib": _DLIB, "paper": _DLIB, "fast": _FAST},
    draws=draws_per_size, default=False, seconds={"fast": 43.9, "dlib": 51.3, "paper": 51.3})
METRIC_BOOST = Metric(
    name="downstream_task_boost", function=downstream_task_boost, keys=KEYS, headline="10000:mean_test_accuracy",
    label="downstream (boosted trees)", presets={"dlib": _DLIB, "paper": _DLIB, "fast": _FAST},
    draws=draws_per_size, default=False, seconds={"fast": 83.3, "dlib": 108.8, "paper": 108.8})
