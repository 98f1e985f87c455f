"""`factorvae data list | show | generate`, the registry, and the configs of the paper's runs on
3D Shapes and the data sets without factors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factorvae.data import DATASETS, get_dataset_info

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_registry_entries():
    for name in ("dsprites", "shapes3d", "color_dsprites", "noisy_dsprites", "toy", "folder", "celeba", "chairs",
                 "faces3d"):
        info = get_dataset_info(name)
        assert info.name == name
        assert (info.grid is None) == info.needs_path
        if info.grid is not None:
            one = info.render(info.grid.sample(2, np.random.default_rng(0)))
            assert one.shape == (2, info.channels, 64, 64) and one.dtype == np.uint8 and one.max() > 1
    assert len(get_dataset_info("shapes3d").grid) == 480_000


def test_data_list(cli):
    code, out, err = cli("data", "list")
    assert code == 0, err
    for name in DATASETS:
        assert f"\n{name} " in "\n" + out
    assert "480,000 images" in out and "floor_hue (10)" in out and "orientation (15)" in out
    assert "3,072 images" in out and "none (no ground truth" in out and "cache:" in out


@pytest.mark.parametrize("name,rows", [("shapes3d", 2 + 6), ("dsprites", 2 + 5), ("toy", 2 + 4),
                                       ("noisy_dsprites", 2 + 5)])
def test_data_show_draws_samples_then_one_row_per_factor(name, rows, tmp_path, cli):
    out = tmp_path / f"{name}.png"
    code, stdout, err = cli("data", "show", name, "--out", out, "--seed", "3")
    assert code == 0, err
    img = Image.open(out)
    assert img.mode == "RGB" and img.size[1] == rows * 66 + 2
    a = np.asarray(img)
    assert a.std() > 10  # not blank


def test_data_show_and_generate_errors(tmp_path, cli):
    code, _, err = cli("data", "show", "mnist", "--out", tmp_path / "x.png")
    assert code == 2 and "unknown data set 'mnist'" in err
    code, _, err = cli("data", "show", "toy", "--out", tmp_path / "x.jpg")
    assert code == 2 and "must name a .png" in err
    code, _, err = cli("data", "show", "folder", "--out", tmp_path / "x.png")
    assert code == 2 and "needs --data-path" in err
    code, _, err = cli("data", "generate", "celeba")
    assert code == 2 and "needs --data-path" in err
    code, _, err = cli("data", "generate", "toy", "--channels", "1")
    assert code == 2 and "image folders only" in err
    code, out, _ = cli("data", "generate", "toy")
    assert code == 0 and "nothing to build" in out


def load_config(name):
    from factorvae.config import read_yaml, resolve

    return resolve(read_yaml(CONFIGS / name))


@pytest.mark.parametrize("name,model,key,value,disc_lr,data", [
    ("shapes3d_factorvae.yaml", "factorvae", "gamma", 36.0, 1e-5, "shapes3d"),
    ("shapes3d_betavae.yaml", "betavae", "beta", 24.0, None, "shapes3d"),
    ("celeba.yaml", "factorvae", "gamma", 6.4, 1e-5, "celeba"),
    ("chairs.yaml", "factorvae", "gamma", 3.2, 1e-5, "chairs"),
    ("faces3d.yaml", "factorvae", "gamma", 6.4, 1e-4, "faces3d"),
    ("toy.yaml", "factorvae", "gamma", 10.0, 1e-4, "toy"),
])
def test_configs_of_the_paper_runs(name, model, key, value, disc_lr, data):
    cfg = load_config(name)
    assert cfg["model"]["name"] == model and cfg["model"][key] == value and cfg["data"]["name"] == data
    if name != "toy.yaml":
        assert cfg["model"]["arch"]["fc"] == 256 and cfg["train"]["steps"] == 1_000_000
        assert cfg["model"]["z_dim"] == 10 and cfg["train"]["batch_size"] == 64
    if disc_lr is not None:
        assert cfg["optim"]["disc"]["lr"] == disc_lr and cfg["optim"]["disc"]["betas"] == [0.5, 0.9]
    assert cfg["optim"]["vae"]["lr"] == 1e-4


def test_shapes3d_config_trains_rgb_fc256():
    """The 3-channel, FC-256 networks with the Bernoulli likelihood on [0, 1] RGB, on 3D Shapes
    images, built from the paper config."""
    import torch

    from factorvae.data import shapes3d
    from factorvae.runs import build_model

    cfg = load_config("shapes3d_factorvae.yaml")
    cfg["model"]["disc"].update(hidden=64, layers=2)
    model, _ = build_model(cfg, 3, torch.device("cpu"))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert convs[0].in_channels == 3 and any(m.out_features == 256 for m in fcs)
    rows = shapes3d.GRID.sample(32, np.random.default_rng(0))
    rows[:, 3:] = rows[:8, 3:][np.arange(32) % 8]  # 8 views: little ray casting
    x = torch.from_numpy(shapes3d.render(rows)).float() / 255
    logs = [model.train_step(x[:16], x[16:], step) for step in range(2)]
    recon = [float(r["recon"]) for r in logs]
    assert all(np.isfinite(recon)) and 0 < recon[0] < 64 * 64 * 3  # nats per image, Bernoulli on RGB
    assert model.decode(torch.zeros(2, 10)).shape == (2, 3, 64, 64)
