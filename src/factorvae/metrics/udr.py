"""Unsupervised Disentanglement Ranking (Duan et al., ICLR 2020, "Unsupervised Model Selection
for Variational Disentangled Representation Learning", §3, Eq. (1)-(3); disentanglement_lib's
udr/metrics/udr.py, ``compute_udr_sklearn``).

UDR scores each model of a population by how similar its representation is to the other
models' (disentangled models agree up to permutation and sign; entangled ones each entangle
differently). Every model encodes the same ``num_data_points`` grid points; each code is
standardised; dimensions whose mean KL to the prior is <= ``kl_filter_threshold`` (0.01)
are zeroed. For each ordered pair (i, j) a similarity matrix R (D x D) between the dims of
model i and model j:
- ``lasso``: |coefficients| of ``Lasso(alpha=0.1)`` regressing model j's dims on model i's;
- ``spearman``: |Spearman rank correlation| of every pair of dims.
With the informative dims kept (KL > threshold), the pair's score is the "relative strength"
(Eq. (2)-(3)): the mean over columns of max(col)^2 / sum(col) and over rows of
max(row)^2 / sum(row), averaged; a row or column of zeros scores 0.
``model_scores[i]`` = median over j != i of ``pairwise[j][i]`` (dlib's orientation).

KL per dimension: 0.5 mean(mu^2 + exp(logvar) - logvar - 1) over the points (dlib's
``udr/evaluate.py``); without log-variances, logvar = 0 (KL = 0.5 mean(mu^2)).

Where we differ from dlib 1.5 (docs/metrics.md): a constant dimension that survives the KL
filter has a NaN rank correlation; dlib's row/column maxima then turn NaN and zero the whole
pair's score. A constant has no correlation with anything: we count it as 0, so only that
dimension scores 0. dlib zeroes dims with KL <= 0.01 whatever ``kl_filter_threshold`` and
``filter_low_kl`` say; we use the threshold and zero nothing without the filter (identical
at the defaults). A model whose every dim is filtered scores 0 (dlib raises).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.stats
import torch

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes

CORRELATIONS = ("lasso", "spearman")


def kl_per_dim(mu: np.ndarray, logvar: np.ndarray | None) -> np.ndarray:
    """Mean KL(q(z_d|x) || N(0, 1)) per dimension over the points (logvar None: 0)."""
    if logvar is None:
        return 0.5 * np.mean(mu**2, axis=0)
    return 0.5 * np.mean(mu**2 + np.exp(logvar) - logvar - 1.0, axis=0)


def standardise(z: np.ndarray) -> np.ndarray:
    """(z - mean) / std per dimension (sklearn's StandardScaler: a constant dim stays 0)."""
    std = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(std > 0, std, 1.0)


def lasso_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """R[k, l] = |coefficient of a's dim k when Lasso(alpha=0.1) predicts b's dim l|."""
    from sklearn.linear_model import Lasso  # heavy (scikit-learn): only when UDR runs

    return np.abs(Lasso(alpha=0.1).fit(a, b).coef_).T.reshape(a.shape[1], b.shape[1])


def spearman_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """R[k, l] = |Spearman correlation of a[:, k] and b[:, l]|; 0 where either is constant."""
    ra = scipy.stats.rankdata(a, axis=0)
    rb = scipy.stats.rankdata(b, axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    na, nb = np.sqrt((ra**2).sum(axis=0)), np.sqrt((rb**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ra.T @ rb) / np.outer(na, nb)
    return np.nan_to_num(np.abs(r), nan=0.0)


def relative_strength(R: np.ndarray) -> float:
    """Duan et al. Eq. (2)-(3): mean of max^2 / sum over columns and over rows, averaged
    (0 for an all-zero row or column, and for an empty matrix)."""
    if R.size == 0:
        return 0.0

    def side(axis):
        with np.errstate(invalid="ignore", divide="ignore"):
            s = R.max(axis=axis) ** 2 / R.sum(axis=axis)
        return float(np.mean(np.nan_to_num(s, nan=0.0)))

    return (side(0) + side(1)) / 2.0


def udr_scores(reps: Sequence[np.ndarray], kls: Sequence[np.ndarray], correlation: str = "lasso",
               filter_low_kl: bool = True, kl_filter_threshold: float = 0.01) -> dict:
    """UDR of models given their codes of the same points (each (n, D)) and KL per dim."""
    if correlation not in CORRELATIONS:
        raise UserError(f"udr: unknown correlation {correlation!r}; choose one of {', '.join(CORRELATIONS)}")
    M = len(reps)
    if M < 2:
        raise UserError(f"udr needs at least two models, got {M}")
    if len({r.shape for r in reps}) != 1:
        raise UserError("udr: every model must give codes of the same shape (points, dims), got "
                        + ", ".join(str(r.shape) for r in reps))
    keep = [np.asarray(kl) > kl_filter_threshold if filter_low_kl else np.ones(len(kl), bool) for kl in kls]
    z = [standardise(np.asarray(r, np.float64)) * k for r, k in zip(reps, keep)]
    matrix = lasso_matrix if correlation == "lasso" else spearman_matrix
    pairwise = np.zeros((M, M))
    raw = np.zeros((M, M, reps[0].shape[1], reps[0].shape[1]))
    for i in range(M):
        for j in range(M):
            if i != j:
                raw[i, j] = matrix(z[i], z[j])
                pairwise[i, j] = relative_strength(raw[i, j][np.ix_(keep[i], keep[j])])
    scores = [float(np.median(np.delete(pairwise[:, i], i))) for i in range(M)]
    return {"model_scores": scores, "pairwise_disentanglement_scores": pairwise.tolist(),
            "raw_correlations": raw.tolist(), "active_dims": [k.tolist() for k in keep]}


def udr(models: Sequence[Codes], rng: np.random.Generator, logvars: Sequence[Codes | None] | None = None,
        correlation: str = "lasso", num_data_points: int = 1000, filter_low_kl: bool = True,
        kl_filter_threshold: float = 0.01) -> dict:
    """UDR (Duan et al. 2020) of models given as Codes of one grid (their means), with
    optional Codes of their log-variances for the KL filter; ``num_data_points`` grid points
    drawn uniformly (with replacement, as dlib)."""
    if num_data_points < 2:
        raise UserError("udr: num_data_points >= 2 is needed")
    grid = models[0].grid
    if any(m.grid != grid for m in models):
        raise UserError("udr: every model must be scored on the same factor grid")
    classes = grid.sample(int(num_data_points), rng)
    logvars = list(logvars) if logvars is not None else [None] * len(models)
    reps = [m.get(classes) for m in models]
    kls = [kl_per_dim(r, None if lv is None else lv.get(classes)) for r, lv in zip(reps, logvars)]
    out = udr_scores(reps, kls, correlation, filter_low_kl, kl_filter_threshold)
    out["settings"] = {"correlation": correlation, "num_data_points": int(num_data_points),
                       "filter_low_kl": filter_low_kl, "kl_filter_threshold": kl_filter_threshold}
    return out


def load_udr_npz(path) -> tuple[list[Codes], list[Codes | None], list[str]]:
    """Models of one npz: ``factors``, ``sizes``, ``codes_0..codes_{M-1}``, optional
    ``logvars_i``, ``names`` (factor names) and ``model_names``."""
    try:
        with np.load(path, allow_pickle=False) as d:
            data = {k: d[k] for k in d.files}
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read as .npz ({e})") from None
    if "codes_0" not in data and "codes" in data:
        raise UserError(f"{path} holds one model ('codes'); UDR needs at least two models: give several codes "
                        "files, or one .npz with codes_0..codes_{M-1}")
    for key in ("factors", "sizes", "codes_0"):
        if key not in data:
            raise UserError(f"{path}: missing array {key!r} (need factors, sizes, codes_0..codes_{{M-1}})")
    M = 0
    while f"codes_{M}" in data:
        M += 1
    names = data.get("names")
    models = [Codes.from_arrays(data["factors"], data[f"codes_{m}"], data["sizes"], names, f"{path}:codes_{m}")
              for m in range(M)]
    logvars = [Codes.from_arrays(data["factors"], data[f"logvars_{m}"], data["sizes"], names, f"{path}:logvars_{m}")
               if f"logvars_{m}" in data else None for m in range(M)]
    model_names = [str(s) for s in data.get("model_names", [f"model{m}" for m in range(M)])]
    return models, logvars, model_names


def encode_for_udr(model, dataset, flat: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """Means and (for Gaussian encoders) log-variances of the images at flat grid indices."""
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = torch.device("cpu")
    mus, logvars = [], []
    with torch.no_grad():
        for a in range(0, len(flat), batch_size):
            x = dataset.images(flat[a:a + batch_size]).to(device)
            mu = model.representation(x)
            enc = model.encode(x) if hasattr(model, "encode") else None
            lv = enc[1] if isinstance(enc, tuple) and len(enc) == 2 and enc[1].shape == mu.shape else None
            mus.append(mu.float().cpu().numpy())
            logvars.append(None if lv is None else lv.float().cpu().numpy())
    mu = np.concatenate(mus).astype(np.float64)
    lv = None if any(v is None for v in logvars) else np.concatenate(logvars).astype(np.float64)
    return mu, lv
