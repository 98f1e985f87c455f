"""The paper's other models: β-TCVAE, DIP-VAE-I/II, AAE and InfoWGAN-GP.

Losses against hand / NumPy / brute-force computations on tiny inputs, the WGAN-GP gradient
penalty against closed forms, short training runs whose objective improves, the CLI (train,
resume, traverse, eval) and rejected hyper-parameters."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from factorvae.config import resolve
from factorvae.errors import UserError
from factorvae.methods.dipvae import aggregate_posterior_covariance, covariance, dip_penalty
from factorvae.methods.estimators import log_weight_matrix, pairwise_log_qz, total_correlation
from factorvae.methods.infogan import gradient_penalty
from factorvae.runs import build_model

TINY = {"channels": [4, 4, 4, 4], "fc": 8}
SMALL_DISC = {"hidden": 16, "layers": 2}
EXTRA = ("betatcvae", "dipvae1", "dipvae2", "aae", "infowgan_gp")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets: one thread is fastest, and far faster than two on busy shared cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def train_and_resume(cli, base: list, tmp_path) -> tuple[dict, dict]:
    """``factorvae train`` with ``base`` (1 thread) for 4 steps in one go ("full") and for 2 then
    resumed to 4 ("part"): their last checkpoints, for a bit-exact comparison."""
    assert cli(*base, "--steps", "4", "--out", tmp_path / "full")[0] == 0
    assert cli(*base, "--steps", "2", "--out", tmp_path / "part")[0] == 0
    # bit-exact needs the thread count of the full run; a resume picks its own from the load
    # average (2 on an idle machine), so it is given
    code, _, err = cli("train", "--out", tmp_path / "part", "--resume", "--steps", "4", "--no-progress", "--threads", "1")
    assert code == 0, err
    return tuple(torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True) for run in ("full", "part"))


def make(name, optim=None, **model):
    model.setdefault("arch", TINY)
    if name == "aae":
        model.setdefault("disc", SMALL_DISC)
    cfg = resolve({"model": {"name": name, **model}, "optim": optim or {}, "train": {"seed": 3}})
    m = build_model(cfg, 1, torch.device("cpu"))[0]
    if hasattr(m, "set_dataset_size"):
        m.set_dataset_size(1000)
    return m


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 64, 64, generator=g) > 0.8).float()


def squares(n=48, seed=0):
    """A tiny data set with structure: white squares of random size and position."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 64, 64)
    pos = torch.randint(4, 44, (n, 2), generator=g)
    size = torch.randint(8, 17, (n,), generator=g)
    for i in range(n):
        r, c, s = int(pos[i, 0]), int(pos[i, 1]), int(size[i])
        x[i, 0, r : r + s, c : c + s] = 1
    return x


def vae_forward(model, x):
    """Encoder/decoder forward with the same noise train_step will draw; (mean, logvar, z, recon, kl)."""
    g = torch.Generator().manual_seed(0)
    g.set_state(model.generator.get_state())
    with torch.no_grad():
        mean, logvar = model.encoder(x)
        z = mean + torch.randn(mean.shape, generator=g) * torch.exp(0.5 * logvar)
        p = torch.sigmoid(model.decoder(z))
        recon = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum() / len(x)
        kl = (0.5 * (mean**2 + logvar.exp() - logvar - 1)).sum() / len(x)
    return mean, logvar, z, recon, kl, g


# -- TC estimators (Chen et al. 2018) against brute force ---------------------------------------

