"""`factorvae eval` says things once and truly (issue 24): one plan line, both active-dimension
counts side by side with their definitions, and a run without a checkpoint is "nothing to load"."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIG = Path(__file__).parents[1] / "configs" / "toy.yaml"
SMALL = ["--metrics", "factor_vae", "--preset", "fast", "--set", "factor_vae.num_train=50",
         "--set", "factor_vae.num_eval=50", "--set", "factor_vae.num_variance_estimate=500"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from factorvae.cli import main

    out = tmp_path_factory.mktemp("runs") / "toy"
    assert main(["train", "--config", str(CONFIG), "--steps", "4", "--out", str(out), "--no-progress",
                 "--set", "model.disc.hidden=32", "--set", "model.disc.layers=2", "--set", "train.log_every=2",
                 "--set", "train.image_every=1000", "--set", "train.device=cpu"]) == 0
    return out


def test_eval_prints_its_plan_once_and_both_active_dim_counts(toy_run, cli):
    import json

    code, out, err = cli("eval", toy_run, *SMALL)
    assert code == 0, err
    assert sum("preset fast: factor_vae" in ln for ln in err.splitlines()) == 1
    summary = json.loads((toy_run / "summary.json").read_text())
    fv = json.loads((toy_run / "eval.json").read_text())["factor_vae"]
    line = next(ln for ln in out.splitlines() if ln.startswith("active dims:"))
    assert f"active dims: {fv['num_active_dims']} for the FactorVAE metric (std of the encoder means" in line
    assert f"; {len(summary['active_dims_kl'])} of {len(summary['kl_per_dim'])} by KL" in line
    assert ">= 0.05" in line and "> 0.1 nats" in line


def test_eval_of_a_run_without_a_checkpoint_says_nothing_to_load(toy_run, cli, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(toy_run, bare)
    shutil.rmtree(bare / "checkpoints")
    code, out, err = cli("eval", bare, *SMALL)
    assert code == 2 and "Traceback" not in err
    assert "no checkpoint yet" in err and "nothing to load" in err and "resume from" not in err
