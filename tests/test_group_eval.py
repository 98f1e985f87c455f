"""A group's Fig. 5 evaluation (factorvae.group_train.evaluate_group): each run keeps its own seeded
draws and scores, and every encoder pass serves all runs at once."""

from __future__ import annotations

import json

import pytest
import torch

from factorvae import group as group_module
from factorvae import trainer
from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.group_train import evaluate_group, train_group
from factorvae.metrics.suite import evaluate_model
from factorvae.runs import build_model
from factorvae.trainer import train

TINY = {"z_dim": 3, "arch": {"channels": [4, 4, 4, 4], "fc": 8}, "disc": {"hidden": 16, "layers": 2}}
METRICS = ["beta_vae", "mig"]


@pytest.fixture(scope="module")
def toy():
    return load_dataset("toy", progress=False)


def configs(strategy="loop", **train_kw):
    return [resolve({"model": {"name": "factorvae", **TINY, "gamma": g}, "data": {"name": "toy"},
                     "train": {"steps": 4, "log_every": 2, "ckpt_every": 4, "image_every": 10_000, "threads": 1,
                               "device": "cpu", "seed": 3 + i, "group_strategy": strategy, **train_kw}})
            for i, g in enumerate((10.0, 40.0))]


def assert_same_scores(got, alone):
    for metric in METRICS:
        for k, v in alone[metric].items():
            if isinstance(v, float):
                assert got[metric][k] == pytest.approx(v, abs=1e-6), (metric, k)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_runs_with_their_own_seeds_score_as_alone_in_shared_encoder_passes(toy, strategy, monkeypatch):
    models = [build_model(c, 1, torch.device("cpu"))[0] for c in configs()]
    passes = []
    real = group_module.RunGroup.representations
    monkeypatch.setattr(group_module.RunGroup, "representations",
                        lambda self, x, per_run=False: (passes.append(x.shape[:2]), real(self, x, per_run))[1])
    together = evaluate_group(models, toy, "fast", [0, 1], METRICS, strategy, batch_size=64)
    alone = [evaluate_model(m, toy, preset="fast", seed=i, metrics=METRICS, batch_size=64) for i, m in enumerate(models)]
    for got, own in zip(together, alone):
        assert_same_scores(got, own)
        assert got["encoder"]["distinct_points"] == own["encoder"]["distinct_points"]
        assert got["settings"]["seed"] == own["settings"]["seed"]
    # each pass encoded both runs' batches: as many passes as one run alone makes
    assert len(passes) == max(own["encoder"]["encoder_calls"] for own in alone)
    assert all(n == 2 for n, _ in passes)
    assert together[0]["mig"] != together[1]["mig"]  # own encoder, own draws


def test_a_group_logs_the_periodic_scores_runs_alone_log(tmp_path, toy, monkeypatch):
    kw = {"eval_every": 4, "eval_metrics": ["mig"]}
    for i, c in enumerate(configs(**kw)):
        train(c, tmp_path / f"alone{i}", progress=False, dataset=toy)
    alone_calls = []
    monkeypatch.setattr(trainer, "evaluate_during_training", lambda *a: alone_calls.append(a))
    train_group(configs(**kw), [tmp_path / f"g{i}" for i in range(2)], progress=False, dataset=toy)
    assert alone_calls == []  # evaluated as a group, not run by run
    for i in range(2):
        rows = [[json.loads(line) for line in (tmp_path / f"{d}{i}" / "metrics.jsonl").read_text().splitlines()]
                for d in ("alone", "g")]
        evals = [[r for r in rs if any(k.startswith("eval/") for k in r)] for rs in rows]
        assert [r["step"] for r in evals[0]] == [r["step"] for r in evals[1]] == [4]
        for a, g in zip(*evals):
            assert a.keys() == g.keys()
            for k in a:
                assert g[k] == pytest.approx(a[k], abs=1e-6), k
