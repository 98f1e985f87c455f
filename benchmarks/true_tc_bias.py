"""Bias of the subset true-TC estimator against the exact mixture over the whole data set.

The exact mixture is the aggregate posterior of the finite data set itself, so its TC is what
the subset estimate should be compared with (it is positive even when the posterior means were
drawn independently per dimension: a finite mixture of narrow Gaussians is not a product).
Synthetic posteriors of a dSprites-sized data set (N = 737,280, d = 10) with k informative
dimensions (standard-normal means, posterior std sigma) and the rest collapsed (mean 0, std 1).

    python benchmarks/true_tc_bias.py [--n 737280] [--samples 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from factorvae.metrics.tc import total_correlation_from_posteriors


def synthetic(n: int, d: int, k: int, sigma: float, rho: float, rng: np.random.Generator):
    mean = np.zeros((n, d))
    base = rng.standard_normal((n, k))
    if rho:  # correlate the informative means pairwise (a model with real TC)
        base[:, 1::2] = rho * base[:, 0:k - 1:2] + np.sqrt(1 - rho ** 2) * base[:, 1::2]
    mean[:, :k] = base
    logvar = np.zeros((n, d))
    logvar[:, :k] = 2 * np.log(sigma)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(logvar, dtype=torch.float32)


def estimate(mean, logvar, m: int, samples: int, seed: int) -> tuple[float, float]:
    n = len(mean)
    rng = np.random.default_rng(seed)
    mix = np.arange(n) if m >= n else np.sort(rng.choice(n, size=m, replace=False))
    pick = rng.choice(len(mix), size=samples, replace=False)
    gen = torch.Generator().manual_seed(seed + 7)
    o_mean, o_logvar = mean[mix[pick]], logvar[mix[pick]]
    z = o_mean + torch.randn(o_mean.shape, generator=gen) * torch.exp(0.5 * o_logvar)
    t0 = time.perf_counter()
    out = total_correlation_from_posteriors(z, torch.as_tensor(mix[pick]), o_mean, o_logvar, mean[mix], logvar[mix],
                                            torch.as_tensor(mix), n)
    return out["true_tc"], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=737_280)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"N = {args.n}, S = {args.samples}, {args.repeats} seeds, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.2f}")
    cases = [(5, 0.1, 0.0), (5, 0.3, 0.0), (10, 0.1, 0.0), (6, 0.1, 0.9)]
    print("k  sigma  rho  | exact TC (mean ± sd over seeds) | subset − exact at M = 2,000 / 10,000 / 40,000 | exact s")
    for k, sigma, rho in cases:
        mean, logvar = synthetic(args.n, 10, k, sigma, rho, np.random.default_rng(0))
        exact, secs, bias = [], [], {m: [] for m in (2000, 10_000, 40_000)}
        for seed in range(args.repeats):
            tc, s = estimate(mean, logvar, args.n, args.samples, seed)
            exact.append(tc)
            secs.append(s)
            for m in bias:
                bias[m].append(estimate(mean, logvar, m, args.samples, seed)[0] - tc)
        b = " / ".join(f"{np.mean(v):+.2f}" for v in bias.values())
        print(f"{k:2d} {sigma:5.2f} {rho:4.1f} | {np.mean(exact):6.2f} ± {np.std(exact):.2f} | {b} | {np.median(secs):.1f}")


if __name__ == "__main__":
    main()
