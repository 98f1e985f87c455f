"""`factorvae report`: figures, tables, verdict and correlation from a sweep directory; robust to
failed, corrupt and unevaluated trials."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from factorvae.config import dump
from factorvae.sweep import load_spec

SPEC = {
    "name": "fake",
    "description": "fabricated results",
    "base": {"data": {"name": "toy"}, "model": {"z_dim": 3, "arch": {"channels": [4, 4, 4, 4], "fc": 8}},
             "train": {"steps": 100}},
    "methods": [{"name": "betavae", "grid": {"beta": [1, 4]}},
                {"name": "factorvae", "set": {"model.disc": {"hidden": 16, "layers": 2}}, "grid": {"gamma": [10, 40]}}],
    "seeds": 3,
    "eval": {"metrics": ["factor_vae", "beta_vae"]},
}
# (metric, recon) per setting: FactorVAE has higher metric at lower or similar recon
TRUTH = {("betavae", 1): (0.55, 40.0), ("betavae", 4): (0.70, 60.0), ("factorvae", 10): (0.75, 42.0),
         ("factorvae", 40): (0.85, 50.0)}


def fabricate(out: Path) -> dict:
    """A sweep directory as `factorvae sweep` leaves it, with known numbers; one trial failed,
    one never evaluated, one corrupt directory."""
    sweep = load_spec(SPEC)
    rng = np.random.default_rng(0)
    (out / "trials").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"name": "fake", "description": "fabricated results", "spec": SPEC,
                                                "trials": [t.id for t in sweep.trials]}))
    special = {}
    for i, t in enumerate(sweep.trials):
        d = out / "trials" / t.id
        (d / "checkpoints").mkdir(parents=True)
        (d / "images").mkdir()
        (d / "trial.json").write_text(json.dumps({**t.to_dict(), "attempts": [{"seconds": 12.5}]}))
        (d / "config.yaml").write_text(dump(t.config))
        torch.save({"step": 100}, d / "checkpoints" / "last.pt")
        value = t.params.get("model.beta", t.params.get("model.gamma"))
        metric, recon = TRUTH[(t.method, value)]
        metric += 0.02 * rng.normal()
        recon += rng.normal()
        higgins = 0.5 + 0.5 * metric + 0.05 * rng.normal()
        recs = []
        for step in range(10, 101, 10):
            r = {"step": step, "recon": 500 - 4 * step, "kl": 1.0}
            if t.method == "factorvae":
                r.update(tc=1.0 - step / 200, true_tc=2.0 - step / 100)
            if step % 50 == 0:
                r = {**r, "eval/factor_vae.eval_accuracy": metric * step / 100, "eval/beta_vae.eval_accuracy": higgins}
            recs.append(r)
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        Image.fromarray((rng.uniform(size=(40, 60)) * 255).astype(np.uint8)).save(d / "images" / "traversal_ref0.png")
        if t.method == "betavae" and value == 4 and t.seed == 2:
            (d / "error.txt").write_text("Traceback...\nRuntimeError: NaN loss\n")
            special["failed"] = t.id
            continue
        (d / "summary.json").write_text(json.dumps({"steps": 100, "final": recs[-1], "active_dims": [0, 1]}))
        if t.method == "factorvae" and value == 10 and t.seed == 2:
            special["trained"] = t.id  # training done, never evaluated
            continue
        (d / "eval.json").write_text(json.dumps({"factor_vae": {"eval_accuracy": metric, "train_accuracy": metric},
                                                 "beta_vae": {"eval_accuracy": higgins},
                                                 "settings": {"preset": "fast"}}))
        (d / "analysis.json").write_text(json.dumps({"eval_hash": t.eval_hash, "recon": recon, "true_tc": 1.5,
                                                     "log_px": -recon - 3, "log_px_k": 100}))
    (out / "trials" / "broken").mkdir()
    (out / "trials" / "broken" / "trial.json").write_text("{half-writ")
    special["sweep"] = sweep
    return special


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from factorvae.report import build_report

    out = tmp_path_factory.mktemp("sweep")
    special = fabricate(out)
    return out, special, build_report(out)


def test_report_is_written_with_its_images(report):
    out, special, rep = report
    html = rep["html"].read_text()
    md = rep["markdown"].read_text()
    assert rep["html"] == out / "report" / "report.html"
    assert json.loads(rep["summary"].read_text())["counts"] == rep["counts"]
    names = {p.name for p in rep["images"]}
    for expected in ("fig4_factor_vae.eval_accuracy.png", "fig4_beta_vae.eval_accuracy.png",
                     "fig5_factor_vae.eval_accuracy.png", "fig7_tc.png", "metric_correlation.png",
                     "recon_over_training.png"):
        assert expected in names
    assert sum(n.startswith("traversal_") for n in names) == 4  # best seed of each setting
    for p in rep["images"]:
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # self-contained: every image embedded, no external references
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(embedded) == len(rep["images"])
    assert all(base64.b64decode(e)[:4] == b"\x89PNG" for e in embedded)
    assert "src='img/" not in html and "http" not in html
    # markdown links point at the PNGs beside it
    links = re.findall(r"\]\((img/[^)]+)\)", md)
    assert len(links) == len(rep["images"]) and all((out / "report" / ln).exists() for ln in links)


def test_report_tables_verdict_and_problems(report):
    out, special, rep = report
    md = rep["markdown"].read_text()
    assert rep["counts"] == {"finished": 10, "failed": 1, "trained": 1, "corrupt": 1}
    groups = {g["setting"]: g for g in rep["groups"]}
    g = groups["factorvae gamma=40"]
    assert g["n"] == 3 and g["total"] == 3
    assert g["factor_vae.eval_accuracy:mean"] == pytest.approx(0.85, abs=0.04)
    assert g["recon:mean"] == pytest.approx(50, abs=2) and g["recon:std"] > 0
    assert groups["factorvae gamma=10"]["n"] == 2 and groups["betavae beta=4"]["n"] == 2
    # rivals reconstruct at most 10% worse: γ=10 (0.75 @ 42) and γ=40 (0.85 @ 50) both face β=1 (0.55 @ 40) only
    cmp_ = rep["comparison"]
    assert cmp_["wins"] == 2 and cmp_["total"] == 2
    lines = {ln["factorvae"]: ln for ln in cmp_["lines"]}
    assert lines["γ=10"]["betavae"] == "β=1" and lines["γ=40"]["betavae"] == "β=1"
    assert "beats β-VAE at similar or better reconstruction in 2 of 2" in rep["verdict"]
    for tid in (special["failed"], "broken"):
        assert tid in md
    assert "NaN loss" in md
    assert rep["correlation"]["n"] == 10 and rep["correlation"]["pearson"][0] > 0.5


def test_correlation_in_report_matches_scipy(report):
    from scipy import stats

    from factorvae.sweep import aggregate

    out, _, rep = report
    rows = [r for r in aggregate(out, write=False) if r["status"] == "finished"]
    x = [r["factor_vae.eval_accuracy"] for r in rows]
    y = [r["beta_vae.eval_accuracy"] for r in rows]
    assert rep["correlation"]["kendall"][0] == pytest.approx(stats.kendalltau(x, y)[0])
    assert rep["correlation"]["spearman"][1] == pytest.approx(stats.spearmanr(x, y)[1])


def test_report_of_a_sweep_without_results(tmp_path, cli):
    (tmp_path / "trials" / "x").mkdir(parents=True)
    (tmp_path / "trials" / "x" / "config.yaml").write_text("model: [")
    code, out, err = cli("report", tmp_path)
    assert code == 0, err
    html = (tmp_path / "report" / "report.html").read_text()
    assert "No finished trial" in html and "corrupt" in html


def test_report_cli_errors(tmp_path, cli, report):
    code, _, err = cli("report", tmp_path / "nothing")
    assert code == 2 and "not a sweep directory" in err and "Traceback" not in err
    code, _, err = cli("report", report[0], "--metric", "nope.score", "--out", tmp_path / "r")
    assert code == 2 and "not a column" in err
    code, out, err = cli("report", report[0], "--out", tmp_path / "r2")
    assert code == 0 and "FactorVAE beats" in out and (tmp_path / "r2" / "report.html").exists()


def test_report_only_reads_the_sweep(report):
    out, _, rep = report
    # the table is the sweep's to write (factorvae sweep); the report writes under report/ only
    assert not (out / "results.csv").exists() and not (out / "results.parquet").exists()
    assert rep["summary"].parent == out / "report"
