"""The FactorVAE disentanglement metric (Kim & Mnih 2018, §4 and Appendix B;
disentanglement_lib's ``factor_vae_score``).

One vote: choose a factor k uniformly; draw L = ``batch_size`` grid points with factor k
fixed at one random class and the others uniform; normalise each code dimension by its
standard deviation over the data; take the variance of each normalised dimension over the
L points; the vote is (k, d*) with d* = argmin of those variances. Collapsed dimensions
(standard deviation below ``prune_threshold``) are left out of the argmin. The vote matrix
V[k, d] counts votes; the majority-vote classifier maps latent d to argmax_k V_train[k, d];
the score is its accuracy on fresh evaluation votes (the paper reports accuracy, 1 - error).

Normalising by the standard deviation and then taking the variance is the same as dividing
the variance by the global variance, which is what disentanglement_lib computes; both use
ddof=1. All votes are drawn at once and scored with numpy (no Python loop per vote).

Differences from disentanglement_lib 1.5, all of them fixes:
- ``num_active_dims`` there is ``len(mask)``, i.e. always the total number of dimensions;
  here it is the true number of active dimensions.
- there the argmin is an index into the active dimensions but is stored in the column of
  that index among all dimensions; here votes go to the latent's own column (identical
  when nothing is pruned).
- with its function default ``threshold=0`` a constant dimension gives 0/0 = NaN and
  np.argmin returns the first NaN, so a dead dimension wins every vote; here a dimension
  with zero variance is always pruned, whatever the threshold.
- with no active dimension dlib scores 0.0 (never reached in its own study); here the metric is
  unscorable: the accuracies are None and ``unscorable`` says why. 0.0 would read as "the worst
  possible representation" when it only means no latent passed the pruning rule (e.g. means
  that barely move while the posterior variances carry the KL).
"""

from __future__ import annotations

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.record import Metric

#: votes scored per numpy block (bounds memory: block * batch_size * D floats)
_BLOCK = 2048


def global_variances(codes: Codes, rng: np.random.Generator, num_variance_estimate: int | None,
                     with_constant: bool = False):
    """Per-dimension variance (ddof=1) of the codes of ``num_variance_estimate`` random grid
    points, or of the whole grid when it is None (the paper's "over the full data").
    With ``with_constant`` also a mask of the dimensions that took a single value (their
    computed variance can be a rounding residue like 1e-33 instead of 0)."""
    if num_variance_estimate is None:
        z = codes.get(codes.grid.all_classes())
    else:
        _, z = codes.sample(num_variance_estimate, rng)
    var = np.var(z, axis=0, ddof=1)
    if with_constant:
        return var, z.max(axis=0) == z.min(axis=0)
    return var


