"""The "true" total correlation of the aggregate posterior (Kim & Mnih 2018, Section 4 and Fig. 7).

TC(z) = KL(q(z) || prod_j q(z_j)) = E_q(z)[log q(z) - sum_j log q(z_j)], with the aggregate
posterior q(z) = (1/N) sum_n q(z|x_n) a mixture of the N Gaussians q(z|x_n) = N(mu_n, diag s_n^2)
over the data set. Monte Carlo, as Chen et al.'s ``elbo_decomposition.py``:

1. draw S "origin" points n_s and one z_s ~ q(z|x_{n_s}) each (so z_s ~ q(z));
2. log q(z_s)   = log sum_n q(z_s|x_n) - log N             (a logsumexp over the mixture)
   log q(z_sj)  = log sum_n q(z_sj|x_n) - log N  per dimension j
3. TC ~= mean_s [log q(z_s) - sum_j log q(z_sj)].

Estimator and its bias
----------------------
* With the whole data set as mixture (``num_data`` 0 or >= N; the default) the densities are
  exact; the only error is Monte Carlo over the S samples (unbiased; standard error reported as
  ``true_tc_se``). This is what Chen et al. do (N = 737,280, S = 10,000). The exact value is the
  TC of the finite data set's aggregate posterior, which is positive even when the posterior means
  are independent across dimensions (a finite mixture of narrow Gaussians is no product).
* With ``num_data`` = M < N the mixture is a random subset of M images, with *stratified*
  weights (Chen et al.'s minibatch stratified sampling applied to a subset): each sample's own
  posterior keeps its exact weight 1/N and the M' other subset members share (N-1)/N::

      q^(z_s) = q(z_s|x_{n_s}) / N + (N-1)/(N M') sum_{m in subset, m != n_s} q(z_s|x_m)

  (likewise per dimension for q(z_j)). q^ is unbiased for q(z_s), but log q^ is not: by Jensen
  E[log q^] <= log q. The joint, d-dimensional density suffers much more than the 1-D marginals
  (its mass sits on a few neighbours the subset may miss), so the subset estimate is mostly an
  UNDER-estimate of the exact value, by an amount that depends on the model: on synthetic
  dSprites-sized posteriors (N = 737,280, d = 10, k informative dims with standard-normal means
  and posterior std sigma, the rest collapsed), subset minus exact at M = 2,000 / 10,000 /
  40,000 was -1.61 / -1.03 / -0.51 nats for k = 5, sigma = 0.1 (exact 0.28); -0.39 / -0.11 /
  -0.04 for sigma = 0.3 (exact 0.00); -0.06 / +0.01 / -0.12 for k = 10 (exact 9.61); -1.62 /
  -1.05 / -0.44 for k = 6 with pairwise correlation 0.9 (exact 2.66)
  (``benchmarks/true_tc_bias.py``). No constant correction exists.
* So: report the exact mixture for absolute numbers; a subset only for cheap trends, compared
  at equal (S, M) (both are stored beside the estimate).

Everything is vectorised in torch (float32 by default; logsumexp keeps it stable) and chunked
over samples so that memory stays near ``chunk * M * d`` numbers (``default_chunk``: 4M on a CPU,
2^27 on a GPU). ``models_total_correlation`` estimates it for every run of a vectorised group
from one batched encoding of the data set.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from factorvae.gaussian import LOG_2PI, gaussian_log_density
from factorvae.metrics.codes import encode_batch


def _log_mixture_weights(origin: torch.Tensor, mix_index: torch.Tensor, n_total: int) -> torch.Tensor:
    """log w[s, m] of mixture component m for sample s (stratified; see module docstring)."""
    if len(mix_index) >= n_total:  # the full data set: every component weighs 1/N
        return torch.full((len(origin), len(mix_index)), -math.log(n_total), dtype=torch.float64, device=origin.device)
    same = origin[:, None] == mix_index[None, :]  # (S, M) the sample's own component in the subset
    m_other = len(mix_index) - same.sum(dim=1, keepdim=True)  # M' per sample
    log_w = math.log(n_total - 1) - math.log(n_total) - torch.log(m_other.clamp(min=1).double())
    return torch.where(same, torch.tensor(-math.inf, dtype=torch.float64, device=origin.device), log_w.expand_as(same))


@torch.no_grad()
def total_correlation_from_posteriors(
    z: torch.Tensor,
    origin: torch.Tensor,
    origin_mean: torch.Tensor,
    origin_logvar: torch.Tensor,
    mix_mean: torch.Tensor,
    mix_logvar: torch.Tensor,
    mix_index: torch.Tensor,
    n_total: int,
    chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """TC of the mixture q(z) = (1/N) sum_n N(mean_n, diag exp(logvar_n)) from samples ``z`` (S, d).

    ``origin`` (S,) are the data indices the samples were drawn from, with their posteriors
    ``origin_mean/logvar`` (S, d); ``mix_*`` (M, d) are the posteriors of the mixture subset with
    data indices ``mix_index`` (M,), drawn from a data set of ``n_total`` points. Returns
    ``{"true_tc", "true_tc_se", "log_qz", "log_qz_product"}`` (means over samples; nats).
    """
    z = z.to(dtype)
    # layout (sample, dim, component): the logsumexps run over the contiguous last axis
    mean_t = mix_mean.to(dtype).T.contiguous()  # (d, M)
    inv_var_t = torch.exp(-mix_logvar.to(dtype)).T.contiguous()
    norm_t = (-0.5 * (LOG_2PI + mix_logvar.to(dtype))).T.contiguous()
    origin_mean, origin_logvar = origin_mean.to(dtype), origin_logvar.to(dtype)
    full = len(mix_index) >= n_total
    if not chunk:
        chunk = default_chunk(mix_mean.numel(), z.device)
    per_sample, joint_all, prod_all = [], [], []
    for a in range(0, len(z), chunk):
        zs = z[a : a + chunk]
        log_w = _log_mixture_weights(origin[a : a + chunk], mix_index, n_total).to(dtype)[:, None, :]  # (s, 1, M)
        comp = (zs[:, :, None] - mean_t[None]).square_().mul_(inv_var_t[None]).mul_(-0.5).add_(norm_t[None])
        joint_terms = comp.sum(1) + log_w[:, 0]  # (s, M): log w_m + log q(z|x_m)
        marg = torch.logsumexp(comp.add_(log_w), dim=2)  # (s, d): log sum_m w_m q(z_j|x_m)
        if not full:  # the origin's own component, weight 1/N
            own = gaussian_log_density(zs, origin_mean[a : a + chunk], origin_logvar[a : a + chunk])  # (s, d)
            joint_terms = torch.cat([joint_terms, own.sum(-1, keepdim=True) - math.log(n_total)], dim=1)
            marg = torch.logaddexp(marg, own - math.log(n_total))
        log_qz = torch.logsumexp(joint_terms, dim=1)  # (s,)
        log_qzj = marg.sum(-1)  # (s,)
        joint_all.append(log_qz.double())
        prod_all.append(log_qzj.double())
        per_sample.append(log_qz.double() - log_qzj.double())
    tc = torch.cat(per_sample)
    return {
        "true_tc": float(tc.mean()),
        "true_tc_se": float(tc.std() / math.sqrt(len(tc))) if len(tc) > 1 else float("nan"),
        "log_qz": float(torch.cat(joint_all).mean()),
        "log_qz_product": float(torch.cat(prod_all).mean()),
    }


def default_chunk(mix_numel: int, device: torch.device) -> int:
    """Samples per logsumexp block: the (chunk, d, M) block near 4M numbers on a CPU, 2^27 (0.5 GiB
    of float32) on a GPU, where one sample at a time would leave it idle (M = 737,280, d = 10:
    1 sample vs 18 per block)."""
    budget = 2**27 if torch.device(device).type == "cuda" else 4e6
    return max(1, int(budget // max(1, mix_numel)))


@torch.no_grad()
def encode_posteriors(model, dataset, indices: np.ndarray, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, logvar) of q(z|x) for data ``indices``, on the model's device."""
    mean, logvar = encode_many(lambda x: tuple(t[None] for t in model.encode(x)),
                               next(model.parameters()).device, dataset, indices, batch)
    return mean[0], logvar[0]