def gaussian_mixture(n=256, d=3, seed=0):
    """Posteriors of n data points whose means lie near a line (strong dependence between the first
    two dims), and one sample z_i ~ q(z|x_i) per point; float64."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(n, 1, generator=g, dtype=torch.float64)
    mean = torch.cat([t, t + 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64),
                      torch.randn(n, d - 2, generator=g, dtype=torch.float64)], 1)
    logvar = torch.log(torch.rand(n, d, generator=g, dtype=torch.float64) * 0.2 + 0.05)
    z = mean + torch.randn(n, d, generator=g, dtype=torch.float64) * torch.exp(0.5 * logvar)
    return z, mean, logvar


def brute_force_tc(z, mean, logvar):
    """TC of the samples with q(z) and q(z_l) the exact mixtures over all N points, by loops."""
    n, d = mean.shape
    zs, ms, ss = z.numpy(), mean.numpy(), np.exp(0.5 * logvar.numpy())
    total = 0.0
    for i in range(len(zs)):
        comp = np.exp(-0.5 * ((zs[i] - ms) / ss) ** 2) / (ss * math.sqrt(2 * math.pi))  # (N, d)
        log_joint = math.log(np.prod(comp, axis=1).mean())
        log_marg = sum(math.log(comp[:, l].mean()) for l in range(d))
        total += log_joint - log_marg
    return total / len(zs)


def test_pairwise_log_density_matches_scipy():
    from scipy.stats import norm

    z, mean, logvar = gaussian_mixture(5, 3)
    got = pairwise_log_qz(z, mean, logvar).numpy()
    want = norm.logpdf(z.numpy()[:, None, :], mean.numpy()[None], np.exp(0.5 * logvar.numpy())[None])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_stratified_weights_rows_sum_to_one_with_own_point_on_the_diagonal():
    w = log_weight_matrix(5, 100, "mss", dtype=torch.float64).exp()
    np.testing.assert_allclose(w.sum(1).numpy(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(torch.diagonal(w).numpy(), 1 / 100)
    off = w[~torch.eye(5, dtype=torch.bool)]
    np.testing.assert_allclose(off.numpy(), 99 / (100 * 4))
    np.testing.assert_allclose(log_weight_matrix(4, 50, "mws").exp().numpy(), 1 / 200, rtol=1e-6)


def chen_code_weight_matrix(batch_size, n):
    """Chen et al.'s ``_log_importance_weight_matrix`` (spec §7.1), for comparison only."""
    m = batch_size - 1
    s = (n - m) / (n * m)
    w = torch.full((batch_size, batch_size), 1 / m, dtype=torch.float64)
    w.view(-1)[:: m + 1] = 1 / n
    w.view(-1)[1 :: m + 1] = s
    w[m - 1, 0] = s
    return w


