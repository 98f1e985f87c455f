"""Modularity (Ridgeway & Mozer 2018) and explicitness, as disentanglement_lib computes them
(Ridgeway & Mozer 2018; disentanglement_lib's modularity_explicitness.py).

Modularity: m[j, k] = discrete mutual information between code j (20-bin histogram) and
factor k; per code θ_j = max_k m², δ_j = (Σ_k m² - θ_j) / (θ_j (K-1)), modularity_j = 1 - δ_j,
0 for a code with no information (θ_j = 0, e.g. a constant dimension); score = mean over codes.

Explicitness: standardise codes with the training mean and std, fit a default
``LogisticRegression`` per factor on all codes, and average the macro ROC-AUC of its class
probabilities (one-vs-rest) over factors, on the training and on the test set.

Fixes over disentanglement_lib 1.5 (which crashes on the parity case with two constant
dimensions): a dimension with zero standard deviation is divided by 1 instead of 0 (it
stays constant and carries no information, instead of becoming NaN); classes absent from
an evaluation set are left out of the macro average instead of raising.
"""

from __future__ import annotations

import warnings

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.record import Metric
from factorvae.metrics.mig import discrete_mutual_info, histogram_discretize


def modularity_per_code(mi: np.ndarray) -> np.ndarray:
    sq = np.square(mi)
    theta = sq.max(axis=1)
    K = mi.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = (sq.sum(axis=1) - theta) / (theta * (K - 1)) if K > 1 else np.zeros(len(mi))
    out = 1.0 - delta
    out[theta == 0.0] = 0.0
    return out


def macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Mean one-vs-rest ROC-AUC over the classes with both positives and negatives in y."""
    from sklearn.metrics import roc_auc_score  # heavy (scikit-learn): imported only when this metric runs

    aucs = []
    for c, cls in enumerate(classes):
        pos = y == cls
        if pos.any() and not pos.all():
            aucs.append(roc_auc_score(pos, proba[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


def explicitness_per_factor(z_train, y_train, z_test, y_test, rng: np.random.Generator):
    from sklearn.exceptions import ConvergenceWarning  # heavy (scikit-learn): imported only when this metric runs
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y_train)) < 2:
        return 1.0, 1.0  # a factor that never varies is trivially predicted
    clf = LogisticRegression(random_state=int(rng.integers(2**31 - 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(z_train, y_train)
    return (macro_auc(y_train, clf.predict_proba(z_train), clf.classes_),
            macro_auc(y_test, clf.predict_proba(z_test), clf.classes_))


def modularity_explicitness(codes: Codes, rng: np.random.Generator, num_train: int = 10000, num_test: int = 5000,
                            num_bins: int = 20) -> dict:
    """Modularity and explicitness (dlib ``modularity_explicitness``, study settings)."""
    if num_train < 2 or num_test < 1 or num_bins < 1:
        raise UserError("modularity_explicitness: num_train >= 2, num_test >= 1 and num_bins >= 1 are needed")
    (y_train, z_train), (y_test, z_test) = codes.sample_split(num_train, num_test, rng)
    mi = discrete_mutual_info(histogram_discretize(z_train, num_bins), y_train)
    per_code = modularity_per_code(mi)
    mean, std = z_train.mean(axis=0), z_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    ztr, zte = (z_train - mean) / std, (z_test - mean) / std
    scores = np.array([explicitness_per_factor(ztr, y_train[:, k], zte, y_test[:, k], rng)
                       for k in range(y_train.shape[1])])
    return {
        "modularity_score": float(np.mean(per_code)),
        "explicitness_score_train": float(np.nanmean(scores[:, 0])),
        "explicitness_score_test": float(np.nanmean(scores[:, 1])),
        "modularity_per_code": per_code.tolist(),
        "mutual_info": mi.tolist(),
    }


_DLIB = {"num_train": 10000, "num_test": 5000, "num_bins": 20}

METRIC = Metric(
    name="modularity_explicitness", function=modularity_explicitness, label="modularity",
    keys=("modularity_score", "explicitness_score_train", "explicitness_score_test"), headline="modularity_score",
    presets={"dlib": _DLIB, "paper": _DLIB, "fast": {"num_train": 2000, "num_test": 1000, "num_bins": 20}},
    seconds={"fast": 0.8, "dlib": 2.3, "paper": 2.0},
)
