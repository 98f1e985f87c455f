"""Adversarial autoencoder, the variant of the paper's related-work appendix (Makhzani et al.
2016): keep the reconstruction term and replace the ELBO's per-point
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

from factorvae.methods.base import set_requires_grad
from factorvae.methods.factorvae import DISC_DEFAULTS, DiscriminatorVAE, total_correlation_logits


class AAE(DiscriminatorVAE):
    name = "aae"
    defaults = {"gamma": 1.0, "disc": dict(DISC_DEFAULTS)}

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
