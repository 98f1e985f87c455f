"""Training a group into run directories (factorvae.group_train): each run's records are the
ones ``train()`` writes for it alone.

Tolerances: the ``loop`` strategy runs each member's own ``train_step`` on the batches its data
generator gives, so its checkpoints must equal single runs bit for bit. ``vmap`` sums batched
(grouped) convolutions in another order: ~1e-7 relative per step in float32, which Adam's
normalised updates carry on; after a few steps of lr 1e-4 the weights agree to ~1e-6, far below
the ~lr a different batch, noise draw or hyper-parameter would move them (float64 equivalence of
the step itself: tests/test_group.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.errors import UserError
from factorvae.group_train import train_group
from factorvae.trainer import train

TINY = {"z_dim": 3, "arch": {"channels": [4, 4, 4, 4], "fc": 8}}
STEPS = 6


@pytest.fixture(scope="module")
def toy():
    return load_dataset("toy", progress=False)


def configs(name="factorvae", values=(10.0, 40.0), strategy="loop", steps=STEPS, **train_kw):
    key = {"factorvae": "gamma", "betavae": "beta"}[name]
    model = {"name": name, **TINY}
    if name == "factorvae":
        model["disc"] = {"hidden": 16, "layers": 2}
    return [resolve({"model": {**model, key: v}, "data": {"name": "toy"},
                     "train": {"steps": steps, "log_every": 2, "ckpt_every": 4, "image_every": 10_000, "threads": 1,
                               "device": "cpu", "seed": 3 + i, "group_strategy": strategy, **train_kw}})
            for i, v in enumerate(values)]


def ckpt(d):
    return torch.load(d / "checkpoints" / "last.pt", weights_only=True)


def metrics(d):
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]


def assert_same_checkpoint(a, b, atol):
    assert a["step"] == b["step"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=atol, msg=k)
    for section, opt in a["optim"].items():
        for i, st in opt["state"].items():
            for k, v in st.items():
                # moments scale with the gradients: relative (float32 rounding carried by Adam)
                torch.testing.assert_close(v, b["optim"][section]["state"][i][k], rtol=1e-3 if atol else 0,
                                           atol=atol, msg=f"{section} {k}")
    for k, g in a["rng"].items():
        assert torch.equal(g, b["rng"][k]), k  # same batches and noise drawn


@pytest.mark.parametrize("name,strategy,atol", [("factorvae", "loop", 0.0), ("factorvae", "vmap", 1e-5),
                                                ("betavae", "vmap", 1e-5)])
def test_group_writes_the_run_dirs_single_runs_write(tmp_path, toy, name, strategy, atol):
    cfgs = configs(name, strategy=strategy)
    for i, c in enumerate(configs(name, strategy=strategy)):
        train(c, tmp_path / f"alone{i}", progress=False, dataset=toy)
    summaries = train_group(cfgs, [tmp_path / f"g{i}" for i in range(2)], progress=False, dataset=toy)
    assert [s["steps"] for s in summaries] == [STEPS, STEPS]
    for i in range(2):
        a, g = tmp_path / f"alone{i}", tmp_path / f"g{i}"
        assert_same_checkpoint(ckpt(a), ckpt(g), atol)
        ma, mg = metrics(a), metrics(g)
        assert [(r["step"], sorted(r)) for r in ma] == [(r["step"], sorted(r)) for r in mg]
        for ra, rg in zip(ma, mg):
            for k in ra:
                if k != "steps_per_s":
                    assert rg[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in g.iterdir())
        assert list((g / "tb").iterdir()) and (g / "summary.json").exists()
        assert (g / "config.yaml").read_text() == (a / "config.yaml").read_text()
    # the runs' hyper-parameters differed, and so do their weights
    w = [ckpt(tmp_path / f"g{i}")["model"]["encoder.net.0.weight"] for i in range(2)]
    assert not torch.allclose(w[0], w[1])


def test_a_group_resumes_together_or_one_run_alone(tmp_path, toy):
    outs = [tmp_path / "g0", tmp_path / "g1"]
    train_group(configs(steps=4), outs, progress=False, dataset=toy)  # stopped at 4 (a checkpoint)
    # run 0 goes on alone to step 6; run 1 with the group, then both finish in one call
    train(configs()[0], outs[0], resume=True, progress=False, dataset=toy)
    for i, c in enumerate(configs()):
        train(c, tmp_path / f"alone{i}", progress=False, dataset=toy)
    later = configs(values=(10.0, 40.0), steps=8)
    train_group(later, outs, resume=True, progress=False, dataset=toy)  # runs at steps 6 and 4: two groups
    for i, c in enumerate(configs(steps=8)):
        train(c, tmp_path / f"long{i}", progress=False, dataset=toy)
    for i in range(2):
        assert_same_checkpoint(ckpt(tmp_path / f"long{i}"), ckpt(outs[i]), 0.0)
        assert [r["step"] for r in metrics(outs[i])] == [2, 4, 6, 8]


def test_a_diverging_run_is_marked_failed_and_the_others_finish(tmp_path, toy):
    cfgs = configs(values=(10.0, 40.0, 20.0), strategy="vmap")
    cfgs[1]["optim"]["vae"]["lr"] = cfgs[0]["optim"]["vae"]["lr"]  # same group
    outs = [tmp_path / f"g{i}" for i in range(3)]

    real = torch.optim.Adam.step
    calls = {"n": 0}

    def poison(self, *a, **k):  # after step 5, run 1's weights turn NaN (a diverged run)
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 10:  # 2 optimisers x 5 steps
            for p in self.param_groups[0]["params"]:
                if p.dim() > 0 and p.shape[0] == 3:
                    with torch.no_grad():
                        p[1].fill_(float("nan"))
        return out

    torch.optim.Adam.step = poison
    try:
        summaries = train_group(cfgs, outs, progress=False, dataset=toy)
    finally:
        torch.optim.Adam.step = real
    assert summaries[1]["status"] == "failed" and summaries[1]["steps"] == 6  # found at the log step
    assert json.loads((outs[1] / "summary.json").read_text())["status"] == "failed"
    assert [s["steps"] for s in (summaries[0], summaries[2])] == [STEPS, STEPS]
    assert "status" not in summaries[0]
    # its checkpoint stays the last good one (step 4), for a rerun to resume from
    assert ckpt(outs[1])["step"] == 4
    assert all(math.isfinite(v) for v in ckpt(outs[1])["model"]["encoder.net.0.weight"].flatten().tolist())
    assert [r["step"] for r in metrics(outs[1])] == [2, 4]
    # the others are unchanged by their neighbour's failure
    for i in (0, 2):
        alone = tmp_path / f"alone{i}"
        train(configs(values=(10.0, 40.0, 20.0), strategy="vmap")[i], alone, progress=False, dataset=toy)
        assert_same_checkpoint(ckpt(alone), ckpt(outs[i]), 1e-5)


def test_runs_that_differ_in_more_than_seed_and_hyper_parameters_cannot_share_a_group(tmp_path, toy):
    cfgs = configs()
    cfgs[1]["train"]["batch_size"] = 32
    with pytest.raises(UserError, match="cannot share a group"):
        train_group(cfgs, [tmp_path / "a", tmp_path / "b"], progress=False, dataset=toy)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_group_evaluation_encodes_once_for_all_runs_and_scores_like_each_alone(toy, strategy):
    from factorvae.group_train import evaluate_group
    from factorvae.metrics.suite import evaluate_model
    from factorvae.runs import build_model

    models = [build_model(c, 1, torch.device("cpu"))[0] for c in configs(strategy=strategy)]
    together = evaluate_group(models, toy, "fast", 0, ["beta_vae", "mig"], strategy)
    for m, got in zip(models, together):
        alone = evaluate_model(m, toy, preset="fast", seed=0, metrics=["beta_vae", "mig"])
        for metric in ("beta_vae", "mig"):
            for k, v in alone[metric].items():
                if isinstance(v, float):
                    assert got[metric][k] == pytest.approx(v, abs=1e-6), (metric, k)
        # every point the run needed was encoded once for the whole group
        assert got["encoder"]["distinct_points"] == alone["encoder"]["distinct_points"]
    assert together[0]["mig"] != together[1]["mig"]  # each run scored with its own encoder
