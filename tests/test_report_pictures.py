"""The report's heat-maps: DCI importance and MIG mutual information per setting (latents x
factor names) and the rank correlation between metrics across the sweep."""

from __future__ import annotations

import json
import zlib

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


def test_udr_within_settings_and_across_the_sweep(tmp_path, monkeypatch):
    """Trials whose models are the same code up to a per-trial permutation agree (UDR high);
    a setting of noise models does not (UDR low)."""
    import torch

    from factorvae.data.grid import FactorGrid
    from factorvae.sweep import udr as sweep_udr
    from test_metrics_sampled import Data

    fabricate(tmp_path)
    grid = FactorGrid(("a", "b", "c"), (4, 5, 6))

    class Model(torch.nn.Module):
        def __init__(self, perm, noise):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.perm, self.noise = perm, noise

        def encode(self, x):
            i = x[:, 0, 0, 0].long().numpy()
            f = grid.classes(i).astype(np.float32)
            if self.noise:
                f = np.random.default_rng(int(self.noise)).standard_normal((len(grid), 3)).astype(np.float32)[i]
            mu = torch.from_numpy(f[:, self.perm] - f[:, self.perm].mean())
            return mu, torch.full_like(mu, -4.0)

        def representation(self, x):
            return self.encode(x)[0]

    class Run:
        def __init__(self, path):
            t = json.loads((path / "trial.json").read_text())
            noise = t["method"] == "betavae" and t["params"].get("model.beta") == 1
            key = zlib.crc32(path.name.encode())  # str hash() changes per process: two noise codes could coincide
            rng = np.random.default_rng(key)
            self.model = Model(rng.permutation(3), key + 1 if noise else 0)
            self.config = {"data": {"name": "fake"}}

    monkeypatch.setattr(sweep_udr, "load_run", lambda path, load_data=True: Run(path))
    monkeypatch.setattr(sweep_udr, "open_dataset", lambda cfg: Data(grid))
    rep = build_report(tmp_path)
    md = rep["markdown"].read_text()
    assert "Unsupervised Disentanglement Ranking" in md
    assert "udr_vs_supervised.png" in {p.name for p in rep["images"]}
    section = md.split("Unsupervised Disentanglement Ranking", 1)[1].split("\n## ", 1)[0]
    table = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    head, body = table[0], [r for r in table[2:]]
    col = head.index("UDR within setting")
    within = {r[0]: r[col] for r in body}
    setting = {r[0]: r[1] for r in body}
    perm = [float(v) for t, v in within.items() if "FactorVAE" in setting[t] or "factorvae" in setting[t].lower()]
    noise = [float(v) for t, v in within.items() if "β = 1" in setting[t] or "beta = 1" in setting[t].lower()
             or setting[t].endswith("1") and "β" in setting[t]]
    assert len(perm) >= 4 and min(perm) > 0.5, within  # permuted copies of one code agree
    assert noise and max(noise) < 0.3, (noise, setting)  # independent noise codes do not
