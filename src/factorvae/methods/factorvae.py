"""FactorVAE (Kim & Mnih 2018, §3): the ELBO plus γ·TC(z), TC estimated by a discriminator.

Algorithm 1 is ``permute_dims``; Algorithm 2 is ``FactorVAE.train_step``: its two phases
``vae_phase`` and ``disc_phase``, run in that order (the D step encodes B' with the updated encoder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from factorvae.errors import UserError, check_keys
from factorvae.methods.base import GaussianVAEBase, check_number, gaussian_sample, make_adam
from factorvae.nets import Discriminator

DISC_DEFAULTS = {"hidden": 1000, "layers": 6, "leak": 0.2}


def disc_options(cfg: dict) -> dict:
    """The discriminator's ``model.disc`` options, completed and validated (nothing built)."""
    given = cfg.get("disc") or {}
    if not isinstance(given, dict):
        raise UserError(f"model.disc must be a mapping, got {given!r}")
    check_keys("model.disc option", given, DISC_DEFAULTS)
    disc = {**DISC_DEFAULTS, **given}
    return {"hidden": check_number("model.disc", "hidden", disc["hidden"], minimum=1, integer=True),
            "layers": check_number("model.disc", "layers", disc["layers"], minimum=1, integer=True),
            "leak": check_number("model.disc", "leak", disc["leak"], minimum=0)}


def build_discriminator(cfg: dict, z_dim: int) -> tuple[Discriminator, dict]:
    """FactorVAE's discriminator from ``model.disc`` options; returns it and the completed options."""
    disc = {**DISC_DEFAULTS, **(cfg.get("disc") or {})}
    opts = disc_options(cfg)
    return Discriminator(z_dim, hidden=opts["hidden"], layers=opts["layers"], leak=opts["leak"]), disc


def permute_dims(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Algorithm 1: shuffle each latent dimension across the batch with its own permutation.

    The rows of the result are samples of approximately prod_j q(z_j): every column holds the
    same values as in ``z``, but the dependence between columns is broken.
    """
    keys = torch.rand(z.shape, generator=generator, device=z.device)
    return permute_dims_by_keys(z, keys)


def permute_dims_by_keys(z: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``permute_dims`` with its uniform sort keys given (same shape as z)."""
    return torch.gather(z, 0, keys.argsort(dim=0))


def total_correlation_logits(logits: torch.Tensor) -> torch.Tensor:
    """Density-ratio estimate of TC per sample: log D(z) / (1 - D(z)) = logit_joint - logit_perm
    for a 2-way softmax D (paper §3, the density-ratio trick)."""
    return logits[:, 0] - logits[:, 1]


class DiscriminatorVAE(GaussianVAEBase):
    """A Gaussian VAE whose regulariser (weight ``model.gamma``) is read off a discriminator on z
    (``model.disc``) with its own optimiser (``optim.disc``): FactorVAE and AAE."""

    optim_sections = ("vae", "disc")

    @classmethod
    def check_options(cls, cfg):
        super().check_options(cfg)
        check_number("model", "gamma", cfg["gamma"], minimum=0)
        disc_options(cfg)

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        self.gamma = float(self.cfg["gamma"])
        self.discriminator, self.cfg["disc"] = build_discriminator(self.cfg, self.z_dim)
        self.disc_optim = make_adam(self.discriminator.parameters(), optim_cfg.get("disc", {}), "optim.disc")

    def optimizers(self):
        return {"vae": self.vae_optim, "disc": self.disc_optim}


class FactorVAE(DiscriminatorVAE):
    """recon + KL + γ·TC, with D trained to tell q(z) (class 0) from permuted codes (class 1)."""

    name = "factorvae"
    defaults = {"gamma": 40.0, "disc": dict(DISC_DEFAULTS)}
    needs_second_batch = True
    phases = (("vae", "vae_phase", ("discriminator",)), ("disc", "disc_phase", ()))
    group_hparams = ("gamma",)

    def draw_noise(self, batch_size, device, dtype):
        """eps for z ~ q(z|B), then eps2 for z' ~ q(z|B') and Algorithm 1's sort keys (float32,
        as ``permute_dims`` draws them), in the order Algorithm 2 consumes them."""
        eps = self.standard_normal(batch_size, device, dtype)
        eps2 = self.standard_normal(batch_size, device, dtype)
        keys = torch.rand((batch_size, self.z_dim), generator=self.generator, device=device)
        return {"eps": eps, "eps2": eps2, "perm_keys": keys}

    def vae_phase(self, batch, batch2, noise, hp, carry):
        """Algorithm 2's VAE update on B: recon + KL + γ·TC, D frozen (``phases``) so the TC
        term's gradient reaches only the encoder. Carries z to the D step."""
        mean, logvar, z, recon, kl_dims = self.elbo_terms(batch, noise["eps"])
        tc = total_correlation_logits(self.discriminator(z)).mean()
        kl = kl_dims.sum()
        vae_loss = recon + kl + hp["gamma"] * tc
        return vae_loss, {"loss": vae_loss, "recon": recon, "kl": kl, "elbo": -(recon + kl), "tc": tc}, z

    def disc_phase(self, batch, batch2, noise, hp, z):
        """Algorithm 2's D update: z of B (detached; recomputed through D, avoiding the in-place
        version error of reusing D(z) on PyTorch >= 1.5) against permuted z' of B', encoded by the
        encoder the VAE update just changed."""
        with torch.no_grad():
            mean2, logvar2 = self.encoder(batch2)
            z_perm = permute_dims_by_keys(gaussian_sample(mean2, logvar2, noise["eps2"]), noise["perm_keys"])
        z = z.detach()
        # One D pass over both sets of codes (D acts row by row, so this equals two passes, in
        # one wider matrix product per layer).
        logits = self.discriminator(torch.cat([z, z_perm]))
        logits_joint, logits_perm = logits[: len(z)], logits[len(z) :]
        joint = torch.zeros(len(z), dtype=torch.long, device=z.device)
        permuted = torch.ones(len(z_perm), dtype=torch.long, device=z.device)
        d_loss = 0.5 * (F.cross_entropy(logits_joint, joint) + F.cross_entropy(logits_perm, permuted))
        with torch.no_grad():
            d_acc = 0.5 * ((logits_joint.argmax(1) == 0).float().mean() + (logits_perm.argmax(1) == 1).float().mean())
            logs = {"d_loss": d_loss, "d_acc": d_acc, "d_z": logits_joint.softmax(1)[:, 0].mean(),
                    "d_z_perm": logits_perm.softmax(1)[:, 0].mean()}
        return d_loss, logs, None
