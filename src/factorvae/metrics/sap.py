"""SAP score (Kumar et al. 2018), as disentanglement_lib computes it (sap_score.py of Locatello et al. 2019).

Score matrix S[j, k]: with discrete factors (the study's setting) the test accuracy of a
linear SVM (``LinearSVC(C=0.01, class_weight="balanced")``) that predicts factor k from code
j alone; with ``continuous_factors`` the R^2 of a 1-D linear fit, cov(z_j, y_k)^2 /
(var z_j var y_k), 0 for a constant code. SAP = mean over factors of the gap between the two
best codes. A constant code is harmless in both modes.
"""

from __future__ import annotations

import warnings

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.record import Metric


def score_matrix(z_train, y_train, z_test, y_test, continuous_factors: bool, rng: np.random.Generator) -> np.ndarray:
    from sklearn import svm  # heavy (scikit-learn): imported only when this metric runs
    from sklearn.exceptions import ConvergenceWarning

    D, K = z_train.shape[1], y_train.shape[1]
    s = np.zeros((D, K))
    for j in range(D):
        for k in range(K):
            if continuous_factors:
                cov = np.cov(z_train[:, j], y_train[:, k], ddof=1)
                s[j, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 and cov[1, 1] > 0 else 0.0
            elif len(np.unique(y_train[:, k])) < 2:
                s[j, k] = float(np.mean(y_test[:, k] == y_train[0, k]))
            else:
                clf = svm.LinearSVC(C=0.01, class_weight="balanced", random_state=int(rng.integers(2**31 - 1)))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf.fit(z_train[:, j:j + 1], y_train[:, k])
                s[j, k] = float(np.mean(clf.predict(z_test[:, j:j + 1]) == y_test[:, k]))
    return s


def avg_diff_top_two(matrix: np.ndarray) -> float:
    if matrix.shape[0] < 2:
        return float(np.mean(matrix[0]))
    srt = np.sort(matrix, axis=0)
    return float(np.mean(srt[-1] - srt[-2]))


def sap(codes: Codes, rng: np.random.Generator, num_train: int = 10000, num_test: int = 5000,
        continuous_factors: bool = False) -> dict:
    """SAP score (dlib ``sap_score``, study settings by default)."""
    if num_train < 2 or num_test < 1:
        raise UserError("sap: num_train >= 2 and num_test >= 1 are needed")
    (y_train, z_train), (y_test, z_test) = codes.sample_split(num_train, num_test, rng)
    s = score_matrix(z_train, y_train, z_test, y_test, bool(continuous_factors), rng)
    return {"SAP_score": avg_diff_top_two(s), "score_matrix": s.tolist()}


_DLIB = {"num_train": 10000, "num_test": 5000, "continuous_factors": False}

METRIC = Metric(
    name="sap", function=sap, label="SAP", keys=("SAP_score",), headline="SAP_score",
    presets={"dlib": _DLIB, "paper": _DLIB, "fast": {"num_train": 2000, "num_test": 1000, "continuous_factors": False}},
    seconds={"fast": 0.4, "dlib": 1.6, "paper": 1.1},
)
