"""Analyses behind the paper's figures: the true-TC estimator (Fig. 7) on codes with known TC,
the importance-sampled log-likelihood bound (Appendix E), true TC logged during training, and the
metric correlation (§6)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from factorvae.metrics.tc import gaussian_log_density, model_total_correlation, total_correlation_from_posteriors

TINY = {"z_dim": 4, "arch": {"channels": [4, 4, 4, 4], "fc": 8}}


def mixture_tc(means: torch.Tensor, sigma: float, samples: int, seed: int = 0, subset: int | None = None) -> dict:
    """Posteriors N(means_n, sigma^2 I); z drawn from the mixture over all N (or a subset)."""
    g = torch.Generator().manual_seed(seed)
    n, d = means.shape
    logvar = torch.full_like(means, 2 * math.log(sigma))
    origin = torch.randperm(n, generator=g)[:samples]
    z = means[origin] + sigma * torch.randn(samples, d, generator=g)
    mix = torch.arange(n) if subset is None else torch.randperm(n, generator=g)[:subset]
    return total_correlation_from_posteriors(z, origin, means[origin], logvar[origin], means[mix], logvar[mix], mix, n)


def test_true_tc_of_independent_gaussian_codes_is_zero():
    g = torch.Generator().manual_seed(1)
    means = torch.randn(10000, 3, generator=g)
    out = mixture_tc(means, sigma=0.3, samples=3000)
    assert abs(out["true_tc"]) < 0.05, out


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_true_tc_of_correlated_gaussian_matches_closed_form(rho):
    # q(z|x_n) = N(mu_n, s^2 I), mu_n ~ N(0, C): as N grows, q(z) -> N(0, C + s^2 I), whose TC is
    # -1/2 log det(correlation matrix) in closed form.
    d, s = 3, 0.3
    cov = np.full((d, d), rho) + (1 - rho) * np.eye(d)
    rng = np.random.default_rng(2)
    means = torch.as_tensor(rng.multivariate_normal(np.zeros(d), cov, size=10000), dtype=torch.float32)
    total = cov + s**2 * np.eye(d)
    corr = total / np.sqrt(np.outer(np.diag(total), np.diag(total)))
    expected = -0.5 * np.log(np.linalg.det(corr))
    out = mixture_tc(means, sigma=s, samples=3000)
    assert out["true_tc"] == pytest.approx(expected, abs=max(0.08, 3 * out["true_tc_se"])), (out, expected)
    assert out["true_tc_se"] < 0.04


def test_subset_estimator_equals_brute_force_and_is_close_to_the_full_mixture():
    # the stratified subset weights (own component 1/N, the others (N-1)/(N M')) against a loop
    torch.manual_seed(0)
    n_total, m, d, s = 1000, 40, 2, 6
    mix_mean, mix_logvar = torch.randn(m, d), torch.full((m, d), -1.5)
    mix_index = torch.arange(100, 100 + m)
    origin = torch.tensor([100, 101, 5, 6, 139, 7])  # four in the subset, two outside it
    o_mean = torch.cat([mix_mean[:2], torch.randn(2, d), mix_mean[-1:], torch.randn(1, d)])
    o_logvar = torch.full((s, d), -1.5)
    z = o_mean + 0.3 * torch.randn(s, d)
    got = total_correlation_from_posteriors(z, origin, o_mean, o_logvar, mix_mean, mix_logvar, mix_index, n_total,
                                            dtype=torch.float64, chunk=4)
    tcs = []
    for i in range(s):
        comps = [(mix_mean[j], mix_logvar[j]) for j in range(m) if mix_index[j] != origin[i]]
        w_other = (n_total - 1) / (n_total * len(comps))
        lj = [gaussian_log_density(z[i], mu, lv).sum() + math.log(w_other) for mu, lv in comps]
        lj.append(gaussian_log_density(z[i], o_mean[i], o_logvar[i]).sum() - math.log(n_total))
        lm = [torch.stack([gaussian_log_density(z[i, k], mu[k], lv[k]) + math.log(w_other) for mu, lv in comps]
                          + [gaussian_log_density(z[i, k], o_mean[i, k], o_logvar[i, k]) - math.log(n_total)])
              for k in range(d)]
        tcs.append(torch.logsumexp(torch.stack(lj), 0) - sum(torch.logsumexp(v, 0) for v in lm))
    assert got["true_tc"] == pytest.approx(float(torch.stack(tcs).mean()), abs=1e-6)

    # in low dimension a quarter of the data is enough for a close estimate
    g = torch.Generator().manual_seed(3)
    means = torch.randn(8000, 2, generator=g) @ torch.tensor([[1.0, 0.7], [0.0, 0.7]])
    full = mixture_tc(means, 0.3, 1000, seed=4)["true_tc"]
    part = mixture_tc(means, 0.3, 1000, seed=4, subset=2000)["true_tc"]
    assert full > 0.2 and part == pytest.approx(full, abs=0.1)


def _tiny_model(name="betavae", **model):
    from factorvae.config import resolve
    from factorvae.runs import build_model

    cfg = resolve({"model": {"name": name, **TINY, **model}, "data": {"name": "toy"}})
    return build_model(cfg, 1, torch.device("cpu"))[0]


@pytest.fixture(scope="module")
def toy():
    from factorvae.data import load_dataset

    return load_dataset("toy", progress=False)


def test_model_true_tc_uses_its_own_random_state(toy):
    model = _tiny_model()
    before_global, before_model = torch.get_rng_state(), model.generator.get_state()
    a = model_total_correlation(model, toy, num_samples=300, num_data=1000, seed=5)
    b = model_total_correlation(model, toy, num_samples=300, num_data=1000, seed=5)
    assert torch.equal(torch.get_rng_state(), before_global) and torch.equal(model.generator.get_state(), before_model)
    assert a == b and a["true_tc_data"] == 1000 and a["true_tc_samples"] == 300 and not a["true_tc_exact_mixture"]
    full = model_total_correlation(model, toy, num_samples=300, num_data=0, seed=5)
    assert full["true_tc_exact_mixture"] and full["true_tc_data"] == len(toy)


def test_true_tc_defaults_use_the_exact_mixture(toy):
    # a subset's bias depends on the model, so the defaults (training log, sweep evaluation,
    # the function itself) use the whole data set
    from factorvae.config import resolve
    from factorvae.sweep.spec import EVAL_DEFAULTS

    assert resolve({})["train"]["true_tc_data"] == 0 and EVAL_DEFAULTS["true_tc"]["data"] == 0
    out = model_total_correlation(_tiny_model(), toy, num_samples=50, seed=1)
    assert out["true_tc_exact_mixture"] and out["true_tc_data"] == len(toy)


def test_importance_sampled_bound_is_above_the_elbo_and_grows_with_k(toy):
    from factorvae.metrics.likelihood import iwae_bound, log_importance_weights
    from factorvae.methods.base import bernoulli_nll, gaussian_kl_per_dim

    model = _tiny_model()
    model.eval()
    x = toy.images(np.arange(0, len(toy), 193)[:16])
    g = torch.Generator().manual_seed(0)
    log_w = log_importance_weights(model, x, 111, g).double()  # (16, 111)
    # same samples: L_K >= their Monte Carlo ELBO (Jensen), image by image
    assert (iwae_bound(log_w) >= log_w.mean(-1) - 1e-9).all()
    # K = 1 is the ELBO in expectation: compare with the analytic-KL ELBO
    with torch.no_grad():
        mean, logvar = model.encode(x)
        kl = gaussian_kl_per_dim(mean, logvar).sum()
        recon = torch.stack([bernoulli_nll(model.decode(mean + torch.randn(mean.shape, generator=g) * (0.5 * logvar).exp()), x)
                             for _ in range(20)]).mean()
    elbo = -(recon + kl).item()
    l1 = log_w.mean().item()  # mean of L_1 over images and samples
    se = log_w.mean(0).std().item() / math.sqrt(log_w.shape[1])
    assert l1 == pytest.approx(elbo, abs=max(4 * se, 0.5))
    # the bound grows with K, on average over images (disjoint samples for each K)
    bounds = [iwae_bound(log_w[:, a:b]).mean().item() for a, b in ((0, 1), (1, 11), (11, 111))]
    assert bounds[0] < bounds[1] < bounds[2], bounds


def test_estimate_log_likelihood_reports_k(toy):
    from factorvae.metrics.likelihood import estimate_log_likelihood

    out = estimate_log_likelihood(_tiny_model(), toy, num_images=8, num_samples=5, seed=1)
    assert out["log_px_k"] == 5 and out["log_px_images"] == 8
    assert out["log_px"] >= out["elbo_mc"] and math.isfinite(out["log_px_se"])


def test_true_tc_is_logged_beside_the_discriminator_and_leaves_training_unchanged(tmp_path, toy):
    from factorvae.config import resolve
    from factorvae.trainer import train

    base = {"model": {"name": "factorvae", **TINY, "disc": {"hidden": 16, "layers": 2}}, "data": {"name": "toy"},
            "train": {"steps": 20, "log_every": 5, "ckpt_every": 20, "image_every": 1000, "threads": 1,
                      "device": "cpu"}}  # CUDA convolutions are not bit-for-bit reproducible
    plain = resolve(base)
    logged = resolve(base, {"train": {"true_tc_every": 10, "true_tc_samples": 100, "true_tc_data": 500}})
    train(plain, tmp_path / "a", progress=False, dataset=toy)
    train(logged, tmp_path / "b", progress=False, dataset=toy)
    recs = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    with_tc = [r["step"] for r in recs if "true_tc" in r]
    assert with_tc == [10, 20] and all("tc" in r for r in recs if "true_tc" in r)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_metric_correlations_match_scipy_with_p_values():
    from scipy import stats

    from factorvae.report import correlations

    rng = np.random.default_rng(0)
    x = rng.uniform(size=12)
    y = x + 0.3 * rng.normal(size=12)
    rows = [{"status": "finished", "a": float(u), "b": float(v)} for u, v in zip(x, y)]
    rows += [{"status": "failed", "a": 5.0, "b": -5.0}, {"status": "finished", "a": None, "b": 1.0}]
    c = correlations(rows, "a", "b")
    assert c["n"] == 12
    for name, fn in (("pearson", stats.pearsonr), ("kendall", stats.kendalltau), ("spearman", stats.spearmanr)):
        r, p = fn(x, y)
        assert c[name][0] == pytest.approx(r) and c[name][1] == pytest.approx(p)
    assert c["pearson"][0] > 0.5 and c["pearson"][1] < 0.05
    assert correlations(rows[:2], "a", "b") is None
