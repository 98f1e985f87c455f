"""Sampled representations (one seeded draw z ~ q(z|x) per image) beside the means, from
one shared encoding pass (metrics/sampled.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factorvae.data.grid import FactorGrid
from factorvae.errors import UserError
from factorvae.metrics import sampled


class GaussianModel(torch.nn.Module):
    """encode: mean = a fixed function of the flat index written into pixel 0, log-variance
    log(0.3^2); records which indices it saw."""

    def __init__(self, D=3, logvar=True):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.D, self.with_logvar, self.seen = D, logvar, []

    def encode(self, x):
        i = x[:, 0, 0, 0:1]
        self.seen.append(i[:, 0].numpy().astype(int).copy())
        mu = torch.cat([torch.sin(i * (k + 1)) for k in range(self.D)], dim=1)
        if not self.with_logvar:
            return mu
        return mu, torch.full_like(mu, 2 * np.log(0.3))

    def representation(self, x):
        out = self.encode(x)
        return out[0] if isinstance(out, tuple) else out


class Data:
    def __init__(self, grid):
        self.grid, self.name = grid, "fake"

    def images(self, idx):
        x = torch.zeros(len(idx), 1, 64, 64)
        x[:, 0, 0, 0] = torch.as_tensor(np.asarray(idx), dtype=torch.float32)
        return x


GRID = FactorGrid(("a", "b", "c"), (4, 5, 6))


def test_mean_and_sample_come_from_one_pass_and_each_draw_is_fixed_per_image():
    model = GaussianModel()
    codes = sampled.posterior_codes(model, Data(GRID), seed=3, batch_size=16)
    classes = GRID.sample(200, np.random.default_rng(0))
    flat = GRID.index(classes)
    mu, z = codes["mean"].get(classes), codes["sampled"].get(classes)
    np.testing.assert_allclose(mu, np.sin(flat[:, None] * np.arange(1, 4)), atol=1e-6)
    eps = (z - mu) / 0.3
    np.testing.assert_allclose(eps, sampled.index_normals(3, flat, 3), atol=1e-5)
    codes["sampled"].get(GRID.all_classes())
    codes["mean"].get(GRID.all_classes())
    seen = np.concatenate(model.seen[1:])  # after the probe batch
    assert len(seen) == len(np.unique(seen)) and codes["mean"].images_encoded == len(GRID)
    # the draw of an image does not depend on the order it was asked in, nor the batch
    again = sampled.posterior_codes(GaussianModel(), Data(GRID), seed=3, batch_size=7)
    np.testing.assert_array_equal(again["sampled"].get(classes[::-1]), z[::-1])
    other = sampled.posterior_codes(GaussianModel(), Data(GRID), seed=4, batch_size=16)
    assert not np.allclose(other["sampled"].get(classes), z)


def test_index_normals_are_standard_normal():
    e = sampled.index_normals(0, np.arange(20000), 5)
    assert abs(e.mean()) < 0.02 and abs(e.std() - 1) < 0.02
    assert abs(np.corrcoef(e[:, 0], e[:, 1])[0, 1]) < 0.03
    assert abs(np.mean(e > 1.96) - 0.025) < 0.004  # tails, not just the moments


def test_both_scores_each_representation_from_one_encoding():
    model = GaussianModel()
    out = sampled.evaluate_model(model, Data(GRID), representation="both", preset="fast", metrics="mig,sap")
    assert out["settings"]["representation"] == "both"
    assert set(out["sampled"]) >= {"mig", "sap"} and "encoder" not in out["sampled"]
    assert out["encoder"]["images_encoded"] <= len(GRID) + 1  # one pass (plus the probe) for both
    # noise of std 0.3 on codes of range 1 costs MIG: the sampled score is lower
    assert out["sampled"]["mig"]["discrete_mig"] < out["mig"]["discrete_mig"]


def test_sampled_needs_a_gaussian_encoder():
    with pytest.raises(UserError, match="no Gaussian posterior"):
        sampled.evaluate_model(GaussianModel(logvar=False), Data(GRID), representation="sampled", metrics="mig")
    with pytest.raises(UserError, match="unknown representation"):
        sampled.evaluate_model(GaussianModel(), Data(GRID), representation="median")


def test_encode_arrays_both():
    flat = np.arange(0, len(GRID), 3)
    arrays = sampled.encode_arrays(GaussianModel(), Data(GRID), flat, "both", seed=1, progress=False)
    np.testing.assert_array_equal(arrays["factors"], GRID.classes(flat))
    eps = (arrays["codes_sampled"] - arrays["codes"]) / 0.3
    np.testing.assert_allclose(eps, sampled.index_normals(1, flat, 3), atol=1e-4)
