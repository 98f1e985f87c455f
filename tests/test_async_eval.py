"""train.eval_async (factorvae.async_eval): the periodic Fig. 5 evaluation scored in a worker
process logs the rows the synchronous evaluation logs, and a failed one is a warning, not a
stopped run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from factorvae import group as group_module
from factorvae import group_train
from factorvae.async_eval import encode_grid, score
from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.group_train import train_group
from factorvae.metrics.suite import evaluate_model
from factorvae.runs import build_model

TINY = {"z_dim": 3, "arch": {"channels": [4, 4, 4, 4], "fc": 8}, "disc": {"hidden": 16, "layers": 2}}
#: cheap metrics for the trainings (DCI's GBTs, the CPU part at issue, cost ~2 s per run and step
#: here, and beta_vae's fixed-factor votes: both checked once, on the scoring function itself)
METRICS = ["mig", "sap"]
#: codes from other batch compositions (whole grid vs the points drawn) differ by float32
#: rounding, ~1e-7 relative; the scores by less than this
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def toy():
    return load_dataset("toy", progress=False)


def configs(eval_async):
    return [resolve({"model": {"name": "factorvae", **TINY, "gamma": g}, "data": {"name": "toy"},
                     "train": {"steps": 4, "log_every": 2, "ckpt_every": 4, "image_every": 10_000, "threads": 1,
                               "device": "cpu", "seed": 3 + i, "group_strategy": "loop", "eval_every": 2,
                               "eval_metrics": METRICS, "eval_preset": "fast", "eval_async": eval_async}})
            for i, g in enumerate((10.0, 40.0))]


def eval_rows(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return sorted((r for r in rows if any(k.startswith("eval/") for k in r)), key=lambda r: r["step"])


def test_scores_of_a_whole_grid_table_equal_those_of_the_lazy_encoding(toy):
    model = build_model(configs(True)[0], 1, torch.device("cpu"))[0]
    grid = toy.grid
    got = score(encode_grid([model], toy)[0], grid.sizes, grid.names, ["beta_vae", "dci"], "fast", 5)
    own = evaluate_model(model, toy, preset="fast", seed=5, metrics=["beta_vae", "dci"], batch_size=64)
    for metric in ("beta_vae", "dci"):
        assert got[metric].keys() == own[metric].keys()
        for k, v in own[metric].items():
            if isinstance(v, float):
                assert got[metric][k] == pytest.approx(v, abs=TOLERANCE), (metric, k)
    assert np.allclose(got["dci"]["importance_matrix"], own["dci"]["importance_matrix"], rtol=0, atol=TOLERANCE)


def test_a_group_scored_in_a_worker_logs_the_rows_of_the_synchronous_evaluation(tmp_path, toy, monkeypatch):
    train_group(configs(False), [tmp_path / f"sync{i}" for i in range(2)], progress=False, dataset=toy)

    def in_this_process(*a, **k):
        raise AssertionError("eval_async: true scored in the training process")

    monkeypatch.setattr(group_train, "evaluate_group", in_this_process)
    summaries = train_group(configs(True), [tmp_path / f"async{i}" for i in range(2)], progress=False, dataset=toy)
    assert all(s["steps"] == 4 for s in summaries)
    for i in range(2):
        sync, done = eval_rows(tmp_path / f"sync{i}"), eval_rows(tmp_path / f"async{i}")
        assert [r["step"] for r in sync] == [r["step"] for r in done] == [2, 4]
        for a, b in zip(sync, done):
            assert a.keys() == b.keys()
            assert any(k.startswith("eval/sap.") for k in a)
            for k in a:
                assert b[k] == pytest.approx(a[k], abs=TOLERANCE), k
    assert eval_rows(tmp_path / "async0") != eval_rows(tmp_path / "async1")  # each run its own scores


def test_a_failed_evaluation_in_the_worker_is_a_warning_and_the_runs_finish(tmp_path, toy, monkeypatch):
    real = group_module.RunGroup.representations

    def diverged(self, x, per_run=False):  # NaN codes: the worker's Codes.from_arrays refuses them
        return torch.full_like(real(self, x, per_run), float("nan"))

    monkeypatch.setattr(group_module.RunGroup, "representations", diverged)
    outs = [tmp_path / f"r{i}" for i in range(2)]
    with pytest.warns(UserWarning, match=r"evaluation of .*r[01] at step [24] failed in the worker process: UserError: "
                                         r"evaluation codes: 'codes' has NaN values") as caught:
        summaries = train_group(configs(True), outs, progress=False, dataset=toy)
    failed = [str(w.message) for w in caught if "failed in the worker process" in str(w.message)]
    assert len(failed) == 4  # two runs x steps 2 and 4, one line each
    for out, summary in zip(outs, summaries):
        assert summary["steps"] == 4 and "status" not in summary
        assert json.loads((out / "summary.json").read_text())["steps"] == 4
        assert eval_rows(out) == []
