"""Mutual Information Gap (Chen et al. 2018), disentanglement_lib's discrete estimator
(Chen et al. 2018, §4.1; disentanglement_lib's mig.py).

Draw ``num_train`` grid points; discretise each code dimension into ``num_bins`` equal-width
bins over its observed range (``np.histogram`` edges, ``np.digitize`` against the left
edges); I[j, k] = discrete mutual information (nats) between code j and factor k;
H_k = entropy of factor k in the sample. MIG = mean_k (largest I[:, k] - second largest) / H_k.
A factor that shows one value in the sample (H_k = 0) has no gap; when no factor has one the
score is None with ``unscorable`` saying why (dlib divides by zero), never 0.

(Chen et al.'s own MIG uses sampled z and a mixture estimate of q(z_j); that is a different
estimator: see disentanglement_lib's mig.py.)
"""

from __future__ import annotations

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.record import Metric


def histogram_discretize(z: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Bin index (1..num_bins) of every value, per dimension, as dlib ``_histogram_discretize``.
    A constant dimension falls into one bin."""
    out = np.empty(z.shape, dtype=np.int64)
    for j in range(z.shape[1]):
        edges = np.histogram_bin_edges(z[:, j], bins=num_bins)
        out[:, j] = np.digitize(z[:, j], edges[:-1])
    return out


def discrete_mutual_info(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """I[i, j] between the discrete columns a[:, i] and b[:, j] (natural log; the same as
    ``sklearn.metrics.mutual_info_score``), from contingency counts."""
    n = len(a)
    out = np.zeros((a.shape[1], b.shape[1]))
    for i in range(a.shape[1]):
        _, ai = np.unique(a[:, i], return_inverse=True)
        na = ai.max() + 1
        pa = np.bincount(ai, minlength=na) / n
        for j in range(b.shape[1]):
            _, bj = np.unique(b[:, j], return_inverse=True)
            nb = bj.max() + 1
            joint = np.bincount(ai * nb + bj, minlength=na * nb).reshape(na, nb) / n
            pb = joint.sum(axis=0)
            nz = joint > 0
            mi = np.sum(joint[nz] * (np.log(joint[nz]) - np.log(np.outer(pa, pb)[nz])))
            out[i, j] = max(mi, 0.0)
    return out


def discrete_entropy(y: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each discrete column."""
    out = np.zeros(y.shape[1])
    for j in range(y.shape[1]):
        p = np.unique(y[:, j], return_counts=True)[1] / len(y)
        out[j] = -np.sum(p * np.log(p))
    return out


def mig(codes: Codes, rng: np.random.Generator, num_train: int = 10000, num_bins: int = 20) -> dict:
    """MIG with a histogram discretiser (dlib ``mig``, study settings by default)."""
    if num_train < 2 or num_bins < 1:
        raise UserError("mig: num_train >= 2 and num_bins >= 1 are needed")
    classes, z = codes.sample(num_train, rng)
    m = discrete_mutual_info(histogram_discretize(z, num_bins), classes)  # (D, K)
    h = discrete_entropy(classes)
    top = np.sort(m, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(m.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(h > 0, (top[0] - second) / h, np.nan)
    out = {
        "discrete_mig": float(np.nanmean(gap)) if np.isfinite(gap).any() else None,
        "gap_per_factor": dict(zip(codes.grid.names, [None if np.isnan(g) else float(g) for g in gap])),
        "mutual_info": m.tolist(),
        "factor_entropy": h.tolist(),
        # labels of mutual_info's rows (latents) and columns (factors)
        "mutual_info_latents": [f"z{j}" for j in range(m.shape[0])],
        "mutual_info_factors": list(codes.grid.names),
    }
    if out["discrete_mig"] is None:
        out["unscorable"] = f"every factor shows a single value in the {num_train} sampled points (entropy 0)"
    return out


_DLIB = {"num_train": 10000, "num_bins": 20}

METRIC = Metric(
    name="mig", function=mig, label="MIG", keys=("discrete_mig",), headline="discrete_mig",
    presets={"dlib": _DLIB, "paper": _DLIB, "fast": {"num_train": 5000, "num_bins": 20}},
    seconds={"fast": 0.0, "dlib": 0.0, "paper": 0.0},
)
