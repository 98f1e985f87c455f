"""Adversarial autoencoder, the variant of the paper's related-work appendix (paper_spec §4, §7;
Makhzani et al. 2016): keep the reconstruction term and replace the ELBO's per-point
KL(q(z|x) || p(z)) by the KL of the aggregate posterior to the prior, estimated by a
discriminator (the density-ratio trick of FactorVAE, with prior samples in place of permuted
codes):

    loss = E_q(z|x)[−log p(x|z)] + γ · KL(q(z) || p(z)),
    KL(q(z) || p(z)) = E_q(z)[log q(z)/p(z)] ≈ E_q(z)[log D(z)/(1 − D(z))] = E[logit_q − logit_p],

γ = 1 being the appendix's objective. q(z|x) is the Gaussian encoder, z is sampled
(reparameterised). D is FactorVAE's MLP with 2 logits, class 0 = a sample of q(z) (the batch's
z, detached), class 1 = a sample of p(z) = N(0, I), trained by
0.5·[CE(D(z), 0) + CE(D(z_p), 1)], one update after each autoencoder update on the same batch.
The logged ``kl`` and ``elbo`` are the usual analytic per-point KL and ELBO of the same encoder and
decoder (for comparison with the VAEs; not optimised).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from factorvae.errors import UserError
from factorvae.methods.base import GaussianVAEBase, check_number, make_adam, set_requires_grad
from factorvae.methods.factorvae import total_correlation_logits
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


class AAE(GaussianVAEBase):
    name = "aae"
    defaults = {"gamma": 1.0, "disc": dict(DISC_DEFAULTS)}
    optim_sections = ("vae", "disc")

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        self.gamma = check_number("model", "gamma", self.cfg["gamma"], minimum=0)
        self.discriminator, self.cfg["disc"] = build_discriminator(self.cfg, self.z_dim)
        self.disc_optim = make_adam(self.discriminator.parameters(), optim_cfg.get("disc", {}), "optim.disc")

    def optimizers(self):
        return {"vae": self.vae_optim, "disc": self.disc_optim}

    def train_step(self, batch, batch2, step):
        mean, logvar, z, recon, kl_dims = self.elbo_terms(batch)
        # D frozen: the KL estimate's gradient reaches the encoder only through z
        set_requires_grad(self.discriminator, False)
        kl_agg = total_correlation_logits(self.discriminator(z)).mean()
        set_requires_grad(self.discriminator, True)
        loss = recon + self.gamma * kl_agg
        self.step_optimizer(self.vae_optim, loss)

        z_prior = torch.randn(z.shape, generator=self.generator, device=z.device, dtype=z.dtype)
        logits_q = self.discriminator(z.detach())
        logits_p = self.discriminator(z_prior)
        q_label = torch.zeros(len(z), dtype=torch.long, device=z.device)
        p_label = torch.ones(len(z_prior), dtype=torch.long, device=z.device)
        d_loss = 0.5 * (F.cross_entropy(logits_q, q_label) + F.cross_entropy(logits_p, p_label))
        self.step_optimizer(self.disc_optim, d_loss)

        with torch.no_grad():
            kl = kl_dims.sum()
            d_acc = 0.5 * ((logits_q.argmax(1) == 0).float().mean() + (logits_p.argmax(1) == 1).float().mean())
            return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach(),
                    "elbo": -(recon + kl).detach(), "kl_agg": kl_agg.detach(), "d_loss": d_loss.detach(),
                    "d_acc": d_acc}
