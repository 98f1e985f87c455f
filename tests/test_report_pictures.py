"""The report's heat-maps: DCI importance and MIG mutual information per setting (latents x
factor names) and the rank correlation between metrics across the sweep."""

from __future__ import annotations

import json

import numpy as np

from factorvae.report import build_report
from test_report import fabricate

FACTORS = ["shape", "scale", "posX"]


def test_heatmaps_of_score_matrices_and_metric_rank_correlation(tmp_path):
    fabricate(tmp_path)
    rng = np.random.default_rng(0)
    with_matrices = 0
    for ev_path in sorted(tmp_path.glob("trials/*/eval.json")):
        ev = json.loads(ev_path.read_text())
        ev["settings"]["factors"] = FACTORS
        ev["dci"] = {"disentanglement": float(rng.random()), "importance_matrix": rng.random((3, 3)).tolist()}
        ev["mig"] = {"discrete_mig": float(rng.random()), "mutual_info": rng.random((3, 3)).tolist()}
        ev_path.write_text(json.dumps(ev))
        with_matrices += 1
    assert with_matrices >= 8
    rep = build_report(tmp_path)
    names = {p.name for p in rep["images"]}
    dci = [n for n in names if n.startswith("dci_matrix_")]
    mig = [n for n in names if n.startswith("mig_matrix_")]
    assert len(dci) == len(mig) == 4  # the best seed of each of the 4 settings
    assert "metric_rank_correlation.png" in names
    md = rep["markdown"].read_text()
    assert "Which latent carries which factor" in md and "How the metrics agree" in md
    for p in rep["images"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_matrices_leaves_a_note(tmp_path):
    fabricate(tmp_path)  # eval.json without dci / mig
    rep = build_report(tmp_path)
    assert not any(p.name.startswith(("dci_matrix_", "mig_matrix_")) for p in rep["images"])
    assert "No finished trial with DCI or MIG scores yet" in rep["markdown"].read_text()
