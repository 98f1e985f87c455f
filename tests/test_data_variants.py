"""Colour- and noisy-dSprites: the nuisance is a fixed function of the grid index (same on numpy
and torch), looks like disentanglement_lib's, and leaves dSprites' FactorGrid the one metrics
use; the data set trains through the usual trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factorvae.data import dsprites, variants
from factorvae.data import load_dataset


@pytest.fixture(scope="module")
def rows():
    return variants.GRID.sample(64, np.random.default_rng(0))


def test_colour_is_one_colour_per_image_in_the_upper_half(rows):
    img = variants.render(rows, "color").astype(int)  # (N, 3, 64, 64)
    sprite = dsprites.render(rows).astype(bool)
    assert img.shape == (64, 3, 64, 64)
    for i in range(len(rows)):
        on = img[i][:, sprite[i]]  # (3, pixels)
        assert (img[i][:, ~sprite[i]] == 0).all()  # black background
        assert (on == on[:, :1]).all()  # one colour over the whole sprite
        assert (on >= 128).all() and (on <= 255).all()  # each channel in [0.5, 1] as in dlib
    colours = img.max(axis=(2, 3))
    assert len({tuple(c) for c in colours}) == len(rows)  # colours differ between images
    assert colours.std(axis=0).min() > 20  # and spread over the range


def test_noise_fills_the_background_and_the_sprite_is_white(rows):
    img = variants.render(rows, "noisy")
    sprite = dsprites.render(rows).astype(bool)
    for i in range(len(rows)):
        assert (img[i][:, sprite[i]] == 255).all()
    bg = img.transpose(1, 0, 2, 3)[:, ~sprite]
    assert abs(bg.mean() - 127.5) < 2 and abs(bg.std() - 73.9) < 2  # uniform bytes: std 255/sqrt(12)
    hist = np.bincount(bg.ravel(), minlength=256)
    assert hist.min() > 0.8 * hist.mean()  # every level about equally often
    # independent per pixel and channel: neighbours and channels uncorrelated
    x = img.astype(float)
    both = ~sprite[:, :, :-1] & ~sprite[:, :, 1:]  # horizontal neighbours, both background
    assert abs(np.corrcoef(x[:, 0, :, :-1][both], x[:, 0, :, 1:][both])[0, 1]) < 0.02
    assert abs(np.corrcoef(x[:, 0][~sprite], x[:, 1][~sprite])[0, 1]) < 0.02


@pytest.mark.parametrize("kind", variants.KINDS)
def test_fixed_per_index_same_on_numpy_and_torch(rows, kind):
    a = variants.render(rows, kind)
    assert np.array_equal(a, variants.render(rows, kind))  # reproducible
    sprites = torch.from_numpy(dsprites.render(rows)[:, None])
    b = variants.compose(sprites, torch.from_numpy(variants.GRID.index(rows)), kind)
    assert b.dtype == torch.uint8 and np.array_equal(a, b.numpy())
    other = variants.render(rows, kind, seed=1)
    assert not np.array_equal(a, other)  # the seed picks another nuisance
    with pytest.raises(ValueError):
        variants.compose(sprites.numpy(), variants.GRID.index(rows), "scream")


def test_nuisance_is_pinned():
    """A change to the hash would silently change every data set built on it."""
    assert variants.nuisance_bytes(np.array([0, 1, 737279]), np.array([0, 5, 12287])).tolist() == [23, 60, 226]
    assert variants.nuisance_bytes(torch.tensor([0, 1, 737279]), torch.tensor([0, 5, 12287])).tolist() == [23, 60, 226]
    row = np.array([[0, 0, 5, 0, 16, 16]])
    assert variants.render(row, "color")[0, :, 32, 32].tolist() == [220, 165, 228]
    assert variants.render(row, "noisy")[0, :, 0, 0].tolist() == [51, 48, 82]


@pytest.mark.parametrize("name,kind", [("color_dsprites", "color"), ("noisy_dsprites", "noisy")])
def test_loaded_data_set(dsprites_data, name, kind):
    data = load_dataset(name, progress=False)
    assert data.grid is dsprites.GRID and data.channels == 3 and len(data) == 737_280
    assert data.info["metric_factors"] == list(dsprites.METRIC_FACTORS)
    idx = np.random.default_rng(1).choice(len(data), 50, replace=False)
    x = data.images(idx)
    assert x.shape == (50, 3, 64, 64) and x.dtype == torch.float32
    assert np.array_equal((x * 255).round().byte().numpy(), variants.render(dsprites.GRID.classes(idx), kind))
    g = torch.Generator().manual_seed(0)
    b = data.sample_batch(16, g)
    assert b.shape == (16, 3, 64, 64) and 0 <= float(b.min()) and float(b.max()) <= 1
    assert data.data.shape[1] == 1  # nothing beyond dSprites' binary sprites is stored


def test_trains_and_writes_images(tmp_path, cli, dsprites_data):
    out = tmp_path / "run"
    code, _, err = cli("train", "--dataset", "color_dsprites", "--model", "betavae", "--steps", "3", "--out", out,
                       "--no-progress", "--set", "train.log_every=1", "--set", "model.z_dim=4")
    assert code == 0, err
    from PIL import Image

    assert Image.open(out / "images" / "reconstructions.png").mode == "RGB"
