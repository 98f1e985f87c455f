"""Reconstruction error as the paper reports it (Kim & Mnih 2018, Section 4 and Fig. 4)."""

from __future__ import annotations

import torch

from factorvae.methods.base import gaussian_kl_per_dim, recon_loss


def reconstruction_error(model, dataset, num_images: int = 10000, seed: int = 0, batch: int = 256) -> dict:
    """The paper's reconstruction error on a fixed random set of images (the same for every trial
    with the same seed): the training loss's reconstruction term (``methods.base.recon_loss``:
    the Bernoulli NLL -log p(x|z) in nats, or for ``model.likelihood: gaussian`` the squared
    error), summed over pixels, mean over images, with one
    z ~ q(z|x) per image as in the training loss (``recon``) and at the encoder mean
    (``recon_at_mean``); also KL(q(z|x)||p(z)) and the ELBO = -(recon + kl), all nats per image."""
    was_training = model.training
    model.eval()
    likelihood = getattr(model, "likelihood", "bernoulli")
    idx = dataset.fixed_indices(num_images, seed)
    n = len(idx)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed) + 3)
    tot = {"recon": 0.0, "recon_at_mean": 0.0, "kl": 0.0}
    with torch.no_grad():
        for a in range(0, n, batch):
            x = dataset.images(idx[a : a + batch]).to(device)
            mean, logvar = model.encode(x)
            z = mean + torch.randn(mean.shape, generator=gen, device=device) * torch.exp(0.5 * logvar)
            tot["recon"] += float(recon_loss(model.decode(z), x, likelihood)) * len(x)
            tot["recon_at_mean"] += float(recon_loss(model.decode(mean), x, likelihood)) * len(x)
            tot["kl"] += float(gaussian_kl_per_dim(mean, logvar).sum()) * len(x)
    if was_training:
        model.train()
    out = {k: v / n for k, v in tot.items()}
    out["elbo"] = -(out["recon"] + out["kl"])
    out["recon_images"] = n
    return out
