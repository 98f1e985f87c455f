"""VAE and β-VAE: the ELBO plus a regulariser hook.

Each VAE variant overrides ``regularizer(kl_per_dim, mean, logvar, z)``, the term added to the
reconstruction NLL (disentanglement_lib's ``regularizer`` pattern). β-TCVAE and DIP-VAE build on
this class.
"""

from __future__ import annotations

import torch

from factorvae.methods.base import GaussianVAEBase, check_number


class VAE(GaussianVAEBase):
    """Plain VAE: minimise -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z)) (paper §2)."""

    name = "vae"

    def regularizer(self, kl_per_dim: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor):
        """The loss term beside the reconstruction NLL; returns (term, extra logs)."""
        return kl_per_dim.sum(), {}

    def train_step(self, batch, batch2, step):
        mean, logvar, z, recon, kl_dims = self.elbo_terms(batch)
        reg, logs = self.regularizer(kl_dims, mean, logvar, z)
        loss = recon + reg
        self.step_optimizer(self.vae_optim, loss)
        return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl_dims.sum().detach(),
                "elbo": -(recon + kl_dims.sum()).detach(), **logs}


class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017; paper §2, eq. 1): recon + β·KL(q(z|x) || p(z))."""

    name = "betavae"
    defaults = {"beta": 4.0}

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        self.beta = check_number("model", "beta", self.cfg["beta"], minimum=0)

    def regularizer(self, kl_per_dim, mean, logvar, z):
        return self.beta * kl_per_dim.sum(), {}
