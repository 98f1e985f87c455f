"""AnnealedVAE (Burgess et al. 2018) and the decoder likelihoods (model.likelihood)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from test_methods_extra import train_and_resume

from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.errors import UserError
from factorvae.methods.base import log_px_given_z, recon_loss
from factorvae.metrics.likelihood import log_importance_weights
from factorvae.metrics.recon import reconstruction_error
from factorvae.runs import build_model

TINY = {"channels": [4, 4, 4, 4], "fc": 8}


def make(name, **model):
    cfg = resolve({"model": {"name": name, "arch": TINY, **model}, "optim": {"vae": {"lr": 1e-3}}})
    return build_model(cfg, 1, torch.device("cpu"))[0]


def test_capacity_rises_linearly_then_holds():
    m = make("annealedvae", c_max=10, iteration_threshold=100)
    assert [m.capacity(s) for s in (0, 25, 100, 250)] == [0.0, 2.5, 10.0, 10.0]


def test_annealed_loss_uses_the_step_it_is_given():
    m = make("annealedvae", c_max=10, iteration_threshold=100, gamma=3)
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    logs = m.train_step(x, None, 50)
    assert logs["capacity"].item() == 5.0
    assert math.isclose(logs["loss"].item(), logs["recon"].item() + 3 * abs(logs["kl"].item() - 5.0), rel_tol=1e-5)
    assert m.train_step(x, None, 200)["capacity"].item() == 10.0  # held at c_max after the threshold


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_annealed_group_runs_equal_single_runs_at_their_own_steps(strategy):
    """A vectorised group schedules each member's C from that member's step (Method.hparams)."""
    from factorvae.group import RunGroup

    cfgs = [dict(c_max=10, iteration_threshold=4, gamma=3), dict(c_max=6, iteration_threshold=2, gamma=5)]
    singles = [make("annealedvae", **c) for c in cfgs]
    members = [make("annealedvae", **c) for c in cfgs]
    for a, b in zip(singles, members):
        b.load_state_dict(a.state_dict())
        b.generator.set_state(a.generator.get_state())
    group = RunGroup(members, [torch.Generator().manual_seed(i) for i in range(2)], strategy=strategy)
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        x = torch.rand(4, 1, 64, 64, generator=g)
        logs = group.step(x.expand(2, *x.shape), None, [step, step + 5])
        for i, (m, s) in enumerate(zip(singles, (step, step + 5))):
            ref = m.train_step(x, None, s)
            assert logs["capacity"][i].item() == pytest.approx(ref["capacity"].item())
            assert logs["loss"][i].item() == pytest.approx(ref["loss"].item(), rel=1e-4)


def test_annealed_resume_is_exact_and_logs_the_capacity(tmp_path, cli):
    base = ["train", "--model", "annealedvae", "--dataset", "toy", "--seed", "1", "--no-progress",
            "--set", "model.arch.channels=[4,4,4,4]", "--set", "model.arch.fc=8", "--set", "model.c_max=6",
            "--set", "model.iteration_threshold=3", "--set", "train.threads=1", "--set", "train.ckpt_every=2",
            "--set", "train.log_every=1", "--set", "train.image_every=1000", "--set", "train.batch_size=8"]
    a, b = train_and_resume(cli, base, tmp_path)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for run in ("full", "part"):
        recs = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        # the record of step s holds the loss of the step taken with s - 1 steps done
        assert [r["capacity"] for r in recs] == pytest.approx([min(6, 6 * (r["step"] - 1) / 3) for r in recs])


def test_gaussian_likelihood_units():
    g = torch.Generator().manual_seed(2)
    logits, x = torch.randn(3, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)
    mu = torch.sigmoid(logits).numpy()
    expect = norm.logpdf(x.numpy(), mu, math.sqrt(0.5)).reshape(3, -1).sum(1)
    np.testing.assert_allclose(log_px_given_z(logits, x, "gaussian").numpy(), expect, rtol=1e-5)
    np.testing.assert_allclose(recon_loss(logits, x, "gaussian").item(), ((x.numpy() - mu) ** 2).sum() / 3, rtol=1e-5)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    np.testing.assert_allclose(log_px_given_z(logits, x, "bernoulli").numpy(), -bce.numpy(), rtol=1e-6)
    with pytest.raises(UserError, match="model.likelihood must be one of bernoulli, gaussian"):
        make("betavae", likelihood="laplace")


def test_analyses_respect_the_likelihood():
    """The reconstruction error and the log-likelihood use the model's own decoder density."""
    data = load_dataset("toy", progress=False)
    bern, gaus = make("vae"), make("vae", likelihood="gaussian")
    gaus.load_state_dict(bern.state_dict())  # same weights, different p(x|z)
    assert gaus.likelihood == "gaussian"
    x = data.images(data.fixed_indices(8, 0))
    with torch.no_grad():
        expect = float(((x - torch.sigmoid(gaus.decode(gaus.encode(x)[0]))) ** 2).sum() / 8)
    got = reconstruction_error(gaus, data, num_images=8, seed=0)["recon_at_mean"]
    assert got == pytest.approx(expect, rel=1e-5)
    assert reconstruction_error(bern, data, num_images=8)["recon_at_mean"] != pytest.approx(got)
    lw_g = log_importance_weights(gaus, x[:2], 3, torch.Generator().manual_seed(5))
    lw_b = log_importance_weights(bern, x[:2], 3, torch.Generator().manual_seed(5))
    with torch.no_grad():
        mean, logvar = gaus.encode(x[:2])
        eps = torch.randn((2, 3, mean.shape[1]), generator=torch.Generator().manual_seed(5))
        z = (mean[:, None] + eps * torch.exp(0.5 * logvar)[:, None]).reshape(6, -1)
        logits = gaus.decode(z)
        xx = x[:2, None].expand(2, 3, 1, 64, 64).reshape(6, 1, 64, 64)
        diff = (log_px_given_z(logits, xx, "gaussian") - log_px_given_z(logits, xx, "bernoulli")).reshape(2, 3)
    torch.testing.assert_close(lw_g - lw_b, diff, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["smallnorb", "cars3d", "mpi3d_real"])
def test_dataset_defaults_for_the_new_data_sets(name):
    """dlib's FC-256 networks by default; an explicit value wins."""
    assert resolve({"data": {"name": name}})["model"]["arch"]["fc"] == 256
    assert resolve({"data": {"name": name}, "model": {"arch": {"fc": 64}}})["model"]["arch"]["fc"] == 64
    assert resolve({"data": {"name": name}})["model"]["likelihood"] == "bernoulli"


def test_shipped_config():
    from pathlib import Path

    from factorvae.config import read_yaml

    cfg = resolve(read_yaml(Path(__file__).resolve().parents[1] / "configs" / "annealedvae.yaml"))
    m = cfg["model"]
    assert (m["name"], m["gamma"], m["c_max"], m["iteration_threshold"]) == ("annealedvae", 1000, 25, 100_000)