@torch.no_grad()
def encode_many(encode, device: torch.device, dataset, indices, batch: int | None = None):
    """(mean, logvar), each (R, len(indices), d) float32, of R encoders at once: ``encode(x)``
    gives (R, B, d) means and log-variances (a vectorised group: one batched pass). The indices
    go to the device once (no host copy per batch)."""
    batch = batch or encode_batch(device, cpu=512)
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long).to(device)
    means, logvars = [], []
    for a in range(0, len(idx), batch):
        mean, logvar = encode(dataset.images(idx[a : a + batch]).to(device))
        means.append(mean.float())
        logvars.append(logvar.float())
    return torch.cat(means, dim=1), torch.cat(logvars, dim=1)


def _plan(n: int, num_samples: int, num_data: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mixture indices (sorted) and the positions of the sample origins among them, from ``seed``."""
    rng = np.random.default_rng(seed)
    m = n if num_data <= 0 or num_data >= n else int(num_data)
    mix_index = np.arange(n) if m == n else np.sort(rng.choice(n, size=m, replace=False))
    s = min(int(num_samples), m)
    # origins: a random part of the subset (their posteriors are encoded already; the others in
    # the subset are still a uniform random set of the remaining N - 1 points)
    return mix_index, rng.choice(m, size=s, replace=False)


def _tc_of_posteriors(mix_mean, mix_logvar, mix_index: np.ndarray, pick_np: np.ndarray, n: int, seed: int,
                      chunk: int | None) -> dict:
    device = mix_mean.device
    pick = torch.as_tensor(pick_np, device=device)
    o_mean, o_logvar = mix_mean[pick], mix_logvar[pick]
    gen = torch.Generator(device=device).manual_seed(int(seed) + 7)
    z = o_mean + torch.randn(o_mean.shape, generator=gen, device=device) * torch.exp(0.5 * o_logvar)
    out = total_correlation_from_posteriors(
        z, torch.as_tensor(mix_index[pick_np], device=device), o_mean, o_logvar, mix_mean, mix_logvar,
        torch.as_tensor(mix_index, device=device), n, chunk=chunk or default_chunk(mix_mean.numel(), device),
    )
    out.update({"true_tc_samples": len(pick_np), "true_tc_data": len(mix_index), "true_tc_exact_mixture": len(mix_index) == n})
    return out


@torch.no_grad()
def model_total_correlation(model, dataset, num_samples: int = 2000, num_data: int = 0, seed: int = 0,
                            chunk: int | None = None) -> dict:
    """True TC of ``model``'s aggregate posterior over ``dataset`` (see module docstring).

    ``num_samples`` = S Monte Carlo samples, ``num_data`` = M mixture components (all N if
    ``num_data <= 0`` or ``>= N``). Uses its own random state (``seed``): never the model's or the
    trainer's generators, so logging it does not change training. Leaves the model in eval mode.
    """
    model.eval()
    return models_total_correlation(lambda x: tuple(t[None] for t in model.encode(x)), next(model.parameters()).device,
                                    dataset, [seed], num_samples, num_data, chunk)[0]


@torch.no_grad()
def models_total_correlation(encode, device, dataset, seeds: list[int], num_samples: int = 2000, num_data: int = 0,
                             chunk: int | None = None, batch: int | None = None) -> list[dict]:
    """``model_total_correlation`` of R encoders at once (a vectorised group, paper Fig. 7 for
    every run): ``encode(x)`` gives (R, B, d) means and log-variances, ``seeds`` one seed per
    encoder. The union of their mixture subsets is encoded once, in one batched pass per batch;
    each encoder's estimate equals its ``model_total_correlation`` (same subset, origins, noise)."""
    n = len(dataset)
    plans = [_plan(n, num_samples, num_data, s) for s in seeds]
    union = np.unique(np.concatenate([p[0] for p in plans]))
    mean, logvar = encode_many(encode, device, dataset, union, batch)
    out = []
    for r, ((mix_index, pick_np), seed) in enumerate(zip(plans, seeds)):
        pos = torch.as_tensor(np.searchsorted(union, mix_index), device=mean.device)
        mm, ml = (mean[r], logvar[r]) if len(union) == len(mix_index) else (mean[r, pos], logvar[r, pos])
        out.append(_tc_of_posteriors(mm, ml, mix_index, pick_np, n, seed, chunk))
    return out
