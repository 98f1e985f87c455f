"""Unsupervised scores of a representation: no factor labels used (Locatello et al., ICML 2019,
"Challenging Common Assumptions...", §3 and Appendix; disentanglement_lib's unsupervised_metrics.py).

From the codes of ``num_train`` random grid points, ``cov`` = their covariance (ddof 1):
- ``gaussian_total_correlation``: KL between N(0, cov) and the product of its marginals,
  0.5 (sum_j log cov_jj - log det cov) (nats);
- ``gaussian_wasserstein_correlation``: the squared 2-Wasserstein distance between the same
  two Gaussians, 2 tr cov - 2 tr sqrtm(cov * diag(cov)[:, None]); ``_norm``: divided by tr cov;
- ``mutual_info_score``: mean over ordered pairs j != l of the discrete mutual information
  (nats) between the 20-bin histogram-discretised code dimensions j and l.

A constant code dimension: dlib's total correlation is log 0 - log 0 = NaN. A constant
dimension is independent of every other, so the total correlation of the code is that of its
non-constant dimensions: we return that (``constant_dims`` names how many were left out; 0.0
when fewer than two vary). The Wasserstein terms and the mutual information are finite with
constant dimensions and computed as dlib does.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.mig import discrete_mutual_info, histogram_discretize
from factorvae.metrics.record import Metric


def gaussian_total_correlation(cov: np.ndarray) -> float:
    """0.5 (sum log diag cov - log det cov) over the dimensions with non-zero variance."""
    keep = np.diag(cov) > 0
    if keep.sum() < 2:
        return 0.0
    c = cov[np.ix_(keep, keep)]
    return float(0.5 * (np.sum(np.log(np.diag(c))) - np.linalg.slogdet(c)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    """2 tr cov - 2 tr sqrtm(cov diag(cov)[:, None]) (the real part: the matrix is not symmetric)."""
    with warnings.catch_warnings():  # a constant dimension makes the matrix singular: its root is still exact
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])
    return float(2 * np.trace(cov) - 2 * np.real(np.trace(root)))


def unsupervised(codes: Codes, rng: np.random.Generator, num_train: int = 10000, num_bins: int = 20) -> dict:
    """Gaussian total / Wasserstein correlation and mean pairwise mutual information of the codes
    (dlib ``unsupervised_metrics``)."""
    if num_train < 2 or num_bins < 1:
        raise UserError("unsupervised: num_train >= 2 and num_bins >= 1 are needed")
    _, z = codes.sample(num_train, rng)
    D = z.shape[1]
    cov = np.atleast_2d(np.cov(z, rowvar=False))
    wass = gaussian_wasserstein_correlation(cov)
    trace = float(np.trace(cov))
    zd = histogram_discretize(z, num_bins)
    mi = discrete_mutual_info(zd, zd)
    np.fill_diagonal(mi, 0.0)
    return {
        "gaussian_total_correlation": gaussian_total_correlation(cov),
        "gaussian_wasserstein_correlation": wass,
        "gaussian_wasserstein_correlation_norm": wass / trace if trace > 0 else 0.0,
        "mutual_info_score": float(mi.sum() / (D * D - D)) if D > 1 else 0.0,
        "constant_dims": int(np.sum(np.diag(cov) <= 0)),
    }


_DLIB = {"num_train": 10000, "num_bins": 20}
# CPU s of the metric alone, codes cached (benchmarks/eval_cost.py --encode 0, load average 1.5-6.6)
METRIC = Metric(
    name="unsupervised", function=unsupervised,
    keys=("gaussian_total_correlation", "gaussian_wasserstein_correlation", "gaussian_wasserstein_correlation_norm",
          "mutual_info_score"),
    headline="gaussian_total_correlation", label="unsupervised (TC, WC, MI)",
    presets={"dlib": _DLIB, "paper": _DLIB, "fast": {**_DLIB, "num_train": 5000}},
    seconds={"fast": 0.0, "dlib": 0.0, "paper": 0.0}, default=False)
