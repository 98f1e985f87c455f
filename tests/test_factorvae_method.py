"""FactorVAE / β-VAE semantics: Algorithm 1 (permute_dims), Algorithm 2's two updates and their
isolation, and the losses against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from factorvae.config import resolve
from factorvae.methods.base import bernoulli_nll, gaussian_kl_per_dim, reparameterize
from factorvae.methods.factorvae import permute_dims, total_correlation_logits
from factorvae.runs import build_model

SMALL = {"arch": {"channels": [8, 8, 8, 8], "fc": 16}, "disc": {"hidden": 32, "layers": 2}}


def make(name, **model):
    cfg = resolve({"model": {"name": name, **model}, "train": {"seed": 3}})
    return build_model(cfg, 1, torch.device("cpu"))[0]


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 64, 64, generator=g) > 0.8).float()


# -- Algorithm 1 ------------------------------------------------------------------------------

def test_permute_dims_permutes_each_column_independently():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, 6, generator=g)
    p = permute_dims(z, g)
    for j in range(z.shape[1]):  # each column holds exactly its input values
        assert torch.equal(torch.sort(p[:, j]).values, torch.sort(z[:, j]).values)
    # rows are not kept together: each column was moved by a different permutation
    src = [torch.nonzero(p[:, j, None] == z[None, :, j])[:, 1] for j in range(6)]  # source row of each entry
    assert all(len(s) == 256 for s in src)
    assert len({tuple(s.tolist()) for s in src}) == 6


def test_permute_dims_decorrelates_dimensions():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4096, 1, generator=g)
    z = torch.cat([base, base + 0.1 * torch.randn(4096, 1, generator=g), -base], dim=1)
    before = np.corrcoef(z.T.numpy())
    after = np.corrcoef(permute_dims(z, g).T.numpy())
    off = ~np.eye(3, dtype=bool)
    assert np.abs(before[off]).min() > 0.99
    assert np.abs(after[off]).max() < 0.06  # ~ 4 / sqrt(4096)


def test_permute_dims_is_reproducible_with_a_seeded_generator():
    z = torch.randn(32, 4)
    a = permute_dims(z, torch.Generator().manual_seed(5))
    b = permute_dims(z, torch.Generator().manual_seed(5))
    c = permute_dims(z, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- losses against hand-computed values --------------------------------------------------------

def test_bernoulli_nll_and_kl_hand_values():
    # logits 0 -> p = 0.5 for every pixel: NLL = log 2 per pixel, summed over 3 pixels
    logits = torch.zeros(2, 1, 1, 3)
    x = torch.tensor([[[[1.0, 0.0, 1.0]]], [[[0.0, 0.0, 0.0]]]])
    assert bernoulli_nll(logits, x).item() == pytest.approx(3 * math.log(2))
    # logit 2 on target 1: log(1 + e^-2); on target 0: log(1 + e^2)
    logits = torch.tensor([[[[2.0, 2.0]]]])
    x = torch.tensor([[[[1.0, 0.0]]]])
    assert bernoulli_nll(logits, x).item() == pytest.approx(math.log1p(math.exp(-2)) + math.log1p(math.exp(2)))
    # KL(N(1, 1) || N(0, 1)) = 0.5; KL(N(0, e^2) || N(0,1)) = 0.5 (e^2 - 2 - 1)
    mean = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    logvar = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    kl = gaussian_kl_per_dim(mean, logvar)
    assert kl[0].item() == pytest.approx(0.5)
    assert kl[1].item() == pytest.approx(0.5 * (math.exp(2) - 3))


def test_tc_estimate_is_the_logit_difference():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    # log D/(1-D) with D = softmax(logits)[:, 0]
    d = logits.softmax(1)[:, 0]
    assert torch.allclose(total_correlation_logits(logits), torch.log(d / (1 - d)))


def _expected_vae_terms(model, x, gen_state):
    """The ELBO terms recomputed by hand from the same parameters and noise."""
    g = torch.Generator().manual_seed(0)
    g.set_state(gen_state)
    with torch.no_grad():
        h = model.encoder.net(x)
        mean, logvar = h[:, : model.z_dim], h[:, model.z_dim :]
        z = mean + torch.randn(mean.shape, generator=g) * torch.exp(0.5 * logvar)
        logits = model.decoder(z)
        p = torch.sigmoid(logits)
        recon = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum() / len(x)
        kl = (0.5 * (mean**2 + logvar.exp() - logvar - 1)).sum() / len(x)
    return z, recon, kl


def test_betavae_loss_matches_hand_computation():
    model = make("betavae", beta=6.0, **{"arch": SMALL["arch"]})
    x = batch()
    _, recon, kl = _expected_vae_terms(model, x, model.generator.get_state())
    logs = model.train_step(x, None, 0)
    assert logs["recon"].item() == pytest.approx(recon.item(), rel=1e-4)
    assert logs["kl"].item() == pytest.approx(kl.item(), rel=1e-4)
    assert logs["loss"].item() == pytest.approx(recon.item() + 6.0 * kl.item(), rel=1e-4)


def test_factorvae_losses_match_hand_computation():
    model = make("factorvae", gamma=25.0, **SMALL)
    x, x2 = batch(seed=1), batch(seed=2)
    state = model.generator.get_state()
    z, recon, kl = _expected_vae_terms(model, x, state)
    with torch.no_grad():
        logits = model.discriminator(z)
        tc = (logits[:, 0] - logits[:, 1]).mean()
    logs = model.train_step(x, x2, 0)
    assert logs["tc"].item() == pytest.approx(tc.item(), rel=1e-4, abs=1e-6)
    assert logs["loss"].item() == pytest.approx(recon.item() + kl.item() + 25.0 * tc.item(), rel=1e-4)
    # the D loss is the mean of the two cross-entropies (0.5 (CE_joint + CE_perm)), in [0, inf)
    assert 0 < logs["d_loss"].item() < 5 and 0 <= logs["d_acc"].item() <= 1


def test_discriminator_loss_uses_joint_class0_and_permuted_class1():
    """D's update must move D(z) towards class 0 on joint codes and class 1 on permuted ones: one
    update on fixed codes and permutation lowers d_loss and widens D(z) - D(perm z). (A 60-step
    trend on one batch was a coin flip of the noise sequence: gaps of +-0.005 either way.)"""
    model = make("factorvae", gamma=0.0, **SMALL)
    x, x2 = batch(64), batch(64, seed=1)
    block, i = model.noise_block(0, 64, x.device, model.param_dtype)
    noise = {k: v[i] for k, v in block.items()}
    with torch.no_grad():
        z = model.elbo_terms(x, noise["eps"])[2]
    loss, before, _ = model.disc_phase(x, x2, noise, {}, z)
    model.step_optimizer(model.disc_optim, loss)
    _, after, _ = model.disc_phase(x, x2, noise, {}, z)
    assert after["d_loss"].item() < before["d_loss"].item()
    assert after["d_z"].item() - after["d_z_perm"].item() > before["d_z"].item() - before["d_z_perm"].item()


# -- gradient isolation (Algorithm 2) ----------------------------------------------------------

def test_vae_step_leaves_d_and_d_step_leaves_vae_unchanged():
    model = make("factorvae", **SMALL)
    x, x2 = batch(seed=3), batch(seed=4)
    model.train_step(x, x2, 0)  # populate optimiser state
    seen = {}
    stale_d_grads = [p.grad.clone() for p in model.discriminator.parameters()]  # left by the last D step
    vae_params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    d_params = list(model.discriminator.parameters())
    vae_step, d_step = model.vae_optim.step, model.disc_optim.step

    def spy_vae(*a, **k):
        seen["d_before_vae"] = [p.detach().clone() for p in d_params]
        seen["d_grad_in_vae"] = [p.grad for p in d_params]
        out = vae_step(*a, **k)
        seen["d_after_vae"] = [p.detach().clone() for p in d_params]
        seen["vae_after_vae"] = [p.detach().clone() for p in vae_params]
        seen["vae_grads"] = [p.grad.clone() for p in vae_params]
        return out

    def spy_d(*a, **k):
        seen["vae_grads_at_d"] = [p.grad.clone() for p in vae_params]
        out = d_step(*a, **k)
        seen["vae_after_d"] = [p.detach().clone() for p in vae_params]
        seen["d_after_d"] = [p.detach().clone() for p in d_params]
        return out

    model.vae_optim.step, model.disc_optim.step = spy_vae, spy_d
    model.train_step(x, x2, 1)
    # the VAE loss's backward put no gradient into D, and the VAE optimiser did not move D
    assert all(torch.equal(g, s) for g, s in zip(seen["d_grad_in_vae"], stale_d_grads))
    assert all(torch.equal(a, b) for a, b in zip(seen["d_before_vae"], seen["d_after_vae"]))
    # the D loss's backward did not touch the encoder/decoder gradients or weights
    assert all(torch.equal(a, b) for a, b in zip(seen["vae_grads"], seen["vae_grads_at_d"]))
    assert all(torch.equal(a, b) for a, b in zip(seen["vae_after_vae"], seen["vae_after_d"]))
    # and D did move in its own step
    assert any(not torch.equal(a, b) for a, b in zip(seen["d_after_vae"], seen["d_after_d"]))
    # the optimisers hold disjoint parameter sets
    ids_vae = {id(p) for g in model.vae_optim.param_groups for p in g["params"]}
    ids_d = {id(p) for g in model.disc_optim.param_groups for p in g["params"]}
    assert not ids_vae & ids_d and ids_d == {id(p) for p in d_params}


def test_tc_gradient_reaches_the_encoder_only_through_z():
    """γ·TC changes the encoder update: with γ > 0 the encoder gradients differ from γ = 0."""
    grads = {}
    for gamma in (0.0, 50.0):
        model = make("factorvae", gamma=gamma, **SMALL)
        x = batch(seed=9)
        mean, logvar, z, recon, kl = model.elbo_terms(x)
        loss = recon + kl.sum() + gamma * total_correlation_logits(model.discriminator(z)).mean()
        loss.backward()
        grads[gamma] = model.encoder.net[0].weight.grad.clone()
        assert all(p.grad is not None for p in model.discriminator.parameters())  # sanity of the probe
    assert not torch.allclose(grads[0.0], grads[50.0])


def test_reparameterize_uses_the_generator():
    mean, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    a = reparameterize(mean, logvar, torch.Generator().manual_seed(1))
    b = reparameterize(mean, logvar, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.std() > 0
    assert torch.allclose(reparameterize(mean + 2, logvar - 100, torch.Generator().manual_seed(2)), mean + 2)


def test_no_inplace_autograd_error_over_several_steps():
    model = make("factorvae", **SMALL)
    for step in range(3):
        logs = model.train_step(batch(seed=step), batch(seed=step + 100), step)
    assert all(torch.isfinite(v) for v in logs.values())


def test_invalid_hyperparameters_are_rejected():
    from factorvae.errors import UserError

    with pytest.raises(UserError, match="gamma"):
        make("factorvae", gamma=-1)
    with pytest.raises(UserError, match="beta"):
        make("betavae", beta="big")
    with pytest.raises(UserError, match="z_dim"):
        make("vae", z_dim=0)
    with pytest.raises(UserError, match="unknown vae model option"):
        make("vae", gamma=3)
