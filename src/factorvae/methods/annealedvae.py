"""AnnealedVAE (Burgess et al. 2018, "Understanding disentangling in β-VAE", §5 eq. 8):

    loss = recon + γ · |KL(q(z|x) || p(z)) − C|,   C = min(c_max, c_max · step / iteration_threshold)

the KL "capacity" C rising linearly from 0 to ``c_max`` nats over ``iteration_threshold`` steps,
then held. Option names and defaults are disentanglement_lib's (``annealed_vae.py``:
γ = 1,000, ``iteration_threshold`` = 100,000; ``c_max`` is swept in Locatello et al. 2019, 25
by default here, Burgess et al.'s dSprites value).

C depends on the training step only (a scheduled hyper-parameter: ``hparams(step)``, which single
runs and vectorised groups alike call with each run's own step), so resuming from a checkpoint at
step s continues exactly; the current C is logged as ``capacity``.
"""

from __future__ import annotations

import torch

from factorvae.methods.base import check_number
from factorvae.methods.vae import VAE


class AnnealedVAE(VAE):
    name = "annealedvae"
    defaults = {"gamma": 1000.0, "c_max": 25.0, "iteration_threshold": 100_000}
    group_hparams = ("gamma", "capacity")
    scheduled_hparams = ("capacity",)
    #: c_max and iteration_threshold may differ between the runs of a group (they only shape C)
    group_options = ("gamma", "c_max", "iteration_threshold")

    @classmethod
    def check_options(cls, cfg):
        super().check_options(cfg)
        check_number("model", "gamma", cfg["gamma"], minimum=0)
        check_number("model", "c_max", cfg["c_max"], minimum=0)
        check_number("model", "iteration_threshold", cfg["iteration_threshold"], minimum=1, integer=True)

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        self.gamma = float(self.cfg["gamma"])
        self.c_max = float(self.cfg["c_max"])
        self.iteration_threshold = int(self.cfg["iteration_threshold"])

    def capacity(self, step: int) -> float:
        """C at training step ``step`` (dlib: ``min(c_max, c_max * step / iteration_threshold)``)."""
        return min(self.c_max, self.c_max * int(step) / self.iteration_threshold)

    def hparams(self, step: int = 0) -> dict[str, float]:
        """γ and C at training step ``step`` (steps done before this one)."""
        return {"gamma": self.gamma, "capacity": self.capacity(step)}

    def elbo_phase(self, batch, batch2, noise, hp, carry):
        """recon + γ·|KL − C| on batch B, KL the batch mean summed over dimensions (as dlib)."""
        mean, logvar, z, recon, kl_dims = self.elbo_terms(batch, noise["eps"])
        kl, c = kl_dims.sum(), hp["capacity"]
        loss = recon + hp["gamma"] * (kl - c).abs()
        capacity = torch.as_tensor(c, dtype=kl.dtype, device=kl.device)
        return loss, {"loss": loss, "recon": recon, "kl": kl, "elbo": -(recon + kl), "capacity": capacity}, None
