"""`factorvae encode` (a run's codes as an .npz that `factorvae metrics` scores), `factorvae
export` (safetensors + config.json + model card) and `load_exported`, `factorvae.evaluate` on
a run, an export, a model and a codes file; every bad input is one line, exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import factorvae
from factorvae.errors import UserError
from factorvae.export import load_exported
from factorvae.runs import load_run


def train_toy_run(out: Path) -> Path:
    """A 4-step FactorVAE on the toy discs (3,072 grid points, small discriminator) in ``out``."""
    from factorvae.cli import main

    assert main(["train", "--config", str(Path(__file__).parents[1] / "configs" / "toy.yaml"), "--steps", "4",
                 "--out", str(out), "--no-progress", "--set", "model.disc.hidden=32", "--set", "model.disc.layers=2",
                 "--set", "train.log_every=2", "--set", "train.image_every=1000", "--set", "train.device=cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A 4-step FactorVAE on the toy discs (3,072 grid points), scored by `eval` (MIG only)."""
    from factorvae.cli import main

    out = train_toy_run(tmp_path_factory.mktemp("runs") / "toy")
    assert main(["eval", str(out), "--metrics", "mig", "--preset", "fast", "--set", "mig.num_train=500",
                 "--no-progress"]) == 0
    return out


def representation_of(run_dir, classes):
    r = load_run(run_dir)
    with torch.no_grad():
        return r.model.representation(r.dataset.images(r.dataset.grid.index(classes))).numpy()


# -- encode ---------------------------------------------------------------------------------------

