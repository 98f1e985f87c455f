"""FactorVAE (Kim & Mnih 2018, §3): the ELBO plus γ·TC(z), TC estimated by a discriminator.

Algorithm 1 is ``permute_dims``; Algorithm 2 is ``FactorVAE.train_step``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from factorvae.errors import UserError
from factorvae.methods.base import GaussianVAEBase, check_number, make_adam, reparameterize, set_requires_grad
from factorvae.nets import Discriminator

DISC_DEFAULTS = {"hidden": 1000, "layers": 6, "leak": 0.2}


def build_discriminator(cfg: dict, z_dim: int) -> tuple[Discriminator, dict]:
    """FactorVAE's discriminator from ``model.disc`` options (validated); returns it and the
    completed options."""
    disc = {**DISC_DEFAULTS, **(cfg.get("disc") or {})}
    unknown = set(disc) - set(DISC_DEFAULTS)
    if unknown:
        raise UserError(f"unknown model.disc option(s): {', '.join(sorted(unknown))}")
    net = Discriminator(
        z_dim,
        hidden=check_number("model.disc", "hidden", disc["hidden"], minimum=1, integer=True),
        layers=check_number("model.disc", "layers", disc["layers"], minimum=1, integer=True),
        leak=check_number("model.disc", "leak", disc["leak"], minimum=0),
    )
    return net, disc


def permute_dims(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Algorithm 1: shuffle each latent dimension across the batch with its own permutation.

    The rows of the result are samples of approximately prod_j q(z_j): every column holds the
    same values as in ``z``, but the dependence between columns is broken.
    """
    keys = torch.rand(z.shape, generator=generator, device=z.device)
    return torch.gather(z, 0, keys.argsort(dim=0))


def total_correlation_logits(logits: torch.Tensor) -> torch.Tensor:
    """Density-ratio estimate of TC per sample: log D(z) / (1 - D(z)) = logit_joint - logit_perm
    for a 2-way softmax D (paper §3; spec §1.1)."""
    return logits[:, 0] - logits[:, 1]


class DiscriminatorVAE(GaussianVAEBase):
    """A Gaussian VAE whose regulariser (weight ``model.gamma``) is read off a discriminator on z
    (``model.disc``) with its own optimiser (``optim.disc``): FactorVAE and AAE."""

    optim_sections = ("vae", "disc")

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        self.gamma = check_number("model", "gamma", self.cfg["gamma"], minimum=0)
        self.discriminator, self.cfg["disc"] = build_discriminator(self.cfg, self.z_dim)
        self.disc_optim = make_adam(self.discriminator.parameters(), optim_cfg.get("disc", {}), "optim.disc")

    def optimizers(self):
        return {"vae": self.vae_optim, "disc": self.disc_optim}


class FactorVAE(DiscriminatorVAE):
    """recon + KL + γ·TC, with D trained to tell q(z) (class 0) from permuted codes (class 1)."""

    name = "factorvae"
    defaults = {"gamma": 40.0, "disc": dict(DISC_DEFAULTS)}
    needs_second_batch = True

    def train_step(self, batch, batch2, step):
        """Algorithm 2: one VAE update on batch B, then one D update on B and a permuted B'."""
        if batch2 is None:
            raise ValueError("FactorVAE needs a second batch (Algorithm 2)")
        # VAE step. D's weights are frozen so the TC term's gradient reaches only the encoder.
        mean, logvar, z, recon, kl_dims = self.elbo_terms(batch)
        set_requires_grad(self.discriminator, False)
        tc = total_correlation_logits(self.discriminator(z)).mean()
        set_requires_grad(self.discriminator, True)
        kl = kl_dims.sum()
        vae_loss = recon + kl + self.gamma * tc
        self.step_optimizer(self.vae_optim, vae_loss)

        # D step on detached codes: z from B (recomputed through D, avoiding the in-place
        # version error of reusing D(z) on PyTorch >= 1.5), permuted z' from B'.
        with torch.no_grad():
            mean2, logvar2 = self.encoder(batch2)
            z_perm = permute_dims(reparameterize(mean2, logvar2, self.generator), self.generator)
        # One D pass over both sets of codes (D acts row by row, so this equals two passes, in
        # one wider matrix product per layer).
        logits = self.discriminator(torch.cat([z.detach(), z_perm]))
        logits_joint, logits_perm = logits[: len(z)], logits[len(z) :]
        joint = torch.zeros(len(z), dtype=torch.long, device=z.device)
        permuted = torch.ones(len(z_perm), dtype=torch.long, device=z.device)
        d_loss = 0.5 * (F.cross_entropy(logits_joint, joint) + F.cross_entropy(logits_perm, permuted))
        self.step_optimizer(self.disc_optim, d_loss)

        with torch.no_grad():
            d_acc = 0.5 * ((logits_joint.argmax(1) == 0).float().mean() + (logits_perm.argmax(1) == 1).float().mean())
            return {
                "loss": vae_loss.detach(), "recon": recon.detach(), "kl": kl.detach(),
                "elbo": -(recon + kl).detach(), "tc": tc.detach(), "d_loss": d_loss.detach(), "d_acc": d_acc,
                "d_z": logits_joint.softmax(1)[:, 0].mean(), "d_z_perm": logits_perm.softmax(1)[:, 0].mean(),
            }
