"""The report's views across data sets (report/study.py): per-data-set distributions per
method and the rank correlation of each metric between data sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from factorvae.config import dump
from factorvae.report import build_report
from factorvae.report.study import distributions, transfer_matrix
from factorvae.sweep import load_spec

SPEC = {"name": "study", "base": {"model": {"arch": {"channels": [4, 4, 4, 4], "fc": 8}}, "train": {"steps": 100}},
        "methods": [{"name": "betavae", "grid": {"beta": [1, 2, 4]}}, {"name": "factorvae", "grid": {"gamma": [10, 40]}}],
        "datasets": ["toy", "dsprites", "color_dsprites"], "seeds": 2}


def score(t) -> float:
    """Settings ranked the same way on toy and dsprites, the other way on color_dsprites."""
    rank = {("betavae", 1): 0, ("betavae", 2): 1, ("betavae", 4): 2, ("factorvae", 10): 3, ("factorvae", 40): 4}[
        (t.method, t.params.get("model.beta", t.params.get("model.gamma")))]
    return 0.1 + 0.15 * (4 - rank if t.dataset == "color_dsprites" else rank) + 0.01 * t.seed


def fabricate(out: Path, spec=SPEC):
    sweep = load_spec(spec)
    (out / "trials").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"name": "study", "spec": spec, "trials": [t.id for t in sweep.trials]}))
    for t in sweep.trials:
        d = out / "trials" / t.id
        (d / "checkpoints").mkdir(parents=True)
        (d / "trial.json").write_text(json.dumps({**t.to_dict(), "attempts": [{"seconds": 1.0}]}))
        (d / "config.yaml").write_text(dump(t.config))
        torch.save({"step": 100}, d / "checkpoints" / "last.pt")
        (d / "summary.json").write_text(json.dumps({"steps": 100, "final": {"recon": 50.0}, "active_dims": [0, 1]}))
        (d / "eval.json").write_text(json.dumps({"factor_vae": {"eval_accuracy": score(t)},
                                                 "mig": {"discrete_mig": 1 - score(t)}, "settings": {"preset": "fast"}}))
        (d / "analysis.json").write_text(json.dumps({"eval_hash": t.eval_hash, "recon": 50.0}))
    return sweep


def test_study_views(tmp_path):
    fabricate(tmp_path)
    res = build_report(tmp_path)
    md = res["markdown"].read_text()
    assert "Across data sets" in md and "Rank correlation of each metric across data sets" in md
    for d in ("toy", "dsprites", "color_dsprites"):
        assert (tmp_path / "report" / "img" / f"study_{d}.png").stat().st_size > 0
    from factorvae.sweep import aggregate

    rows = [r for r in aggregate(tmp_path, None, write=False) if r["status"] == "finished"]
    dist = distributions(rows, "factor_vae.eval_accuracy")
    assert sorted(dist) == ["color_dsprites", "dsprites", "toy"]
    assert sorted(dist["toy"]["betavae"]) == pytest.approx([0.1, 0.11, 0.25, 0.26, 0.4, 0.41])
    mat = np.array(transfer_matrix(rows, "factor_vae.eval_accuracy", ["toy", "dsprites", "color_dsprites"]))
    np.testing.assert_allclose(mat, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]])
    assert "-1.00" in md


def test_one_data_set_has_no_study_section(tmp_path):
    fabricate(tmp_path, dict(SPEC, datasets=["toy"]))
    assert "Across data sets" not in build_report(tmp_path)["markdown"].read_text()
