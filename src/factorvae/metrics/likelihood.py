"""Importance-sampled log marginal likelihood (Kim & Mnih 2018, Appendix E).

For an image x and K samples z_k ~ q(z|x) (the encoder as proposal),

    log p(x) >= L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)
                       = logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K

(the IWAE bound, Burda et al. 2016). L_1 is the ELBO (in expectation), L_K is non-decreasing in
K in expectation and tends to log p(x) as K -> infinity. For the same K samples,
L_K >= mean_k log w_k (Jensen), i.e. the bound is never below the Monte Carlo ELBO it is
computed with. The paper does not give K; K is a parameter and is always reported
beside the estimate (``log_px_k``).

p(x|z) is the model's decoder (``model.likelihood``, ``methods.base.log_px_given_z``):
Bernoulli, log p(x|z) = -sum over pixels of the sigmoid cross-entropy (nats; for binary data
(2D Shapes) a proper log-likelihood, for RGB data in [0, 1] (3D Shapes) the same "Bernoulli"
quantity the paper trains with, not a normalised density); or Gaussian, N(x; sigmoid(logits),
1/2) per pixel, a normalised density including its constant -(D/2) log pi.
p(z) = N(0, I).
"""

from __future__ import annotations

import math

import torch

from factorvae.gaussian import gaussian_log_density
from factorvae.methods.base import log_px_given_z


@torch.no_grad()
def log_importance_weights(model, x: torch.Tensor, num_samples: int, generator: torch.Generator,
                           max_batch: int = 512) -> torch.Tensor:
    """log w (B, K) = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x)."""
    likelihood = getattr(model, "likelihood", "bernoulli")
    mean, logvar = model.encode(x)
    b, d = mean.shape
    k = int(num_samples)
    eps = torch.randn((b, k, d), generator=generator, device=generator.device).to(mean)
    z = mean[:, None] + eps * torch.exp(0.5 * logvar)[:, None]  # (B, K, d)
    log_q = gaussian_log_density(z, mean[:, None], logvar[:, None]).sum(-1)
    log_prior = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(-1)
    log_px_z = torch.empty((b, k), dtype=mean.dtype, device=mean.device)
    flat_z = z.reshape(b * k, d)
    flat_x = x[:, None].expand(b, k, *x.shape[1:]).reshape(b * k, *x.shape[1:])
    for a in range(0, b * k, max_batch):
        logits = model.decode(flat_z[a : a + max_batch])
        log_px_z.view(-1)[a : a + max_batch] = log_px_given_z(logits, flat_x[a : a + max_batch], likelihood)
    return log_px_z + log_prior - log_q


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """L_K per row: logsumexp_k log w_k - log K."""
    return torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1])


@torch.no_grad()
def estimate_log_likelihood(model, dataset, num_images: int = 256, num_samples: int = 100, seed: int = 0,
                            images_per_batch: int = 8) -> dict:
    """Mean importance-sampled log p(x) (nats per image) over a fixed random set of images.

    Returns ``log_px`` (the IWAE_K bound, mean over images), ``log_px_se`` (its standard error
    over images), ``elbo_mc`` (the mean of the same K log-weights: a Monte Carlo ELBO), and the
    settings ``log_px_k`` = K and ``log_px_images``.
    """
    was_training = model.training
    model.eval()
    idx = dataset.fixed_indices(num_images, seed)
    n = len(idx)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed) + 11)
    bounds, elbos = [], []
    for a in range(0, n, images_per_batch):
        log_w = log_importance_weights(model, dataset.images(idx[a : a + images_per_batch]).to(device),
                                       num_samples, gen).double()
        bounds.append(iwae_bound(log_w).cpu())
        elbos.append(log_w.mean(-1).cpu())
    if was_training:
        model.train()
    b, e = torch.cat(bounds), torch.cat(elbos)
    return {
        "log_px": float(b.mean()),
        "log_px_se": float(b.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "elbo_mc": float(e.mean()),
        "log_px_k": int(num_samples),
        "log_px_images": n,
    }