def draw_fixed_factor_batches(grid, n: int, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n votes' worth of grid points: factor indices (n,) and classes (n, L, K) where, in vote
    i, factor k_i takes the class of the vote's first point in all L rows."""
    k = rng.integers(0, grid.num_factors, size=n)
    classes = grid.sample(n * batch_size, rng).reshape(n, batch_size, grid.num_factors)
    rows = np.arange(n)
    classes[rows, :, k] = classes[rows, 0, k][:, None]
    return k, classes


def votes(codes: Codes, rng: np.random.Generator, batch_size: int, num_points: int, variances: np.ndarray,
          active: np.ndarray) -> np.ndarray:
    """Vote matrix V (K, D): V[k, d] = votes with fixed factor k whose normalised variance is
    smallest in latent d (among active latents)."""
    grid = codes.grid
    K, D = grid.num_factors, codes.num_codes
    k, classes = draw_fixed_factor_batches(grid, num_points, batch_size, rng)
    codes.prefetch(classes.reshape(-1, K))  # one encoding pass for all votes
    active_idx = np.flatnonzero(active)
    out = np.zeros((K, D), dtype=np.int64)
    for a in range(0, num_points, _BLOCK):
        z = codes.get(classes[a:a + _BLOCK])[:, :, active_idx]  # (B, L, A)
        local = np.var(z, axis=1, ddof=1)
        winner = active_idx[np.argmin(local / variances[active_idx], axis=1)]
        out += np.bincount(k[a:a + _BLOCK] * D + winner, minlength=K * D).reshape(K, D)
    return out


def majority_vote(train_votes: np.ndarray) -> np.ndarray:
    """The classifier of Appendix B: latent d -> the factor with most training votes for d."""
    return np.argmax(train_votes, axis=0)


def accuracy(votes_: np.ndarray, classifier: np.ndarray) -> float:
    total = votes_.sum()
    return float(votes_[classifier, np.arange(votes_.shape[1])].sum() / total) if total else 0.0


def factor_vae(codes: Codes, rng: np.random.Generator, batch_size: int = 64, num_train: int = 10000,
               num_eval: int = 5000, num_variance_estimate: int | None = 10000,
               prune_threshold: float = 0.05) -> dict:
    """FactorVAE metric (paper §4). Defaults: disentanglement_lib's study settings."""
    if batch_size < 2:
        raise UserError(f"factor_vae: batch_size (L) must be >= 2 to take a variance, got {batch_size}")
    if num_train < 1 or num_eval < 1:
        raise UserError("factor_vae: num_train and num_eval must be >= 1")
    if num_variance_estimate is not None and num_variance_estimate < 2:
        raise UserError("factor_vae: num_variance_estimate must be >= 2 (or None for the whole grid)")
    grid = codes.grid
    D = codes.num_codes
    variances, constant = global_variances(codes, rng, num_variance_estimate, with_constant=True)
    active = (np.sqrt(variances) >= prune_threshold) & ~constant & (variances > 0)
    base = {"num_active_dims": int(active.sum()), "active_dims": np.flatnonzero(active).tolist(),
            "global_std": np.sqrt(variances).tolist()}
    if not active.any():
        reason = (f"no active dimensions: the std of every latent's encoder mean over the data is below "
                  f"prune_threshold {prune_threshold:g}")
        return {"train_accuracy": None, "eval_accuracy": None, "unscorable": reason, **base, "votes_train": None, "votes_eval": None,
                "latent_factor": [None] * D, "factor_latents": {n: [] for n in grid.names}}
    train_votes = votes(codes, rng, batch_size, num_train, variances, active)
    classifier = majority_vote(train_votes)
    eval_votes = votes(codes, rng, batch_size, num_eval, variances, active)
    has_votes = train_votes.sum(axis=0) > 0
    latent_factor = [grid.names[classifier[d]] if has_votes[d] else None for d in range(D)]
    factor_latents = {name: [d for d in range(D) if latent_factor[d] == name] for name in grid.names}
    return {
        "train_accuracy": accuracy(train_votes, classifier),
        "eval_accuracy": accuracy(eval_votes, classifier),
        **base,
        "votes_train": train_votes.tolist(),
        "votes_eval": eval_votes.tolist(),
        "latent_factor": latent_factor,
        "factor_latents": factor_latents,
    }


def draws(params, num_grid: int) -> int:
    """Grid points drawn: the variance estimate, then L points per training and evaluation vote."""
    std = params.get("num_variance_estimate") or num_grid
    return int(std + (params["num_train"] + params["num_eval"]) * params["batch_size"])


_DLIB = {"batch_size": 64, "num_train": 10000, "num_eval": 5000, "num_variance_estimate": 10000, "prune_threshold": 0.05}

METRIC = Metric(
    name="factor_vae", function=factor_vae, label="FactorVAE metric", fixes_factor=True, draws=draws,
    keys=("train_accuracy", "eval_accuracy", "num_active_dims"), headline="eval_accuracy",
    presets={
        "dlib": _DLIB,
        # L = 100, 800 + 800 votes: the best-supported reading of Appendix B;
        # std over a 10,000-point random subset ("or a large enough random subset");
        # collapsed dims: std of the means < 0.05 (the paper prunes by a rule not confirmed).
        "paper": {"batch_size": 100, "num_train": 800, "num_eval": 800, "num_variance_estimate": 10000,
                  "prune_threshold": 0.05},
        "fast": {"batch_size": 64, "num_train": 500, "num_eval": 500, "num_variance_estimate": 5000,
                 "prune_threshold": 0.05},
    },
    seconds={"fast": 0.1, "dlib": 0.8, "paper": 0.1},
)