def test_stratified_density_estimate_is_unbiased_over_all_batches():
    """For every sample z_i and every batch {i} ∪ S (S: all (M−1)-subsets of the other points),
    the weighted mixture Σ_j W_ij q(z_i|x_j) averages exactly to q(z_i) = (1/N) Σ_n q(z_i|x_n).
    Chen et al.'s matrix (1/N in column 0, not on the diagonal) does not."""
    n, m = 6, 3
    z, mean, logvar = gaussian_mixture(n, 2, seed=1)
    q = pairwise_log_qz(z, mean, logvar).sum(2).exp()  # q[i, j] = q(z_i | x_j)
    exact = q.mean(1)
    ours = log_weight_matrix(m, n, "mss", dtype=torch.float64).exp()
    chen = chen_code_weight_matrix(m, n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        est_ours, est_chen = [], []
        for subset in itertools.combinations(others, m - 1):
            idx = [i, *subset]  # the sample's own point first, as row 0 of the batch
            est_ours.append((ours[0] * q[i, idx]).sum())
            # put it at row 2 (not 0) for Chen's matrix: its diagonal is not special
            order = [idx[1], idx[2], idx[0]]
            est_chen.append((chen[2] * q[i, order]).sum())
        assert torch.stack(est_ours).mean().item() == pytest.approx(exact[i].item(), rel=1e-12)
        assert torch.stack(est_chen).mean().item() != pytest.approx(exact[i].item(), rel=1e-3)


def test_stratified_tc_with_the_whole_data_set_is_exact():
    z, mean, logvar = gaussian_mixture(64, 3, seed=2)
    want = brute_force_tc(z, mean, logvar)
    assert want > 0.3  # the mixture is strongly dependent: a test that could fail
    assert total_correlation(z, mean, logvar, 64, "mss").item() == pytest.approx(want, rel=1e-10)


def test_minibatch_tc_estimates_approach_brute_force():
    """Over random batches of M from N = 256, MSS converges to the brute-force TC as M grows;
    MWS is Chen et al.'s formula (checked by a loop), biased by its log(NM) constants."""
    z, mean, logvar = gaussian_mixture(256, 3, seed=0)
    exact = brute_force_tc(z, mean, logvar)
    g = torch.Generator().manual_seed(1)
    errors = {}
    for m in (16, 64, 128):
        vals = []
        for _ in range(60):
            idx = torch.randperm(256, generator=g)[:m]
            vals.append(total_correlation(z[idx], mean[idx], logvar[idx], 256, "mss").item())
        errors[m] = abs(np.mean(vals) - exact)
    assert errors[128] < errors[16] and errors[128] < 0.1 * exact + 0.02
    # MWS (Chen et al. §4.1): log q(z_i) ≈ log Σ_j q(z_i|x_j) − log(NM), each marginal likewise
    idx = torch.arange(10)
    zz, mm, lv = z[idx], mean[idx], logvar[idx]
    comp = pairwise_log_qz(zz, mm, lv).exp().numpy()  # [i, j, l]
    want = np.mean([math.log(np.prod(comp[i], axis=1).sum() / (256 * 10))
                    - sum(math.log(comp[i, :, l].sum() / (256 * 10)) for l in range(3)) for i in range(10)])
    assert total_correlation(zz, mm, lv, 256, "mws").item() == pytest.approx(want, rel=1e-10)


# -- β-TCVAE -------------------------------------------------------------------------------------

@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_betatcvae_loss_matches_hand_computation(estimator):
    model = make("betatcvae", beta=4.0, estimator=estimator)
    x = batch()
    mean, logvar, z, recon, kl, _ = vae_forward(model, x)
    tc = total_correlation(z.double(), mean.double(), logvar.double(), 1000, estimator).item()
    logs = model.train_step(x, None, 0)
    assert logs["tc"].item() == pytest.approx(tc, rel=1e-4, abs=1e-4)
    assert logs["loss"].item() == pytest.approx(recon.item() + kl.item() + 3.0 * tc, rel=1e-4)
    assert logs["elbo"].item() == pytest.approx(-(recon + kl).item(), rel=1e-4)


def test_betatcvae_with_beta_one_is_the_vae():
    a, b = make("betatcvae", beta=1.0), make("vae")
    x = batch(seed=5)
    la, lb = a.train_step(x, None, 0), b.train_step(x, None, 0)
    assert la["loss"].item() == pytest.approx(lb["loss"].item(), rel=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(a.encoder.parameters(), b.encoder.parameters()))


def test_betatcvae_dataset_size():
    cfg = resolve({"model": {"name": "betatcvae", "arch": TINY}})
    model = build_model(cfg, 1, torch.device("cpu"))[0]
    with pytest.raises(UserError, match="data set size"):
        model.train_step(batch(), None, 0)
    model.set_dataset_size(737_280)
    assert model.dataset_size == 737_280
    fixed = make("betatcvae", dataset_size=5000)
    fixed.set_dataset_size(10)  # an explicit model.dataset_size wins
    assert fixed.dataset_size == 5000


def test_minimising_the_tc_estimate_removes_dependence():
    """Gradient descent on the MSS estimate alone, over free posterior means, lowers the true
    (brute-force) TC: the estimator's gradient points the right way."""
    z0, mean0, logvar = gaussian_mixture(64, 3, seed=3)
    mean = mean0.clone().requires_grad_(True)
    opt = torch.optim.Adam([mean], lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        z = mean + torch.randn(mean.shape, generator=g, dtype=mean.dtype) * torch.exp(0.5 * logvar)
        loss = total_correlation(z, mean, logvar, 64, "mss")
        opt.zero_grad()
        loss.backward()
        opt.step()
    eps = torch.randn(mean.shape, generator=g, dtype=mean.dtype) * torch.exp(0.5 * logvar)
    before = brute_force_tc(mean0 + eps, mean0, logvar)
    after = brute_force_tc(mean.detach() + eps, mean.detach(), logvar)
    assert before > 0.4 and after < 0.3 * before


# -- DIP-VAE ---------------------------------------------------------------------------------------

def test_dip_covariances_and_penalty_match_numpy():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(7, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(7, 4, generator=g, dtype=torch.float64)
    cov_mu = np.cov(mean.numpy(), rowvar=False, bias=True)
    np.testing.assert_allclose(covariance(mean).numpy(), cov_mu, rtol=1e-12)
    cov_z = np.diag(np.exp(logvar.numpy()).mean(0)) + cov_mu
    np.testing.assert_allclose(aggregate_posterior_covariance(mean, logvar).numpy(), cov_z, rtol=1e-12)
    # Cov_q(z) by the law of total covariance: a Monte Carlo check with many samples per point
    eps = torch.randn(7, 20000, 4, generator=g, dtype=torch.float64)
    zs = (mean[:, None] + eps * torch.exp(0.5 * logvar)[:, None]).reshape(-1, 4).numpy()
    np.testing.assert_allclose(np.cov(zs, rowvar=False, bias=True), cov_z, atol=0.05 * np.abs(cov_z).max())
    pen, off, on = dip_penalty(torch.as_tensor(cov_z), 2.0, 20.0)
    want_off = sum(cov_z[i, j] ** 2 for i in range(4) for j in range(4) if i != j)
    want_on = sum((cov_z[i, i] - 1) ** 2 for i in range(4))
    assert off.item() == pytest.approx(want_off) and on.item() == pytest.approx(want_on)
    assert pen.item() == pytest.approx(2.0 * want_off + 20.0 * want_on)


def test_minimising_the_dip_penalty_whitens_the_codes():
    g = torch.Generator().manual_seed(0)
    mean = (torch.randn(32, 3, generator=g) @ torch.tensor([[1.0, 0.8, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 2.0]]))
    mean.requires_grad_(True)
    opt = torch.optim.Adam([mean], lr=0.05)
    for _ in range(400):
        loss = dip_penalty(covariance(mean), 1.0, 1.0)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    cov = covariance(mean.detach())
    assert torch.allclose(cov, torch.eye(3), atol=0.02)


@pytest.mark.parametrize("name, factor", [("dipvae1", 10.0), ("dipvae2", 1.0)])
def test_dipvae_loss_matches_numpy(name, factor):
    model = make(name, lambda_od=3.0)
    assert model.lambda_d == pytest.approx(3.0 * factor)
    x = batch(16, seed=2)
    mean, logvar, z, recon, kl, _ = vae_forward(model, x)
    mu, lv = mean.double().numpy(), logvar.double().numpy()
    cov = np.cov(mu, rowvar=False, bias=True)
    if name == "dipvae2":
        cov = cov + np.diag(np.exp(lv).mean(0))
    off = (cov - np.diag(np.diag(cov))) ** 2
    want = 3.0 * off.sum() + 3.0 * factor * ((np.diag(cov) - 1) ** 2).sum()
    logs = model.train_step(x, None, 0)
    assert logs["dip"].item() == pytest.approx(want, rel=1e-4)
    assert logs["loss"].item() == pytest.approx(recon.item() + kl.item() + want, rel=1e-4)


# -- AAE -------------------------------------------------------------------------------------------

def test_aae_losses_match_hand_computation():
    model = make("aae", gamma=2.5)
    with torch.no_grad():  # unequal logits, so that swapped labels would show
        model.discriminator.net[-1].bias.copy_(torch.tensor([1.5, -0.5]))
    x = batch(seed=4)
    disc0 = copy.deepcopy(model.discriminator)
    mean, logvar, z, recon, kl, g = vae_forward(model, x)
    with torch.no_grad():
        logits = disc0(z)
        kl_agg = (logits[:, 0] - logits[:, 1]).mean()
    logs = model.train_step(x, None, 0)
    assert kl_agg.item() > 1.5  # the bias shows through
    assert logs["kl_agg"].item() == pytest.approx(kl_agg.item(), rel=1e-4)
    assert logs["loss"].item() == pytest.approx(recon.item() + 2.5 * kl_agg.item(), rel=1e-4)
    assert logs["kl"].item() == pytest.approx(kl.item(), rel=1e-4)
    # D step after the VAE step: q(z) codes (the VAE step's z) class 0, prior samples class 1
    z_prior = torch.randn(z.shape, generator=g)
    with torch.no_grad():
        d_loss = 0.5 * (F.cross_entropy(disc0(z), torch.zeros(len(z), dtype=torch.long))
                        + F.cross_entropy(disc0(z_prior), torch.ones(len(z), dtype=torch.long)))
    assert logs["d_loss"].item() == pytest.approx(d_loss.item(), rel=1e-4)


def test_aae_discriminator_learns_to_tell_q_from_the_prior():
    """With γ = 0 and an encoder whose codes sit far from N(0, I), D must separate them."""
    model = make("aae", gamma=0.0, optim={"disc": {"lr": 3e-3}})
    with torch.no_grad():
        model.encoder.net[-1].bias[: model.z_dim] += 3.0
    x = batch(16, seed=1)
    for step in range(25):
        logs = model.train_step(x, None, step)
    assert logs["d_acc"].item() > 0.9 and logs["kl_agg"].item() > 1.0


# -- InfoWGAN-GP -----------------------------------------------------------------------------------

def test_gradient_penalty_of_a_linear_critic():
    """D(x) = <w, x> + b has ∇D = w everywhere: GP = (‖w‖ − 1)², ∂GP/∂w = 2(‖w‖ − 1) w/‖w‖."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def critic(x):
        return (x * w).flatten(1).sum(1) + b

    real = torch.rand(5, 2, 3, 3, generator=g, dtype=torch.float64)
    fake = torch.rand(5, 2, 3, 3, generator=g, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, g)
    norm = w.detach().norm()
    assert gp.item() == pytest.approx((norm.item() - 1) ** 2, rel=1e-12)
    gp.backward()
    np.testing.assert_allclose(w.grad.numpy(), (2 * (norm - 1) * w.detach() / norm).numpy(), rtol=1e-10)
    assert b.grad is None or b.grad.item() == 0


def test_gradient_penalty_interpolates_per_sample():
    """D(x) = ½‖x‖² has ∇D(x̂) = x̂ = u·real + (1 − u)·fake, with one u ~ U(0, 1) per sample."""
    g = torch.Generator().manual_seed(1)
    real = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64)
    fake = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64)
    state = g.get_state()
    gp = gradient_penalty(lambda x: 0.5 * x.pow(2).flatten(1).sum(1), real, fake, g)
    g.set_state(state)
    u = torch.rand(6, 1, 1, 1, generator=g, dtype=torch.float64)
    x_hat = u * real + (1 - u) * fake
    want = ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert gp.item() == pytest.approx(want.item(), rel=1e-12)


def test_info_loss_hand_values():
    fixed = make("infowgan_gp", n_cont=2, cat_sizes=[3, 2], noise_dim=1)
    q_out = torch.tensor([[0.5, -1.0, 2.0, 0.0, 0.0, 1.0, -1.0]])
    cont, cat = torch.tensor([[0.0, 1.0]]), torch.tensor([[0, 1]])
    l_cont, l_cat, acc = fixed.info_loss(q_out, cont, cat)
    log2pi = math.log(2 * math.pi)
    assert l_cont.item() == pytest.approx(0.5 * (0.25 + log2pi) + 0.5 * (4.0 + log2pi))
    ce1 = -(2.0 - math.log(math.exp(2) + 2))  # class 0 of logits [2, 0, 0]
    ce2 = -(-1.0 - math.log(math.exp(1) + math.exp(-1)))  # class 1 of logits [1, -1]
    assert l_cat.item() == pytest.approx(ce1 + ce2)
    assert acc.item() == pytest.approx(0.5)
    learned = make("infowgan_gp", n_cont=1, cat_sizes=[], q_variance="learned")
    q_out = torch.tensor([[0.5, math.log(4.0)]])  # mean 0.5, variance 4
    l_cont, l_cat, _ = learned.info_loss(q_out, torch.tensor([[-0.5]]), torch.zeros(1, 0, dtype=torch.long))
    from scipy.stats import norm

    assert l_cont.item() == pytest.approx(-norm.logpdf(-0.5, 0.5, 2.0)) and l_cat.item() == 0


def test_infowgan_generator_batchnorm_keeps_saturated_logits_trainable():
    """generator_norm: batch (default) puts BatchNorm before each hidden ReLU of G and none in the
    critic; it normalises away a constant shift of G's hidden units, which without it drives
    every logit (and so every pixel) the same way (the blank-image failure, docs/methods.md)."""
    bn = make("infowgan_gp", noise_dim=4)
    plain = make("infowgan_gp", noise_dim=4, generator_norm="none")
    kinds = lambda net: [type(m).__name__ for m in net.modules() if "Norm" in type(m).__name__]  # noqa: E731
    assert kinds(bn.generator_net) == ["BatchNorm1d", "BatchNorm1d", "BatchNorm2d", "BatchNorm2d", "BatchNorm2d"]
    assert kinds(plain.generator_net) == [] and kinds(bn.critic) == []
    g = torch.Generator().manual_seed(0)
    z = bn.generator_input(*bn.sample_codes(32, g, device=torch.device("cpu")))
    with torch.no_grad():  # a large bias on the first hidden layer: plain G's output moves, BN's does not
        ref_bn, ref_plain = bn.generator_net(z), plain.generator_net(z)
        bn.generator_net.fc[0].bias += 50.0
        plain.generator_net.fc[0].bias += 50.0
        assert torch.allclose(bn.generator_net(z), ref_bn, atol=1e-4)
        assert not torch.allclose(plain.generator_net(z), ref_plain, atol=1e-2)


def test_infowgan_critic_loss_matches_hand_computation():
    model = make("infowgan_gp", n_critic=1, lambda_info=0.7, lambda_gp=3.0, noise_dim=3)
    x, x2 = batch(6, seed=1), batch(6, seed=2)
    g = torch.Generator().manual_seed(0)
    g.set_state(model.generator.get_state())
    critic, gen_net = copy.deepcopy(model.critic), copy.deepcopy(model.generator_net)
    noise = torch.randn(6, 3, generator=g)
    cont = torch.rand(6, 4, generator=g) * 2 - 1
    cat = torch.randint(3, (6,), generator=g)
    fake = torch.sigmoid(gen_net(torch.cat([noise, cont, F.one_hot(cat, 3).float()], 1))).detach()
    u = torch.rand(6, 1, 1, 1, generator=g)
    x_hat = (u * x + (1 - u) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic.score(x_hat).sum(), x_hat)
    gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    q = critic(fake)[1].detach()
    l_cont = (0.5 * ((cont - q[:, :4]) ** 2 + math.log(2 * math.pi))).sum(1).mean()
    l_cat = F.cross_entropy(q[:, 4:], cat)
    with torch.no_grad():
        wdist = critic.score(x).mean() - critic.score(fake).mean()
    want = -wdist + 3.0 * gp + 0.7 * (l_cont + l_cat)
    logs = model.train_step(x, x2, 0)
    assert logs["gp"].item() == pytest.approx(gp.item(), rel=1e-4)
    assert logs["wdist"].item() == pytest.approx(wdist.item(), rel=1e-3, abs=1e-6)
    assert logs["critic_loss"].item() == pytest.approx(want.item(), rel=1e-4)


def test_infowgan_critic_draws_a_fresh_real_batch_for_every_update():
    # WGAN-GP (Gulrajani et al. 2017, Algorithm 1) samples real data inside the critic loop
    model = make("infowgan_gp", n_critic=5, noise_dim=3)
    assert model.needs_second_batch and model.second_batches == 4
    reals = [batch(8, seed=s) for s in range(5)]
    seen = []
    score = model.critic.score
    model.critic.score = lambda x: (seen.append(x.detach().clone()), score(x))[1]
    model.train_step(reals[0], torch.cat(reals[1:]), 0)
    uses = [sum(torch.equal(x, r) for x in seen) for r in reals]
    assert uses == [1, 1, 1, 1, 1], uses


def test_infowgan_mi_term_trains_q_and_the_generator():
    """λ > 0: the critic step moves Q's head and the generator's gradient carries λ·L_I;
    λ = 0: Q's head is untouched and the generator's gradient is the Wasserstein one only.
    The generator's backward leaves the critic's gradients as its own step left them."""
    x, x2 = batch(6, seed=3), batch(6, seed=4)
    moved, grads = {}, {}
    for lam in (0.0, 1.0):
        model = make("infowgan_gp", n_critic=1, lambda_info=lam)
        before = model.critic.q_head.weight.detach().clone()
        seen = {}
        critic_step, gen_step = model.critic_optim.step, model.gen_optim.step

        def spy_critic(*a, _m=model, **k):
            seen["critic_grads"] = [None if p.grad is None else p.grad.clone() for p in _m.critic.parameters()]
            return critic_step(*a, **k)

        def spy_gen(*a, _m=model, _lam=lam, **k):
            grads[_lam] = _m.generator_net.fc[0].weight.grad.clone()
            seen["critic_grads_at_gen"] = [None if p.grad is None else p.grad.clone() for p in _m.critic.parameters()]
            return gen_step(*a, **k)

        model.critic_optim.step, model.gen_optim.step = spy_critic, spy_gen
        model.train_step(x, x2, 0)
        moved[lam] = not torch.equal(before, model.critic.q_head.weight)
        for a, b in zip(seen["critic_grads"], seen["critic_grads_at_gen"]):
            assert (a is None and b is None) or torch.equal(a, b)
    assert moved == {0.0: False, 1.0: True}
    assert not torch.allclose(grads[0.0], grads[1.0])


def test_infowgan_codes_representation_and_traversals():
    from factorvae.viz.traversals import traversal_frames

    model = make("infowgan_gp", noise_dim=3, n_cont=2, cat_sizes=[3])
    model.eval()
    x = batch(4, seed=6)
    rep = model.representation(x)
    assert rep.shape == (4, 3) and set(rep[:, 2].tolist()) <= {0.0, 1.0, 2.0}
    base = model.latent_traversal_base(x)
    assert base.shape == (4, 6) and torch.equal(base[:, 3:], rep)
    assert torch.equal(base, model.latent_traversal_base(x))  # fixed noise: reproducible
    dims = model.traversal_values(limit=2.0, steps=9)
    assert [j for j, _ in dims] == [3, 4, 5]  # codes only, never the noise
    assert dims[0][1][0] == -2 and dims[0][1][-1] == 2
    assert sorted(set(dims[2][1].tolist())) == [0.0, 1.0, 2.0] and len(dims[2][1]) == 9
    # a compact latent decodes through the one-hot of its class index
    z = base[:1].clone()
    z[0, 5] = 1
    want = torch.sigmoid(model.generator_net(torch.cat([z[:, :5], torch.tensor([[0.0, 1.0, 0.0]])], 1)))
    assert torch.allclose(model.decode_images(z), want)
    frames, traversed = traversal_frames(model, x[:2], 2.0, 9)
    assert frames.shape == (2, 3, 9, 1, 64, 64) and traversed == [3, 4, 5]
    # the categorical row changes image only where the class changes
    assert torch.equal(frames[0, 2, 0], frames[0, 2, 1]) and not torch.equal(frames[0, 2, 0], frames[0, 2, -1])
    samples = model.decode_images(model.sample_latents(5, torch.Generator().manual_seed(0)))
    assert samples.shape == (5, 1, 64, 64) and 0 <= samples.min() and samples.max() <= 1


# -- short training runs: the objective improves -----------------------------------------------------

FAST = {"vae": {"lr": 1e-3}, "disc": {"lr": 1e-3},
        "gen": {"lr": 1e-3, "betas": [0.5, 0.9]}, "critic": {"lr": 1e-3, "betas": [0.5, 0.9]}}


@pytest.mark.parametrize("name, key, extra", [
    ("betatcvae", "loss", {}),
    ("dipvae1", "loss", {}),
    ("dipvae2", "loss", {}),
    ("aae", "loss", {}),
    ("infowgan_gp", "critic_loss", {"noise_dim": 4, "n_critic": 5}),
])
def test_short_training_run_improves_the_objective(name, key, extra):
    data = squares()
    model = make(name, optim=FAST, **extra)
    if hasattr(model, "set_dataset_size"):
        model.set_dataset_size(len(data))
    g = torch.Generator().manual_seed(0)
    hist, wdist = [], []
    for step in range(30):
        x1 = data[torch.randint(len(data), (16,), generator=g)]
        x2 = (data[torch.randint(len(data), (16 * model.second_batches,), generator=g)]
              if model.needs_second_batch else None)
        logs = model.train_step(x1, x2, step)
        assert all(torch.isfinite(v) for v in logs.values()), logs
        hist.append(logs[key].item())
        wdist.append(logs["wdist"].item() if "wdist" in logs else 0.0)
    first, last = np.mean(hist[:5]), np.mean(hist[-5:])
    assert last < first - 0.02 * abs(first), (name, first, last)
    if name == "infowgan_gp":
        assert np.mean(wdist[-10:]) > 0  # the critic scores real images above generated ones


# -- the command line: train, resume, traverse, eval ---------------------------------------------------------

def cli_args(name):
    args = ["--set", "model.arch.channels=[4,4,4,4]", "--set", "model.arch.fc=8"]
    if name == "aae":
        args += ["--set", "model.disc.hidden=16", "--set", "model.disc.layers=2"]
    if name == "infowgan_gp":
        args += ["--set", "model.n_critic=2"]
    return args


@pytest.mark.parametrize("name", EXTRA)
def test_cli_trains_resumes_traverses_and_evaluates(name, tmp_path, cli):
    """`factorvae train` on the toy grid, resumed mid-way to identical weights, then
    `factorvae traverse` and `factorvae eval` on the run."""
    import json

    base = ["train", "--model", name, "--dataset", "toy", "--seed", "2", "--no-progress", *cli_args(name),
            "--set", "train.threads=1", "--set", "train.ckpt_every=2", "--set", "train.log_every=2",
            "--set", "train.image_every=1000", "--set", "train.batch_size=8"]
    a, b = train_and_resume(cli, base, tmp_path)
    from factorvae.methods import get_method

    assert a["step"] == b["step"] == 4 and set(a["optim"]) == set(get_method(name).optim_sections)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), (name, k)
    recs = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4] and "loss" in recs[-1]
    images = tmp_path / "full" / "images"
    assert (images / "traversal_ref0.png").stat().st_size > 0 and (images / "samples.png").stat().st_size > 0
    code, _, err = cli("traverse", tmp_path / "full", "--out", tmp_path / "trav", "--steps", "5")
    assert code == 0, err
    code, out, err = cli("eval", tmp_path / "full", "--preset", "fast", "--metrics", "factor_vae,mig,sap",
                         "--no-progress")
    assert code == 0, err
    scores = json.loads((tmp_path / "full" / "eval.json").read_text())
    assert 0 <= scores["mig"]["discrete_mig"] <= 1 and scores["run"]["model"] == name


# -- bad hyper-parameters ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, option, value, message", [
    ("betatcvae", "beta", -1, "model.beta must be >= 0"),
    ("betatcvae", "estimator", "exact", "model.estimator must be one of mws, mss"),
    ("betatcvae", "dataset_size", 1, "model.dataset_size must be >= 2"),
    ("dipvae1", "lambda_od", -0.5, "model.lambda_od must be >= 0"),
    ("dipvae2", "lambda_d_factor", "ten", "model.lambda_d_factor must be a number"),
    ("aae", "gamma", -2, "model.gamma must be >= 0"),
    ("aae", "disc", {"depth": 3}, "unknown model.disc option"),
    ("infowgan_gp", "lambda_info", -0.1, "model.lambda_info must be >= 0"),
    ("infowgan_gp", "lambda_gp", float("nan"), "model.lambda_gp must be a number"),
    ("infowgan_gp", "n_critic", 0, "model.n_critic must be >= 1"),
    ("infowgan_gp", "n_critic", 2.5, "model.n_critic must be a whole number"),
    ("infowgan_gp", "noise_dim", -5, "model.noise_dim must be >= 0"),
    ("infowgan_gp", "cat_sizes", [3, 1], "model.cat_sizes must be >= 2"),
    ("infowgan_gp", "cat_sizes", 3, "model.cat_sizes must be a list"),
    ("infowgan_gp", "q_variance", "free", "model.q_variance must be 'fixed' or 'learned'"),
    ("infowgan_gp", "critic_leak", 1.5, "model.critic_leak must be in [0, 1)"),
    ("infowgan_gp", "z_dim", 10, "unknown infowgan_gp model option(s): z_dim"),
    ("infowgan_gp", "generator_norm", "layer", "model.generator_norm must be 'batch' or 'none'"),
])
def test_invalid_hyperparameters_are_rejected(name, option, value, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make(name, **{option: value})


def test_infowgan_needs_a_code():
    with pytest.raises(UserError, match="at least one code"):
        make("infowgan_gp", n_cont=0, cat_sizes=[])


def test_bad_hyperparameter_on_the_command_line(tmp_path, cli):
    code, _, err = cli("train", "--model", "infowgan_gp", "--dataset", "toy", "--set", "model.n_critic=0",
                       "--steps", "1", "--out", tmp_path / "r", "--no-progress")
    assert code == 2 and "model.n_critic must be >= 1" in err and "Traceback" not in err


def test_shipped_configs_of_the_extra_models():
    from pathlib import Path

    from factorvae.config import read_yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    got = {f: resolve(read_yaml(root / f"{f}.yaml")) for f in EXTRA}
    assert got["dipvae1"]["model"]["lambda_d_factor"] == 10.0 and got["dipvae2"]["model"]["lambda_d_factor"] == 1.0
    assert got["betatcvae"]["model"]["estimator"] == "mws"
    ig = got["infowgan_gp"]
    assert (ig["model"]["n_cont"], ig["model"]["cat_sizes"]) == (4, [3])
    assert ig["optim"]["gen"]["betas"] == [0.5, 0.9] and ig["optim"]["critic"]["lr"] == 1e-4
    sweep = read_yaml(root / "sweeps" / "infowgan_gp_grid.yaml")
    grid = sweep["methods"][0]["grid"]
    assert grid["model.lambda_info"] == [round(0.1 * i, 1) for i in range(11)]
    assert grid["model.noise_dim"] == [5, 10, 20, 40, 80, 160]
    assert grid["optim.gen.lr"] == [1e-3, 1e-4] and grid["optim.critic.lr"] == [1e-4, 1e-5]
    for key in grid:  # every grid key is a real option of the base config
        section, *rest = key.split(".")
        node = ig[section]
        for part in rest:
            assert part in node, key
            node = node[part]
