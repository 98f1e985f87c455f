"""DIP-VAE-I and DIP-VAE-II (Kumar et al. 2018, Eqs. 6-7): the ELBO plus a penalty that
pushes a covariance of the codes towards the identity,

    loss = E_q[−log p(x|z)] + KL(q(z|x) || p(z))
           + λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²,        λ_d = lambda_d_factor · λ_od,

with, over the batch (population moments, divide by M as disentanglement_lib):

- DIP-VAE-I:  C = Cov_batch[μ(x)] = E[μμᵀ] − E[μ]E[μ]ᵀ                      (Kumar et al. eq. 6)
- DIP-VAE-II: C = Cov_q(z)[z] = E_batch[diag σ²(x)] + Cov_batch[μ(x)]      (Kumar et al. eq. 7,
  the covariance of the aggregate posterior by the law of total covariance).

Defaults (Locatello et al. 2019): lambda_d_factor 10 (type I) and 1 (type II) as disentanglement_lib's
study; λ_od = 10 is one value of its grid {1, 2, 5, 10, 20, 50}.
"""

from __future__ import annotations

import torch

from factorvae.methods.base import check_number
from factorvae.methods.vae import VAE


def covariance(mean: torch.Tensor) -> torch.Tensor:
    """Cov of the rows of ``mean`` (M, d), population version (1/M): E[μμᵀ] − E[μ]E[μ]ᵀ."""
    centred = mean - mean.mean(0, keepdim=True)
    return centred.T @ centred / mean.shape[0]


def aggregate_posterior_covariance(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Cov_q(z)[z] = E[diag σ²] + Cov[μ] (DIP-VAE-II)."""
    return torch.diag(logvar.exp().mean(0)) + covariance(mean)


def dip_penalty(cov: torch.Tensor, lambda_od: float, lambda_d: float):
    """(penalty, off-diagonal sum of squares, diagonal sum of squared deviations from 1)."""
    diag = torch.diagonal(cov)
    off = (cov - torch.diag(diag)).pow(2).sum()
    on = (diag - 1).pow(2).sum()
    return lambda_od * off + lambda_d * on, off, on


class DIPVAE(VAE):
    """Shared code of the two types; ``dip_type`` selects the covariance."""

    name = "dipvae"
    dip_type = "i"
    defaults = {"lambda_od": 10.0, "lambda_d_factor": 10.0}
    group_hparams = ("lambda_od", "lambda_d")
    group_options = ("lambda_od", "lambda_d_factor")  # the model options behind group_hparams

    @classmethod
    def check_options(cls, cfg):
        super().check_options(cfg)
        check_number("model", "lambda_od", cfg["lambda_od"], minimum=0)
        check_number("model", "lambda_d_factor", cfg["lambda_d_factor"], minimum=0)

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        self.lambda_od = float(self.cfg["lambda_od"])
        self.lambda_d_factor = float(self.cfg["lambda_d_factor"])
        self.lambda_d = self.lambda_d_factor * self.lambda_od

    def code_covariance(self, mean, logvar):
        return covariance(mean) if self.dip_type == "i" else aggregate_posterior_covariance(mean, logvar)

    def regularizer(self, kl_per_dim, mean, logvar, z, hp):
        penalty, off, on = dip_penalty(self.code_covariance(mean, logvar), hp["lambda_od"], hp["lambda_d"])
        return kl_per_dim.sum() + penalty, {"dip": penalty.detach(), "cov_offdiag": off.detach(),
                                           "cov_diag": on.detach()}


class DIPVAE1(DIPVAE):
    """DIP-VAE-I: the penalty on Cov[μ(x)]."""

    name = "dipvae1"
    dip_type = "i"
    defaults = {"lambda_od": 10.0, "lambda_d_factor": 10.0}


class DIPVAE2(DIPVAE):
    """DIP-VAE-II: the penalty on Cov_q(z)[z] = E[diag σ²(x)] + Cov[μ(x)]."""

    name = "dipvae2"
    dip_type = "ii"
    defaults = {"lambda_od": 10.0, "lambda_d_factor": 1.0}
