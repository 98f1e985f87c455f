"""configs/sweeps/locatello_2019.yaml: disentanglement_lib's unsupervised_study_v1 grid, its
narrowing with --set, and the projected device time of `sweep --dry-run`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from factorvae.sweep import load_spec
from factorvae.sweep import projection

SPEC = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "locatello_2019.yaml"
GRIDS = {  # dlib config/unsupervised_study_v1/sweep.py
    "betavae": ("model.beta", [1, 2, 4, 6, 8, 16]),
    "annealedvae": ("model.c_max", [5, 10, 25, 50, 75, 100]),
    "factorvae": ("model.gamma", [10, 20, 30, 40, 50, 100]),
    "dipvae1": ("model.lambda_od", [1, 2, 5, 10, 20, 50]),
    "dipvae2": ("model.lambda_od", [1, 2, 5, 10, 20, 50]),
    "betatcvae": ("model.beta", [1, 2, 4, 6, 8, 10]),
}
DATASETS = ("dsprites", "color_dsprites", "noisy_dsprites", "scream_dsprites", "smallnorb", "cars3d", "shapes3d")


@pytest.fixture(scope="module")
def study():
    return load_spec(SPEC)


def test_the_study_grid(study):
    trials = study.trials
    assert len(trials) == 12_600
    assert Counter(t.method for t in trials) == {m: 2100 for m in GRIDS}
    assert Counter(t.dataset for t in trials) == {d: 1800 for d in DATASETS}
    assert sorted({t.seed for t in trials}) == list(range(50))
    for m, (key, values) in GRIDS.items():
        assert sorted({t.params[key] for t in trials if t.method == m}) == values
    for t in trials[:: 97]:
        c = t.config
        assert (c["train"]["steps"], c["train"]["batch_size"], c["model"]["z_dim"]) == (300_000, 64, 10)
        assert c["model"]["arch"]["fc"] == 256 and c["model"]["likelihood"] == "bernoulli"
        assert c["optim"]["vae"] == {"lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8}
        if t.method == "annealedvae":
            assert (c["model"]["gamma"], c["model"]["iteration_threshold"]) == (1000, 100_000)
        if t.method.startswith("dipvae"):
            assert c["model"]["lambda_d_factor"] == (10 if t.method == "dipvae1" else 1)
        if t.method == "factorvae":
            assert c["optim"]["disc"]["betas"] == [0.5, 0.9] and c["model"]["disc"]["layers"] == 6
    assert study.trials[0].eval["metrics"] == "all"  # every metric of the suite


def test_set_narrows_data_sets_and_seeds():
    sweep = load_spec(SPEC, sets={"datasets": ["cars3d"], "seeds": 2})
    assert len(sweep.trials) == 72 and {t.dataset for t in sweep.trials} == {"cars3d"}
    assert {t.config["data"]["path"] for t in sweep.trials} == {"data/cars"}  # the spec's entry, path kept


def test_projection_times_each_kind_once(monkeypatch):
    spec = {"base": {"model": {"arch": {"channels": [4, 4, 4, 4], "fc": 8}}, "train": {"steps": 30, "batch_size": 4}},
            "methods": [{"name": "betavae", "grid": {"beta": [1, 4]}}, {"name": "annealedvae", "grid": {"c_max": [5, 10]}}],
            "datasets": ["toy", "color_dsprites"], "seeds": 2}
    trials = load_spec(spec).trials
    calls = []
    real = projection.step_rate

    def counted(cfg, device):
        calls.append((cfg["model"]["name"], cfg["data"]["name"]))
        return real(cfg, device)

    monkeypatch.setattr(projection, "step_rate", counted)
    p = projection.project(trials)
    assert sorted(calls) == sorted({(m, d) for m in ("betavae", "annealedvae") for d in ("toy", "color_dsprites")})
    assert {m: v["trials"] for m, v in p["by_method"].items()} == {"betavae": 8, "annealedvae": 8}
    assert p["seconds"] == pytest.approx(sum(v["seconds"] for v in p["by_method"].values()))
    assert p["by_method"]["betavae"]["steps"] == 8 * 30
    assert all(0 < r for v in p["by_method"].values() for r in v["rates"])
    assert "projected device time" in projection.describe(p)[0]


def test_new_default_options_keep_older_trial_ids():
    """model.likelihood and data.scream_path at their defaults leave a trial's hash and its
    config.yaml comparison as before they existed."""
    from factorvae.sweep import experiment_config

    t = load_spec({"methods": [{"name": "betavae"}], "datasets": ["toy"]}).trials[0]
    old = {**t.config, "model": dict(t.config["model"]), "data": dict(t.config["data"])}
    del old["model"]["likelihood"], old["data"]["scream_path"]
    assert experiment_config(old) == experiment_config(t.config)
    g = load_spec({"methods": [{"name": "betavae", "set": {"model.likelihood": "gaussian"}}], "datasets": ["toy"]})
    assert g.trials[0].config_hash != t.config_hash


def test_sampled_codes_are_scored_beside_the_means(tmp_path, cli):
    """eval.sampled: the metrics on z ~ q(z|x) land in eval.json's "sampled" and the table's
    sampled.* columns; at its default (false) the eval hash is the older one."""
    import json

    import numpy as np
    import torch

    from factorvae.errors import UserError
    from factorvae.runs import load_run, open_dataset
    from factorvae.sweep import stable_hash
    from factorvae.sweep.table import trial_row
    from factorvae.metrics.sampled import evaluate_model
    from factorvae.sweep.trial import evaluate_trial

    spec = {"base": {"model": {"arch": {"channels": [4, 4, 4, 4], "fc": 8}},
                     "train": {"steps": 2, "batch_size": 8, "threads": 1, "image_every": 1000, "log_every": 1}},
            "methods": [{"name": "betavae"}], "datasets": ["toy"],
            "eval": {"metrics": ["mig"], "recon_images": 0, "true_tc": None, "log_likelihood": None, "sampled": True}}
    trial = load_spec(spec).trials[0]
    assert trial.eval["sampled"] is True
    off = load_spec({**spec, "eval": {**spec["eval"], "sampled": False}}).trials[0]
    assert off.eval_hash == stable_hash({k: v for k, v in off.eval.items() if k != "sampled"})
    with pytest.raises(UserError, match="eval.sampled must be true or false"):
        load_spec({**spec, "eval": {"sampled": "yes"}})
    d = tmp_path / "trials" / trial.id
    from factorvae.trainer import train

    train(trial.config, d, progress=False)
    evaluate_trial(d, trial, open_dataset(trial.config))
    ev = json.loads((d / "eval.json").read_text())
    assert 0 <= ev["sampled"]["mig"]["discrete_mig"] <= 1 and "settings" not in ev["sampled"]
    assert ev["sampled"]["mig"]["discrete_mig"] != ev["mig"]["discrete_mig"]
    # the sweep's sampled scores are metrics.sampled's (one home), seeded by eval.seed
    run = load_run(d, load_data=False)
    alone = evaluate_model(run.model, open_dataset(trial.config), "sampled", preset=trial.eval["preset"],
                           seed=trial.eval["seed"], metrics=["mig"])
    assert alone["mig"]["discrete_mig"] == ev["sampled"]["mig"]["discrete_mig"]
    row = trial_row(d, trial)
    assert np.isfinite(row["sampled.mig.discrete_mig"])
