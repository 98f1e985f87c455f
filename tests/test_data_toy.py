"""The toy grid: size and order, each factor doing what its name says, and a short training run
through the CLI (the data set exists to make such runs quick)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from factorvae.data import load_dataset, toy
from factorvae.errors import UserError

BASE = np.array([1, 1, 5, 9])


def img(**changes):
    row = BASE.copy()
    for name, v in changes.items():
        row[toy.GRID.factor_index(name)] = v
    return toy.render(row[None])[0, 0].astype(float)


def centroid(x):
    r, c = np.indices(x.shape)
    return (r * x).sum() / x.sum(), (c * x).sum() / x.sum()


def test_grid_and_order():
    g = toy.GRID
    assert g.names == ("brightness", "scale", "posX", "posY") and len(g) == 3072
    data = load_dataset("toy", progress=False)
    assert data.data.shape == (3072, 1, 64, 64) and data.grid is g and data.channels == 1
    idx = np.random.default_rng(0).choice(3072, 100, replace=False)
    assert np.array_equal(data.data[idx].numpy(), toy.render(g.classes(idx)))


def test_factors_do_what_their_names_say():
    step = toy.GRID.values[2][1] - toy.GRID.values[2][0]
    for k in (1, 4):
        (r0, c0), (r1, c1) = centroid(img(posX=5)), centroid(img(posX=5 + k))
        assert c1 - c0 == pytest.approx(k * step, abs=0.05) and r1 == pytest.approx(r0, abs=0.05)
        (r0, c0), (r1, c1) = centroid(img(posY=9)), centroid(img(posY=9 + k))
        assert r1 - r0 == pytest.approx(k * step, abs=0.05) and c1 == pytest.approx(c0, abs=0.05)
    area = [(img(scale=s) > 0).sum() for s in range(4)]
    assert np.all(np.diff(area) > 0)
    peak = [img(brightness=b).max() for b in range(3)]
    assert peak == [np.floor(255 * v + 0.5) for v in toy.GRID.values[0]]
    masks = [img(brightness=b) > 0 for b in range(3)]
    assert np.array_equal(masks[0], masks[2])  # brightness leaves the shape alone


def test_no_data_path():
    with pytest.raises(UserError, match="procedural only"):
        load_dataset("toy", path="/tmp/x")


def test_short_training_run_on_the_toy_grid(tmp_path, cli):
    out = tmp_path / "toy"
    config = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"
    code, stdout, err = cli("train", "--config", config, "--steps", "4", "--out", out, "--no-progress",
                            "--set", "train.log_every=2", "--set", "model.disc.hidden=64")
    assert code == 0, err
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["name"] == "toy" and cfg["model"]["arch"]["fc"] == 64
    assert (out / "images" / "traversal_ref0.png").exists() and (out / "images" / "samples.png").exists()
    code, stdout, err = cli("eval", out, "--metrics", "factor_vae,mig", "--preset", "fast", "--no-progress")
    assert code == 0, err
    assert "factor_vae.eval_accuracy" in stdout and "distinct grid points" in stdout
