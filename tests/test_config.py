"""config.resolve: every section refuses unknown keys (naming the closest valid one), and each
data set gets the paper's networks and optimiser settings unless the config says otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from factorvae.config import DEFAULTS, parse_set, resolve
from factorvae.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("sets, message", [
    (["optim.vae.lrr=0.1"], "unknown optim.vae option(s): lrr (did you mean lr?)"),
    (["optim.vea.lr=0.1"], "unknown optim section(s): vea (did you mean vae?)"),
    (["optim.disc.beta=[0.5, 0.9]"], "unknown optim.disc option(s): beta (did you mean betas?)"),
    (["model.name=infowgan_gp", "optim.critc.lr=0.1"], "unknown optim section(s): critc (did you mean critic?)"),
    (["data.nmae=toy"], "unknown data option(s): nmae (did you mean name?)"),
    (["train.stepz=3"], "unknown train option(s): stepz (did you mean steps?)"),
    (["trian.steps=3"], "unknown config section(s): trian (did you mean train?)"),
    (["optim.vae=0.1"], "optim.vae section"),
    (["model.name=betavae", "optim.disc=0.1"], "optim.disc must be a mapping"),
])
def test_unknown_keys_are_refused_in_every_section(sets, message):
    with pytest.raises(UserError) as e:
        resolve(parse_set(sets))
    assert message in str(e.value)


def test_known_optimiser_keys_still_apply():
    cfg = resolve(parse_set(["optim.vae.lr=0.001", "optim.disc.betas=[0.4, 0.8]", "optim.vae.eps=1e-6"]))
    assert cfg["optim"]["vae"] == {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-6}
    assert cfg["optim"]["disc"]["betas"] == [0.4, 0.8]
    gan = resolve(parse_set(["model.name=infowgan_gp", "optim.critic.lr=1e-5"]))
    assert gan["optim"]["critic"]["lr"] == 1e-5
    # a partial section keeps the method's other defaults (InfoWGAN-GP: Adam betas 0.5, 0.9)
    gan = resolve(parse_set(["model.name=infowgan_gp", "optim.gen.lr=1e-3"]))
    assert gan["optim"]["gen"] == {**gan["optim"]["critic"], "lr": 1e-3} and gan["optim"]["gen"]["betas"] == [0.5, 0.9]
    # one optimiser layer may serve several methods: a section another method reads is accepted
    assert resolve(parse_set(["optim.gen.lr=0.1"]))["model"]["name"] == "factorvae"


@pytest.mark.parametrize("dataset, fc, disc_lr", [
    ("dsprites", 128, 1e-4), ("toy", 128, 1e-4),
    ("shapes3d", 256, 1e-5), ("celeba", 256, 1e-5), ("chairs", 256, 1e-5), ("faces3d", 256, 1e-4),
])
def test_each_data_set_gets_the_papers_networks_and_optimisers(dataset, fc, disc_lr):
    """Appendix A, Table 2: FC 256 beyond 2D Shapes; discriminator lr 1e-5 for 3D Shapes, CelebA, Chairs."""
    cfg = resolve({"data": {"name": dataset}})
    assert cfg["model"]["arch"]["fc"] == fc
    assert cfg["optim"]["disc"]["lr"] == disc_lr
    assert cfg["optim"]["vae"] == DEFAULTS["optim"]["vae"]


def test_data_set_defaults_agree_with_the_shipped_configs():
    for name, path in [("shapes3d", "shapes3d_factorvae.yaml"), ("celeba", "celeba.yaml"), ("chairs", "chairs.yaml"),
                       ("faces3d", "faces3d.yaml")]:
        shipped = yaml.safe_load((CONFIGS / path).read_text())
        cfg = resolve({"data": {"name": name}})
        assert cfg["model"]["arch"] == shipped["model"]["arch"], name
        assert cfg["optim"] == {**cfg["optim"], **shipped["optim"]}, name


def test_explicit_values_win_over_the_data_set_defaults():
    cfg = resolve({"data": {"name": "shapes3d"}}, parse_set(["model.arch.fc=64", "optim.disc.lr=0.001"]))
    assert cfg["model"]["arch"]["fc"] == 64 and cfg["optim"]["disc"]["lr"] == 0.001
    # a saved config resolves to itself (resume, sweeps)
    assert resolve(cfg) == cfg
    # the data set may come in a later layer than the model options
    cfg = resolve({"model": {"arch": {"fc": 32}}}, {"data": {"name": "celeba"}})
    assert cfg["model"]["arch"]["fc"] == 32 and cfg["optim"]["disc"]["lr"] == 1e-5


def test_train_flags_dataset_without_config_uses_the_data_sets_defaults():
    """`factorvae train --dataset shapes3d` (no --config) builds the Table 2 network."""
    from factorvae.cli import build_parser
    from factorvae.commands.train import build_config

    args = build_parser().parse_args(["train", "--dataset", "shapes3d", "--out", "unused"])
    cfg = build_config(args)
    assert cfg["model"]["arch"]["fc"] == 256 and cfg["optim"]["disc"]["lr"] == 1e-5
    args = build_parser().parse_args(["train", "--dataset", "shapes3d", "--out", "unused", "--set", "model.arch.fc=128"])
    assert build_config(args)["model"]["arch"]["fc"] == 128


@pytest.mark.parametrize("sets, message", [
    (["model.gama=10"], "unknown factorvae model option(s): gama (did you mean gamma?)"),
    (["model.gamma=-1"], "model.gamma must be >= 0"),
    (["model.disc.hiden=3"], "unknown model.disc option(s): hiden (did you mean hidden?)"),
    (["model.name=infowgan_gp", "model.n_critic=0"], "model.n_critic must be >= 1"),
    (["model.name=betatcvae", "model.estimator=exact"], "model.estimator must be one of"),
    (["optim.disc.lr=0"], "optim.disc.lr must be > 0"),
    (["model.name=infowgan_gp", "optim.gen.betas=[0.5, 1.5]"], "optim.gen.betas must lie in [0, 1)"),
])
def test_validation_builds_no_model(monkeypatch, sets, message):
    """config.resolve checks every model and optimiser value through the methods' option
    checks, without constructing a network (not even on the meta device)."""
    from torch import nn

    def no_modules(self, *args, **kwargs):
        raise AssertionError("config validation built an nn.Module")

    monkeypatch.setattr(nn.Module, "__init__", no_modules)
    resolve(parse_set([s for s in sets if s.startswith("model.name")]))  # a good config passes
    with pytest.raises(UserError) as e:
        resolve(parse_set(sets))
    assert message in str(e.value)


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("true", True), ("false", False)])
def test_eval_async_is_auto_true_or_false(value, expected):
    assert DEFAULTS["train"]["eval_async"] == "auto"
    assert resolve(parse_set([f"train.eval_async={value}"]))["train"]["eval_async"] == expected


@pytest.mark.parametrize("value", ["sometimes", "1", "[true]"])
def test_a_bad_eval_async_is_one_clear_message(value):
    with pytest.raises(UserError) as e:
        resolve(parse_set([f"train.eval_async={value}"]))
    assert str(e.value).startswith("train.eval_async must be auto, true or false, got ")
    assert "\n" not in str(e.value)
