"""Minibatch estimators of the aggregate posterior q(z) = (1/N) Σ_n q(z|x_n) and of the total
correlation TC(z) = KL(q(z) || Π_j q(z_j)) (Chen et al. 2018, Section 4.1 and Appendix C).

Notation: a batch x_1..x_M from a data set of N points, z_i ~ q(z|x_i), and the matrix
``log q(z_il | x_j)`` of every sample under every posterior in the batch. Both estimators are

    log q(z_i)        ≈ logsumexp_j [ log W_ij + Σ_l log q(z_il | x_j) ]
    log Π_l q(z_il)   ≈ Σ_l logsumexp_j [ log W_ij + log q(z_il | x_j) ]
    TC                ≈ mean_i [ log q(z_i) − log Π_l q(z_il) ]

and differ only in the weights W:

- Minibatch Weighted Sampling (MWS, Chen et al. eq. 6): W_ij = 1 / (N·M). Biased; the constant
  shifts TC by (d−1)·log(NM) compared to dropping it (what disentanglement_lib does).
- Minibatch Stratified Sampling (MSS): the sample's own data point has weight 1/N (it is exactly
  one of the N mixture components) and each of the M−1 others stands for (N−1)/(M−1) of the
  remaining points: W_ii = 1/N, W_ij = (N−1) / (N·(M−1)) for j ≠ i. Each row sums to 1 and
  Σ_j W_ij q(z|x_j) is an unbiased estimate of q(z) when the others are a uniform sample, without
  replacement, of the other N−1 points (the trainer samples with replacement; the difference is
  O(1/N)). With M = N the estimate is exact. Chen et al.'s code
  (``_log_importance_weight_matrix``) fills columns 0 and 1 instead of the diagonal, because its
  flat stride M+1 equals the batch size; we do not copy that.
"""

from __future__ import annotations

import math

import torch

from factorvae.errors import UserError
from factorvae.gaussian import gaussian_log_density

ESTIMATORS = ("mws", "mss")


def pairwise_log_qz(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(M, M, d): entry [i, j, l] = log q(z_il | x_j) for z (M, d) under posteriors (M, d)."""
    return gaussian_log_density(z[:, None, :], mean[None, :, :], logvar[None, :, :])


def log_weight_matrix(batch_size: int, dataset_size: int, estimator: str, device=None, dtype=None) -> torch.Tensor:
    """(M, M) log importance weights log W_ij of the module docstring."""
    m, n = int(batch_size), int(dataset_size)
    if estimator == "mws":
        return torch.full((m, m), -math.log(n * m), device=device, dtype=dtype)
    if estimator == "mss":
        if m < 2:
            raise ValueError("the stratified estimator needs a batch of at least 2")
        if n < 2:
            raise ValueError("the stratified estimator needs a data set of at least 2 points")
        w = torch.full((m, m), math.log(n - 1) - math.log(n) - math.log(m - 1), device=device, dtype=dtype)
        w.fill_diagonal_(-math.log(n))
        return w
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")


def log_qz_and_marginals(z, mean, logvar, dataset_size: int, estimator: str = "mws"):
    """Estimates of log q(z_i) (M,) and log Π_l q(z_il) (M,) from one batch."""
    logq = pairwise_log_qz(z, mean, logvar)  # (M, M, d)
    logw = log_weight_matrix(len(z), dataset_size, estimator, device=z.device, dtype=z.dtype)
    log_qz = torch.logsumexp(logw + logq.sum(2), dim=1)
    log_prod_marginals = torch.logsumexp(logw[:, :, None] + logq, dim=1).sum(1)
    return log_qz, log_prod_marginals


def total_correlation(z, mean, logvar, dataset_size: int, estimator: str = "mws") -> torch.Tensor:
    """Minibatch estimate of TC(z) = E_q(z)[log q(z) − Σ_l log q(z_l)] (Chen et al. 2018 §4.1)."""
    log_qz, log_prod = log_qz_and_marginals(z, mean, logvar, dataset_size, estimator)
    return (log_qz - log_prod).mean()


def check_estimator(value) -> str:
    if value not in ESTIMATORS:
        raise UserError(f"model.estimator must be one of {', '.join(ESTIMATORS)} "
                        f"(minibatch weighted / stratified sampling), got {value!r}")
    return value
