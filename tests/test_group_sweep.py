"""`factorvae sweep --group-size N`: trials of one group key train as one vectorised group and
give the results table a group of one gives (the loop strategy runs each member's own step, so
the rows are equal; vmap's float32 reordering is covered in tests/test_group_train.py)."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from factorvae.errors import UserError
from factorvae.group import RunGroup
from factorvae.sweep import load_spec, run_sweep
from factorvae.sweep.backends.local import LocalBackend
from factorvae.sweep import trial as st
from factorvae.sweep.packing import pack, parse_group_size
from factorvae.sweep.spec import experiment_config
from factorvae.sweep.table import read_table

st_evaluate_group = st.evaluate_group
TINY = {"z_dim": 3, "arch": {"channels": [4, 4, 4, 4], "fc": 8}}


def spec(steps=10) -> dict:
    return {
        "name": "grouped",
        "base": {"data": {"name": "toy"},
                 "train": {"steps": steps, "log_every": 5, "ckpt_every": 5, "image_every": 10_000, "threads": 1,
                           "device": "cpu", "group_strategy": "loop"}},
        "methods": [{"name": "factorvae", "set": {"model.disc": {"hidden": 16, "layers": 2},
                                                      **{f"model.{k}": v for k, v in TINY.items()}},
                     "grid": {"gamma": [10, 40]}},
                    {"name": "infowgan_gp"}],
        "seeds": 1,
        "eval": {"preset": "fast", "metrics": ["beta_vae"], "recon_images": 64, "true_tc": None,
                 "log_likelihood": None},
    }


def test_packing_groups_by_key_and_leaves_ungroupable_methods_alone():
    s = spec()
    s["seeds"] = [0, 1, 2]
    trials = load_spec(s).trials
    units = pack(trials, 4)
    sizes = sorted(len(u) for u in units)
    assert sizes == [1, 1, 1, 2, 4]  # 6 FactorVAE trials in groups of <= 4; InfoWGAN-GP alone
    assert all(u[0].method == "infowgan_gp" for u in units if len(u) == 1)
    assert sorted(t.id for u in units for t in u) == sorted(t.id for t in trials)
    assert pack(trials, 1) == [[t] for t in trials]
    with pytest.raises(UserError, match="group-size"):
        parse_group_size("0")
    assert parse_group_size("auto") == "auto" and parse_group_size("3") == 3


def test_sweep_in_groups_gives_the_rows_of_single_runs(tmp_path, cli, monkeypatch):
    batched = []  # the group's evaluation: one shared, batched encoding of the grid
    monkeypatch.setattr(st, "evaluate_group", lambda models, *a: (batched.append(len(models)),
                                                                   st_evaluate_group(models, *a))[1])
    s = spec()
    s["methods"] = s["methods"][:1]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(s))
    rows = {}
    for n in (1, 2):
        code, out, err = cli("sweep", path, "--out", tmp_path / f"g{n}", "--workers", "0", "--group-size", str(n),
                             "--no-progress")
        assert code == 0, (out, err)
        if n == 2:
            assert "in 1 group(s)" in out and "trained in a group of 2" in out
        rows[n] = {r["trial_id"]: r for r in read_table(tmp_path / f"g{n}" / "results.parquet")}
    assert batched == [2]
    assert rows[1].keys() == rows[2].keys() and len(rows[1]) == 2
    for tid, a in rows[1].items():
        b = rows[2][tid]
        assert a.keys() == b.keys() and a["status"] == b["status"] == "finished"
        compared = 0
        for k, v in a.items():
            if isinstance(v, float) and "seconds" not in k and "steps_per_s" not in k and not math.isnan(v):
                assert b[k] == v, k  # loop: each member's own step on its own batches, bit for bit
                compared += 1
        assert compared > 5 and a["beta_vae.eval_accuracy"] is not None
        trial = json.loads((tmp_path / "g2" / "trials" / tid / "trial.json").read_text())
        assert set(trial["attempts"][0]["group"]) == set(rows[1])


def test_a_group_killed_mid_training_resumes_in_the_sweep(tmp_path, cli, monkeypatch):
    s = spec(steps=10)
    s["methods"] = s["methods"][:1]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(s))
    real_step, calls = RunGroup.step, []

    def dies(self, *a):  # the process is stopped in step 8, after the step-5 checkpoints
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real_step(self, *a)

    monkeypatch.setattr(RunGroup, "step", dies)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_spec(s), tmp_path / "out", LocalBackend(progress=False), progress=False, log=None, group_size=2)
    monkeypatch.setattr(RunGroup, "step", real_step)
    real = st._train_group
    seen = []
    monkeypatch.setattr(st, "_train_group", lambda cfgs, outs, resumes, *a: (seen.append(list(resumes)),
                                                                              real(cfgs, outs, resumes, *a))[1])
    code, out, err = cli("sweep", path, "--out", tmp_path / "out", "--workers", "0", "--group-size", "2",
                         "--no-progress")
    assert code == 0, (out, err)
    assert seen == [[True, True]]
    for r in read_table(tmp_path / "out" / "results.csv"):
        assert r["status"] == "finished" and int(r["step"]) == 10


def test_trial_ids_keep_their_value_at_the_default_precision_and_change_with_bf16():
    s = spec()
    trial = load_spec(s).trials[0]
    cfg = experiment_config(trial.config)
    assert "precision" not in cfg["train"] and "group_strategy" not in cfg["train"]
    s["base"]["train"]["precision"] = "bf16"
    s["base"]["train"]["group_strategy"] = "vmap"  # a machine key: no new id
    assert load_spec(s).trials[0].id != trial.id
    s["base"]["train"]["precision"] = "fp32"
    assert load_spec(s).trials[0].id == trial.id


def test_a_group_without_metrics_finishes(tmp_path):
    s = spec(steps=2)
    s["methods"] = s["methods"][:1]
    s["eval"] = {"metrics": [], "recon_images": 8, "true_tc": None, "log_likelihood": None}
    outcome = run_sweep(load_spec(s), tmp_path / "out", LocalBackend(progress=False), progress=False, log=None, group_size=2)
    assert [r["status"] for r in outcome.results] == ["finished", "finished"], outcome.results
    assert all(json.loads((tmp_path / "out" / "trials" / r["id"] / "eval.json").read_text())["run"]["step"] == 2
               for r in outcome.results)
