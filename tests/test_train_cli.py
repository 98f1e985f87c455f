"""End to end: `factorvae train` / `traverse` on procedural dSprites, run directory contents,
resume equivalence, and every bad-input path (one message, exit 2, no traceback, nothing
overwritten)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

SMALL = ["--set", "model.disc.hidden=64", "--set", "model.disc.layers=2"]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, dsprites_data):
    """A 150-step FactorVAE run, shared by the tests that only read it."""
    from factorvae.cli import main

    out = tmp_path_factory.mktemp("runs") / "fvae"
    code = main(["train", "--model", "factorvae", "--steps", "150", "--seed", "1", "--out", str(out), "--no-progress",
                 "--set", "train.log_every=25", "--set", "train.ckpt_every=50", "--set", "model.disc.hidden=128"])
    assert code == 0
    return out


def test_run_directory_is_complete(short_run):
    cfg = yaml.safe_load((short_run / "config.yaml").read_text())
    assert cfg["model"]["name"] == "factorvae" and cfg["model"]["gamma"] == 40.0
    assert cfg["train"]["steps"] == 150 and cfg["train"]["seed"] == 1
    assert cfg["optim"]["disc"]["betas"] == [0.5, 0.9] and cfg["model"]["arch"]["fc"] == 128
    recs = read_jsonl(short_run / "metrics.jsonl")
    assert [r["step"] for r in recs] == [25, 50, 75, 100, 125, 150]
    for key in ("recon", "kl", "loss", "tc", "d_loss", "d_acc", "d_z", "d_z_perm"):
        assert key in recs[-1]
    assert any(p.name.startswith("events.out.tfevents") for p in (short_run / "tb").iterdir())
    state = torch.load(short_run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 150 and set(state["optim"]) == {"vae", "disc"} and set(state["rng"]) == {"model", "data"}
    images = short_run / "images"
    for name in ("reconstructions.png", "samples.png", "traversal.gif", "traversal_ref0.png", "kl_per_dim.json"):
        assert (images / name).stat().st_size > 0
    summary = json.loads((short_run / "summary.json").read_text())
    assert len(summary["kl_per_dim"]) == 10 and summary["steps"] == 150


def test_reconstruction_loss_falls(short_run):
    recs = read_jsonl(short_run / "metrics.jsonl")
    assert recs[-1]["recon"] < 0.6 * recs[0]["recon"]


def test_traversal_image_has_one_row_per_latent(short_run, tmp_path, cli):
    from PIL import Image

    code, out, err = cli("traverse", short_run, "--out", tmp_path, "--steps", "7")
    assert code == 0, err
    img = Image.open(tmp_path / "traversal_ref0.png")
    # 10 rows of 64 px + padding 2; the input image and 7 columns + a 44-px label strip
    assert img.size == (44 + (1 + 7) * 66 + 2, 10 * 66 + 2)
    gif = Image.open(tmp_path / "traversal.gif")
    assert gif.n_frames == 7 + 5


def test_resume_ends_with_identical_weights(tmp_path, cli, dsprites_data):
    args = ["train", "--model", "factorvae", "--seed", "4", "--no-progress", *SMALL,
            "--set", "train.ckpt_every=10", "--set", "train.log_every=10", "--set", "train.image_every=1000"]
    assert cli(*args, "--steps", "30", "--out", tmp_path / "full")[0] == 0
    assert cli(*args, "--steps", "20", "--out", tmp_path / "part")[0] == 0
    code, _, err = cli("train", "--out", tmp_path / "part", "--resume", "--steps", "30", "--no-progress")
    assert code == 0, err
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 30
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["rng"]:
        assert torch.equal(a["rng"][k], b["rng"][k])
    steps = [r["step"] for r in read_jsonl(tmp_path / "part" / "metrics.jsonl")]
    assert steps == [10, 20, 30]  # no duplicated records after the resume


def test_same_seed_same_weights_other_seed_differs(tmp_path, cli, dsprites_data):
    base = ["train", "--model", "betavae", "--steps", "5", "--no-progress"]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert cli(*base, "--seed", seed, "--out", tmp_path / name)[0] == 0
    w = {n: torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True)["model"] for n in "abc"}
    assert all(torch.equal(w["a"][k], w["b"][k]) for k in w["a"])
    assert not all(torch.equal(w["a"][k], w["c"][k]) for k in w["a"])


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "gan"], "unknown model 'gan'"),
        (["--dataset", "mnist"], "unknown data set 'mnist'"),
        (["--set", "model.gamma=-3"], "model.gamma must be >= 0"),
        (["--set", "model.gamma=abc"], "model.gamma must be a number"),
        (["--model", "betavae", "--set", "model.beta=-1"], "model.beta must be >= 0"),
        (["--steps", "-5"], "train.steps must be >= 0"),
        (["--steps", "ten"], "--steps must be a whole number"),
        (["--set", "train.batch_size=1"], "train.batch_size must be >= 2"),
        (["--set", "optim.vae.lr=0"], "optim.vae.lr must be > 0"),
        (["--set", "train.nonsense=1"], "unknown train option"),
        (["--set", "train.eval_metrics=mig,nope"], "train.eval_metrics: unknown metric 'nope'"),
        (["--set", "train.eval_preset=huge"], "train.eval_preset: unknown preset 'huge'"),
        (["--set", "gamma"], "--set expects key.path=value"),
        (["--config", "/nonexistent/cfg.yaml"], "config file not found"),
        (["--data-path", "/nonexistent/dsprites.npz"], "dSprites file not found"),
        (["--device", "cuda:0"], "CUDA is not available"),
    ],
)
def test_bad_options_give_one_clear_message(argv, message, tmp_path, cli):
    if "--device" in argv and torch.cuda.is_available():
        pytest.skip("CUDA present")
    code, out, err = cli("train", *argv, "--steps" if "--steps" not in argv else "--seed",
                         "1" if "--steps" not in argv else "0", "--out", tmp_path / "r", "--no-progress")
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_truncated_and_wrong_data_files(tmp_path, cli):
    import numpy as np

    bad = tmp_path / "dsprites.npz"
    np.savez(bad, imgs=np.zeros((10, 64, 64), np.uint8))
    code, _, err = cli("train", "--data-path", bad, "--steps", "1", "--out", tmp_path / "r1", "--no-progress")
    assert code == 2 and "missing key 'latents_classes'" in err
    bad.write_bytes(bad.read_bytes()[:100])
    code, _, err = cli("train", "--data-path", bad, "--steps", "1", "--out", tmp_path / "r2", "--no-progress")
    assert code == 2 and "not a readable .npz" in err and "Traceback" not in err


def test_existing_run_is_never_overwritten(short_run, cli):
    before = (short_run / "checkpoints" / "last.pt").read_bytes()
    cfg_before = (short_run / "config.yaml").read_text()
    code, _, err = cli("train", "--model", "betavae", "--steps", "1", "--out", short_run, "--no-progress")
    assert code == 2 and "already holds a run of a different model ('factorvae')" in err
    code, _, err = cli("train", "--model", "factorvae", "--steps", "1", "--out", short_run, "--no-progress")
    assert code == 2 and "use --resume" in err
    code, _, err = cli("train", "--model", "betavae", "--out", short_run, "--resume", "--no-progress")
    assert code == 2 and "holds a 'factorvae' run" in err
    assert (short_run / "checkpoints" / "last.pt").read_bytes() == before
    assert (short_run / "config.yaml").read_text() == cfg_before


def test_unreadable_checkpoint(tmp_path, cli, dsprites_data):
    out = tmp_path / "r"
    assert cli("train", "--model", "vae", "--steps", "2", "--out", out, "--no-progress")[0] == 0
    ckpt = out / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    damaged = ckpt.read_bytes()
    for argv in (("train", "--out", out, "--resume", "--steps", "4", "--no-progress"), ("traverse", out)):
        code, _, err = cli(*argv)
        assert code == 2 and "unreadable checkpoint" in err and "Traceback" not in err
    assert ckpt.read_bytes() == damaged


def test_resume_without_a_run(tmp_path, cli):
    code, _, err = cli("train", "--out", tmp_path / "nothing", "--resume")
    assert code == 2 and "holds no run" in err


def test_shipped_configs_resolve():
    from factorvae.config import read_yaml, resolve

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert {"factorvae.yaml", "betavae.yaml", "vae.yaml"} <= {f.name for f in files}
    for f in files:
        cfg = resolve(read_yaml(f))
        assert cfg["train"]["batch_size"] >= 2, f
    fv = resolve(read_yaml(root / "factorvae.yaml"))
    assert (fv["model"]["gamma"], fv["train"]["steps"], fv["train"]["batch_size"]) == (40.0, 300_000, 64)
    assert fv["optim"]["vae"] == {"lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8}
    assert fv["optim"]["disc"]["betas"] == [0.5, 0.9]
    assert resolve(read_yaml(root / "betavae.yaml"))["model"]["beta"] == 4.0
