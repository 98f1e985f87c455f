"""Pretrained models: the registry (index.json + export folders), `factorvae pretrained`,
pretrained names wherever a run directory goes (load_run, eval, traverse), the sha256 check.
A temporary registry built from a tiny export stands in for shipped models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import factorvae
from factorvae import pretrained
from factorvae.errors import UserError

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory):
    from factorvae.cli import main
    from factorvae.export import export_run

    run = tmp_path_factory.mktemp("runs") / "toy"
    assert main(["train", "--config", str(ROOT / "configs" / "toy.yaml"), "--steps", "3", "--threads", "1",
                 "--out", str(run), "--no-progress", "--set", "model.disc.hidden=32", "--set", "model.disc.layers=2",
                 "--set", "train.image_every=1000", "--set", "train.device=cpu"]) == 0
    out = tmp_path_factory.mktemp("exports") / "toy"
    export_run(run, out)
    return out


@pytest.fixture
def registry(tmp_path, monkeypatch, toy_export):
    monkeypatch.setattr(pretrained, "REGISTRY", tmp_path / "registry")
    (tmp_path / "registry").mkdir()
    pretrained.register(toy_export, "toy-fvae", scores={"factor_vae.eval_accuracy": 0.5}, description="a test model")
    return tmp_path / "registry"


def test_the_shipped_registry_lists_only_real_checked_models():
    # honest by construction: every entry's folder exists and its weights match the recorded sha256
    models = pretrained.index()
    for name, entry in models.items():
        folder = pretrained.REGISTRY / entry["folder"]
        assert (folder / "config.json").is_file() and (folder / "README.md").is_file(), name
        assert pretrained.sha256(folder / "model.safetensors") == entry["sha256"], name
        assert entry["sha256"] in (folder / "README.md").read_text(), name


def test_pretrained_says_when_none_are_shipped(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "REGISTRY", tmp_path)
    (tmp_path / "index.json").write_text('{"format": 1, "models": {}}')
    code, out, err = cli("pretrained")
    assert code == 0 and "No pretrained models are shipped yet" in out


def test_pretrained_lists_models_with_scores(cli, registry):
    code, out, err = cli("pretrained")
    assert code == 0, err
    assert "toy-fvae: factorvae on toy, 3 steps; factor_vae.eval_accuracy 0.500" in out
    code, out, err = cli("pretrained", "--json")
    assert json.loads(out)["toy-fvae"]["sha256"] == pretrained.sha256(registry / "toy-fvae" / "model.safetensors")
    assert "sha256" in (registry / "toy-fvae" / "README.md").read_text()


def test_a_pretrained_name_loads_like_a_run(cli, registry, toy_export, tmp_path):
    a, b = factorvae.load_run("toy-fvae"), factorvae.load_run(toy_export)
    assert a.dir == registry / "toy-fvae" and a.config["model"]["name"] == "factorvae" and a.step == 3
    x = b.dataset.images([1, 2])
    with torch.no_grad():
        assert torch.equal(a.model.representation(x), b.model.representation(x))
    code, out, err = cli("eval", "toy-fvae", "--preset", "fast", "--dry-run")
    assert code == 0 and "toy-fvae (step 3)" in err
    code, out, err = cli("traverse", "toy-fvae", "--out", tmp_path / "tr", "--references", "1")
    assert code == 0, err
    assert list((tmp_path / "tr").glob("traversal_ref*.png"))


def test_damaged_weights_fail_the_checksum(cli, registry):
    weights = registry / "toy-fvae" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # one flipped byte in a tensor
    weights.write_bytes(bytes(blob))
    with pytest.raises(UserError, match="sha256"):
        factorvae.load_run("toy-fvae")
    code, out, err = cli("eval", "toy-fvae", "--dry-run")
    assert code == 2 and "damaged or not the shipped one" in err and "Traceback" not in err


def test_an_unknown_name_is_a_missing_run(cli, registry):
    code, out, err = cli("eval", "no-such-model", "--dry-run")
    assert code == 2 and "not a run directory" in err


def test_a_broken_index_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "REGISTRY", tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    code, out, err = cli("pretrained")
    assert code == 2 and "index.json: unreadable" in err
