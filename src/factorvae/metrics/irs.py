"""Interventional Robustness Score (Suter et al., ICML 2019, "Robustly Disentangled Causal
Mechanisms", Definition 4 and its estimator in §4; disentanglement_lib's irs.py).

From ``num_train`` random grid points: drop constant code dimensions; discretise the factor
classes with the 20-bin histogram discretiser (a no-op for factors with <= 20 classes; it
merges classes of larger factors, as dlib does); for code j and factor k,

    dev[j, k] = mean over classes c of k of the ``diff_quantile`` quantile of |z_j - E[z_j | k = c]|
    IRS[j, k] = 1 - dev[j, k] / max |z_j - E z_j|

IRS_j = max_k IRS[j, k]; the score averages IRS_j weighted by each dimension's
max |z_j - E z_j| (dlib's weighting: the code's scale matters). ``diff_quantile`` 0.99 is
dlib's default; Suter et al.'s own estimator uses 1.0 (the maximum).

``num_active_dims`` is the number of non-constant code dimensions. dlib 1.5 reports
``np.sum(active_mus)``, the sum of every code value of those dimensions, which is not a count
(docs/metrics.md, "Where we differ from disentanglement_lib").
"""

from __future__ import annotations

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.mig import histogram_discretize
from factorvae.metrics.record import Metric


def irs_matrix(classes: np.ndarray, z: np.ndarray, diff_quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """IRS[j, k] (D, K) of non-constant codes ``z`` (n, D) against discrete ``classes`` (n, K),
    and each dimension's max deviation from its mean (D,)."""
    max_dev = np.max(np.abs(z - z.mean(axis=0)), axis=0)
    dev = np.zeros((z.shape[1], classes.shape[1]))
    for k in range(classes.shape[1]):
        values = np.unique(classes[:, k])
        for c in values:
            zc = z[classes[:, k] == c]
            dev[:, k] += np.quantile(np.abs(zc - zc.mean(axis=0)), diff_quantile, axis=0)
        dev[:, k] /= len(values)
    return 1.0 - dev / max_dev[:, None], max_dev


def irs(codes: Codes, rng: np.random.Generator, num_train: int = 10000, diff_quantile: float = 0.99,
        num_bins: int = 20) -> dict:
    """IRS (Suter et al. 2019, Def. 4) from ``num_train`` random grid points (dlib ``irs``)."""
    if num_train < 2 or not 0.0 <= diff_quantile <= 1.0 or num_bins < 1:
        raise UserError("irs: num_train >= 2, 0 <= diff_quantile <= 1 and num_bins >= 1 are needed")
    classes, z = codes.sample(num_train, rng)
    active = z.var(axis=0) > 0.0
    if not active.any():  # dlib: 0 when every dimension is constant
        return {"IRS": 0.0, "num_active_dims": 0, "irs_per_code": [], "parents": []}
    matrix, max_dev = irs_matrix(histogram_discretize(classes, num_bins), z[:, active], diff_quantile)
    per_code = matrix.max(axis=1)
    score = np.average(per_code, weights=max_dev) if max_dev.sum() > 0 else per_code.mean()
    return {
        "IRS": float(score),
        "num_active_dims": int(active.sum()),
        "irs_per_code": per_code.tolist(),
        "parents": [codes.grid.names[k] for k in matrix.argmax(axis=1)],
        "irs_matrix": matrix.tolist(),
    }


_DLIB = {"num_train": 10000, "diff_quantile": 0.99, "num_bins": 20}
# CPU s of the metric alone, codes cached (benchmarks/eval_cost.py --encode 0, load average 1.5-6.6)
METRIC = Metric(
    name="irs", function=irs, keys=("IRS", "num_active_dims"), headline="IRS", label="IRS",
    presets={"dlib": _DLIB,
             # Suter et al.'s estimator: the maximum deviation (quantile 1.0)
             "paper": {**_DLIB, "diff_quantile": 1.0},
             "fast": {**_DLIB, "num_train": 5000}},
    seconds={"fast": 0.1, "dlib": 0.0, "paper": 0.0}, default=False)
