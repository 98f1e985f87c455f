"""The Higgins et al. (β-VAE) metric, disentanglement_lib's ``beta_vae_sklearn`` (Higgins et al.
2017; compared in Kim & Mnih 2018, §4).

One training point: choose a factor k uniformly; draw L = ``batch_size`` pairs of grid points
that agree on factor k and are independent otherwise; the feature is the mean over the pairs
of |z1 - z2| per code dimension, the label is k. A linear classifier (scikit-learn
``LogisticRegression`` with its defaults, as disentanglement_lib: no tuning) is fitted on
``num_train`` points; the score is its accuracy on ``num_eval`` fresh points.

The paper's criticism (§4): with K-1 factors disentangled and one absent from the code, the
classifier still identifies the absent factor from "all feature values near their mean"
and scores ~100%, while the FactorVAE metric drops (see docs/metrics.md and the test
``test_higgins_metric_blind_to_an_absent_factor``).
"""

from __future__ import annotations

import warnings

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.record import Metric


def draw_pairs(grid, n: int, batch_size: int, rng: np.random.Generator):
    """Labels (n,) and two (n, L, K) class arrays that agree on factor ``label`` per point."""
    k = rng.integers(0, grid.num_factors, size=n)
    c1 = grid.sample(n * batch_size, rng).reshape(n, batch_size, grid.num_factors)
    c2 = grid.sample(n * batch_size, rng).reshape(n, batch_size, grid.num_factors)
    rows = np.arange(n)
    c2[rows, :, k] = c1[rows, :, k]
    return k, c1, c2


def features(codes: Codes, rng: np.random.Generator, batch_size: int, num_points: int):
    """(points (n, D), labels (n,)) of the Higgins metric."""
    k, c1, c2 = draw_pairs(codes.grid, num_points, batch_size, rng)
    both = np.stack([c1, c2])  # one request for every point: big encoder batches
    codes.prefetch(both.reshape(-1, codes.grid.num_factors))
    points = np.empty((num_points, codes.num_codes))
    block = 2048
    for a in range(0, num_points, block):
        z = codes.get(both[:, a:a + block])
        points[a:a + block] = np.mean(np.abs(z[0] - z[1]), axis=1)
    return points, k


def beta_vae(codes: Codes, rng: np.random.Generator, batch_size: int = 64, num_train: int = 10000,
             num_eval: int = 5000) -> dict:
    """Higgins et al. metric with a scikit-learn linear classifier (dlib ``beta_vae_sklearn``)."""
    from sklearn.exceptions import ConvergenceWarning  # heavy (scikit-learn): imported only when this metric runs
    from sklearn.linear_model import LogisticRegression

    if batch_size < 1 or num_train < 2 or num_eval < 1:
        raise UserError("beta_vae: batch_size >= 1, num_train >= 2 and num_eval >= 1 are needed")
    train_x, train_y = features(codes, rng, batch_size, num_train)
    if len(np.unique(train_y)) < 2:
        raise UserError("beta_vae: the training points cover a single factor; raise num_train")
    model = LogisticRegression(random_state=int(rng.integers(2**31 - 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # dlib's defaults, warnings and all
        model.fit(train_x, train_y)
    train_accuracy = float(np.mean(model.predict(train_x) == train_y))
    eval_x, eval_y = features(codes, rng, batch_size, num_eval)
    eval_accuracy = float(np.mean(model.predict(eval_x) == eval_y))
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy,
            "classifier_iterations": int(np.max(model.n_iter_))}


def draws(params, num_grid: int) -> int:
    """Grid points drawn: two per pair, L pairs per training and evaluation point."""
    return int(2 * (params["num_train"] + params["num_eval"]) * params["batch_size"])


_DLIB = {"batch_size": 64, "num_train": 10000, "num_eval": 5000}

METRIC = Metric(
    name="beta_vae", function=beta_vae, label="Higgins (β-VAE) metric", fixes_factor=True, draws=draws,
    keys=("train_accuracy", "eval_accuracy"), headline="eval_accuracy",
    presets={"dlib": _DLIB, "paper": _DLIB, "fast": {"batch_size": 64, "num_train": 300, "num_eval": 200}},
    seconds={"fast": 0.5, "dlib": 0.8, "paper": 1.5},
)