def test_encode_sample_holds_the_models_means_of_random_distinct_points(cli, toy_run, tmp_path):
    code, out, err = cli("encode", toy_run, "--out", tmp_path / "a.npz", "--points", "500", "--seed", "3",
                         "--no-progress")
    assert code == 0, err
    assert "encoding 500 of 3,072 grid points" in err and "written" in out
    d = np.load(tmp_path / "a.npz", allow_pickle=False)
    assert d["factors"].shape == (500, 4) and d["codes"].shape == (500, 10)
    assert d["sizes"].tolist() == [3, 4, 16, 16] and d["names"].tolist() == ["brightness", "scale", "posX", "posY"]
    flat = d["factors"] @ np.array([1024, 256, 16, 1])
    assert len(np.unique(flat)) == 500  # without replacement
    np.testing.assert_allclose(d["codes"], representation_of(toy_run, d["factors"]), rtol=1e-5, atol=1e-6)
    # the seed decides the points
    cli("encode", toy_run, "--out", tmp_path / "b.npz", "--points", "500", "--seed", "3", "--no-progress")
    cli("encode", toy_run, "--out", tmp_path / "c.npz", "--points", "500", "--seed", "4", "--no-progress")
    assert np.array_equal(np.load(tmp_path / "b.npz")["factors"], d["factors"])
    assert not np.array_equal(np.load(tmp_path / "c.npz")["factors"], d["factors"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_encoded_sample_scores_with_metrics_and_refuses_factor_vae(cli, toy_run, tmp_path):
    cli("encode", toy_run, "--out", tmp_path / "s.npz", "--points", "1200", "--no-progress")
    code, out, err = cli("metrics", tmp_path / "s.npz", "--preset", "fast", "--set", "dci.n_estimators=3",
                         "--set", "mig.num_train=1000", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert set(r) == {"mig", "dci", "sap", "modularity_explicitness", "settings", "seconds"}
    s = r["settings"]["sample"]
    assert s["points"] == 1200 and s["skipped"] == ["factor_vae", "beta_vae"]
    assert s["short"]["dci"][0]["got"] == [800, 400]  # 2,000 + 1,000 asked: split in proportion
    assert "a sample of 1,200 grid points" in err and "note: skipped factor_vae, beta_vae" in err
    code, out, err = cli("metrics", tmp_path / "s.npz", "--metrics", "mig,factor_vae")
    assert code == 2 and out == "" and "factor_vae fixes one factor" in err and "factorvae.evaluate(model=" in err


def test_encode_default_is_every_grid_point_and_scores_every_metric(cli, toy_run, tmp_path):
    code, out, err = cli("encode", toy_run, "--out", tmp_path / "all.npz", "--no-progress")
    assert code == 0, err and "every grid point" in out
    d = np.load(tmp_path / "all.npz")
    assert len(d["factors"]) == 3072
    code, out, err = cli("metrics", tmp_path / "all.npz", "--metrics", "factor_vae", "--preset", "fast",
                         "--set", "factor_vae.num_train=50", "--set", "factor_vae.num_eval=50", "--json")
    assert code == 0, err
    assert "sample" not in json.loads(out)["settings"] and "codes of every grid point" in err


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/x.txt"], "--out must name an .npz file"),
    (["--out", "{tmp}/x.npz", "--points", "1"], "--points must be >= 2"),
    (["--out", "{tmp}/x.npz", "--seed", "-1"], "--seed must be >= 0"),
    (["--out", "{tmp}/x.npz", "--batch-size", "many"], "--batch-size must be a whole number"),
    (["--out", "{tmp}/file/x.npz"], "is not a writable directory"),
])
def test_encode_bad_options(cli, toy_run, tmp_path, args, message):
    (tmp_path / "file").write_text("a file, not a folder")
    code, out, err = cli("encode", toy_run, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "x.npz").exists()


def test_encode_of_a_missing_run(cli, tmp_path):
    code, out, err = cli("encode", tmp_path / "none", "--out", tmp_path / "x.npz")
    assert code == 2 and "is not a run directory" in err


# -- export ---------------------------------------------------------------------------------------

def test_export_writes_weights_config_card_and_traversal(cli, toy_run, tmp_path):
    from safetensors import safe_open

    code, out, err = cli("export", toy_run, "--out", tmp_path / "hf")
    assert code == 0, err
    hf = tmp_path / "hf"
    assert sorted(p.name for p in hf.iterdir()) == ["README.md", "config.json", "model.safetensors", "traversal.png"]
    with safe_open(hf / "model.safetensors", framework="pt") as f:
        keys = list(f.keys())
        assert f.metadata()["model"] == "factorvae" and f.metadata()["step"] == "4"
    assert keys and all(k.startswith(("encoder.", "decoder.")) for k in keys)  # no discriminator
    full = torch.load(toy_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert any(k.startswith("discriminator.") for k in full)
    assert set(keys) == {k for k in full if k.startswith(("encoder.", "decoder."))}
    cfg = json.loads((hf / "config.json").read_text())
    run_cfg = yaml.safe_load((toy_run / "config.yaml").read_text())
    assert cfg["export"]["step"] == 4 and {k: v for k, v in cfg.items() if k != "export"} == run_cfg
    card = (hf / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "factorvae" and front["datasets"] == ["toy"] and front["metrics"] == ["mig"]
    assert "factorvae" in front["tags"]
    mig = json.loads((toy_run / "eval.json").read_text())["mig"]["discrete_mig"]
    assert f"| mig.discrete_mig | {mig:.4f} |" in card and "| `model.gamma` | `10.0` |" in card
    assert "![traversal" in card
    assert (hf / "traversal.png").read_bytes() == (toy_run / "images" / "traversal_ref0.png").read_bytes()


def test_load_exported_rebuilds_the_model_without_unpickling(cli, toy_run, tmp_path, monkeypatch):
    cli("export", toy_run, "--out", tmp_path / "hf")

    def no_pickle(*a, **k):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_pickle)
    r = load_exported(tmp_path / "hf")
    assert not r.model.training and r.step == 4 and r.config["model"]["name"] == "factorvae"
    monkeypatch.undo()
    x = r.dataset.images(np.arange(0, 3072, 97))
    with torch.no_grad():
        np.testing.assert_array_equal(r.model.representation(x).numpy(), load_run(toy_run).model.representation(x).numpy())
        np.testing.assert_array_equal(r.model.decode_images(torch.zeros(2, 10)).numpy(),
                                      load_run(toy_run).model.decode_images(torch.zeros(2, 10)).numpy())


def test_export_refuses_foreign_folders_and_rewrites_its_own(cli, toy_run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, out, err = cli("export", toy_run, "--out", other)
    assert code == 2 and "is not an export folder" in err and sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    code, out, err = cli("export", toy_run, "--out", toy_run)  # never into the run itself
    assert code == 2 and "is not an export folder" in err
    assert cli("export", toy_run, "--out", tmp_path / "hf")[0] == 0
    assert cli("export", toy_run, "--out", tmp_path / "hf")[0] == 0  # an earlier export: rewritten
    (tmp_path / "empty").mkdir()
    assert cli("export", toy_run, "--out", tmp_path / "empty")[0] == 0


def test_broken_exports_are_user_errors(cli, toy_run, tmp_path):
    cli("export", toy_run, "--out", tmp_path / "hf")
    w = tmp_path / "hf" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    with pytest.raises(UserError, match="unreadable"):
        load_exported(tmp_path / "hf")
    with pytest.raises(UserError, match="not an export folder"):
        load_exported(toy_run)
    code, out, err = cli("export", tmp_path / "nothing", "--out", tmp_path / "x")
    assert code == 2 and "is not a run directory" in err and not (tmp_path / "x").exists()


# -- factorvae.evaluate ---------------------------------------------------------------------------

QUICK = dict(metrics="mig", preset="fast", overrides={"mig": {"num_train": 500}}, seed=5)


def test_evaluate_a_run_an_export_a_model_and_a_codes_file_agree(cli, toy_run, tmp_path):
    from_run = factorvae.evaluate(toy_run, **QUICK)
    cli("export", toy_run, "--out", tmp_path / "hf")
    from_export = factorvae.evaluate(tmp_path / "hf", **QUICK)
    r = load_run(toy_run)
    from_model = factorvae.evaluate(model=r.model, dataset="toy", **QUICK)
    from_function = factorvae.evaluate(model=r.model.representation, dataset=r.dataset, **QUICK)
    cli("encode", toy_run, "--out", tmp_path / "all.npz", "--no-progress")
    from_file = factorvae.evaluate(tmp_path / "all.npz", **QUICK)
    d = np.load(tmp_path / "all.npz")
    from_arrays = factorvae.evaluate(codes=d["codes"], factors=d["factors"], sizes=d["sizes"], **QUICK)
    mig = from_run["mig"]["discrete_mig"]
    for other in (from_export, from_model, from_function, from_file, from_arrays):
        assert other["mig"]["discrete_mig"] == pytest.approx(mig, abs=1e-9)
    # a run directory's scores are written to its eval.json, as `factorvae eval` writes them
    assert from_run["settings"]["seed"] == 5 and json.loads((toy_run / "eval.json").read_text()) == from_run


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give exactly one of"),
    ({"source": "x", "codes": np.zeros((3, 2))}, "got source, codes"),
    ({"codes": np.zeros((3, 2))}, "needs factors="),
    ({"model": lambda x: x}, "needs dataset="),
    ({"source": 3}, "cannot score a int"),
])
def test_evaluate_bad_calls(kwargs, message):
    source = kwargs.pop("source", None)
    with pytest.raises(UserError, match=message):
        factorvae.evaluate(source, **kwargs)


def test_help_of_evaluate_is_enough():
    doc = factorvae.evaluate.__doc__
    for needed in ("run directory", "model=", "codes=", "factors=", "sizes=", "preset", "seed", "FactorVAE"):
        assert needed in doc


def test_eval_says_what_it_will_do_before_it_starts(cli, toy_run):
    code, out, err = cli("eval", toy_run, "--metrics", "mig", "--preset", "fast", "--set", "mig.num_train=500")
    assert code == 0, err
    plan = [line for line in err.splitlines() if "preset fast: mig; ~" in line]
    assert len(plan) == 1 and plan[0].startswith(f"{toy_run} (step 4): ")  # said once, with the run
    first = plan[0].split(": ", 1)[1]
    assert "of 3,072 grid images to encode" in first
    # 500 uniform draws from 3,072 points: ~460 distinct, what the cache then encodes
    encoded = json.loads((toy_run / "eval.json").read_text())["encoder"]["distinct_points"]
    assert int(first.split("~")[1].split(" ")[0].replace(",", "")) == pytest.approx(encoded, rel=0.05)


def test_model_card_says_n_a_for_an_unscorable_metric():
    from factorvae.export import model_card

    config = {"model": {"name": "factorvae"}, "data": {"name": "toy"}, "optim": {}, "train": {},
              "export": {"step": 4, "networks": ["encoder", "decoder"]}}
    scores = {"factor_vae": {"eval_accuracy": None, "unscorable": "no active dimensions"},
              "mig": {"discrete_mig": 0.25}, "settings": {"preset": "fast", "seed": 0}}
    card = model_card(config, scores, False)
    assert "| factor_vae.eval_accuracy | n/a (no active dimensions) |" in card
    assert "| mig.discrete_mig | 0.2500 |" in card and "None" not in card
