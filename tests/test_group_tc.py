"""The true TC of a whole group from one batched encoding (metrics.tc.models_total_correlation,
paper Fig. 7): each run's estimate equals ``model_total_correlation`` of that run alone (same
mixture subset, origins and noise from its seed; float32 rounding of the batched encoder only)."""

from __future__ import annotations

import json

import pytest
import torch

from factorvae.data import load_dataset
from factorvae.group import RunGroup
from factorvae.group_train import train_group
from factorvae.metrics.codes import encode_batch
from factorvae.metrics.tc import model_total_correlation, models_total_correlation
from factorvae.runs import build_model
from factorvae.trainer import train
from test_group_train import configs


@pytest.fixture(scope="module")
def toy():
    return load_dataset("toy", progress=False)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("num_data", [300, 0])
def test_group_true_tc_equals_each_run_alone(toy, strategy, num_data):
    cfgs = configs("betavae", values=(1.0, 4.0, 8.0), strategy=strategy)
    models = [build_model(c, toy.channels, torch.device("cpu"))[0] for c in cfgs]
    group = RunGroup(models, [torch.Generator() for _ in models], strategy=strategy)
    seeds = [c["train"]["seed"] for c in cfgs]
    got = models_total_correlation(group.posteriors, group.device, toy, seeds, num_samples=40, num_data=num_data)
    for model, seed, g in zip(models, seeds, got):
        alone = model_total_correlation(model, toy, num_samples=40, num_data=num_data, seed=seed)
        assert g.keys() == alone.keys()
        for k, v in alone.items():
            assert g[k] == pytest.approx(v, rel=1e-4, abs=1e-4), k
    assert len({g["true_tc"] for g in got}) == 3  # three models, three estimates


def test_a_group_logs_the_true_tc_a_run_alone_logs(tmp_path, toy):
    kw = {"true_tc_every": 2, "true_tc_samples": 30, "true_tc_data": 200}
    cfgs = configs("betavae", strategy="vmap", steps=4, **kw)
    train_group(cfgs, [tmp_path / f"g{i}" for i in range(2)], progress=False, dataset=toy)
    for i, c in enumerate(configs("betavae", strategy="vmap", steps=4, **kw)):
        train(c, tmp_path / f"a{i}", progress=False, dataset=toy)
        rows = [json.loads(line) for line in (tmp_path / f"g{i}" / "metrics.jsonl").read_text().splitlines()]
        alone = [json.loads(line) for line in (tmp_path / f"a{i}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "true_tc" in r] == [2, 4]
        for r, a in zip(rows, alone):
            assert r["true_tc"] == pytest.approx(a["true_tc"], rel=1e-3, abs=1e-3)


def test_evaluation_batches_are_large_on_a_gpu_only():
    # a GPU pass of a few hundred 64x64 images is bound by launches and syncs; a CPU's is not
    assert encode_batch(torch.device("cuda")) >= 4096 and encode_batch("cuda:1") >= 4096
    assert encode_batch("cpu") == 256 and encode_batch(torch.device("cpu"), cpu=512) == 512
