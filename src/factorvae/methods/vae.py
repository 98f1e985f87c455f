"""VAE and β-VAE: the ELBO plus a regulariser hook.

Each VAE variant overrides ``regularizer(kl_per_dim, mean, logvar, z, hp)``, the term added to the
reconstruction NLL, reading its weights from ``hp`` (floats for one run, per-run tensors in a
vectorised group) (disentanglement_lib's ``regularizer`` pattern). β-TCVAE and DIP-VAE build on
this class.
"""

from __future__ import annotations

import torch

from factorvae.methods.base import GaussianVAEBase, check_number


class VAE(GaussianVAEBase):
    """Plain VAE: minimise -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z)) (paper §2)."""

    name = "vae"
    phases = (("vae", "elbo_phase", ()),)

    def regularizer(self, kl_per_dim: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor,
                    hp: dict):
        """The loss term beside the reconstruction NLL; returns (term, extra logs)."""
        return kl_per_dim.sum(), {}

    def draw_noise(self, batch_size, device, dtype):
        return {"eps": self.standard_normal(batch_size, device, dtype)}

    def elbo_phase(self, batch, batch2, noise, hp, carry):
        """recon + regulariser on batch B; returns (loss, logs, None)."""
        mean, logvar, z, recon, kl_dims = self.elbo_terms(batch, noise["eps"])
        reg, logs = self.regularizer(kl_dims, mean, logvar, z, hp)
        loss = recon + reg
        kl = kl_dims.sum()
        return loss, {"loss": loss, "recon": recon, "kl": kl, "elbo": -(recon + kl), **logs}, None


class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017; paper §2, eq. 1): recon + β·KL(q(z|x) || p(z))."""

    name = "betavae"
    defaults = {"beta": 4.0}
    group_hparams = ("beta",)

    @classmethod
    def check_options(cls, cfg):
        super().check_options(cfg)
        check_number("model", "beta", cfg["beta"], minimum=0)

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        self.beta = float(self.cfg["beta"])

    def regularizer(self, kl_per_dim, mean, logvar, z, hp):
        return hp["beta"] * kl_per_dim.sum(), {}
