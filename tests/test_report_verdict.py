"""The report's verdict follows the evidence (issue 24): inconclusive with fewer than three seeds,
within the seeds' spread (Welch's t-test) or on a score from zero active dimensions; an
unscorable metric reads "n/a (reason)", never 0; each phase of a trial has its own time column."""

from __future__ import annotations

import json

import pytest

from factorvae.report.stats import ALPHA, MIN_SEEDS, compare_methods, judge
from test_report import fabricate


def group(method, label, values, recon=50.0, zero=0, unscorable=()):
    import numpy as np

    v = np.array(values, dtype=float)
    return {"method": method, "label": label, "n": len(v) + len(unscorable), "total": len(v),
            "x:mean": float(v.mean()) if len(v) else None, "x:std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "x:n": len(v), "x:unscorable": list(unscorable), "recon:mean": recon, "zero_active_metric_dims": zero}


def test_judge_needs_seeds_a_clear_difference_and_real_scores():
    f = group("factorvae", "γ=40", [0.80, 0.82, 0.84])
    b = group("betavae", "β=4", [0.60, 0.62, 0.64])
    assert judge(f, b, "x", True)[0] == "beats" and judge(b, f, "x", True)[0] == "loses"
    two = group("factorvae", "γ=40", [0.80, 0.82])
    assert judge(two, b, "x", True)[:2] == ("inconclusive", f"2 seed(s) with a score; the verdict needs {MIN_SEEDS}")
    close = group("factorvae", "γ=40", [0.55, 0.65, 0.70])  # overlaps β-VAE's seeds
    outcome, why, p = judge(close, b, "x", True)
    assert outcome == "inconclusive" and "Welch's t-test" in why and p >= ALPHA
    na = group("betavae", "β=4", [0.60, 0.62, 0.64], unscorable=["no active dimensions"])
    assert judge(f, na, "x", True)[0] == "inconclusive" and "β=4" in judge(f, na, "x", True)[1]
    # the FactorVAE metric from zero active dims (an older eval.json stored 0.0 for it): not a loss
    key = "factor_vae.eval_accuracy"
    f_fv = {k.replace("x:", f"{key}:"): v for k, v in f.items()}
    zero = {k.replace("x:", f"{key}:"): v for k, v in group("betavae", "β=4", [0.0, 0.0, 0.0], zero=3).items()}
    assert judge(f_fv, zero, key, True)[0] == "inconclusive"
    assert judge(f_fv, {**zero, "zero_active_metric_dims": 0}, key, True)[0] == "beats"


def test_one_seed_is_never_a_yes():
    cmp_ = compare_methods([group("factorvae", "γ=40", [0.8]), group("betavae", "β=4", [0.1])], "x")
    assert cmp_["wins"] == 0 and cmp_["inconclusive"] == 1
    assert "0 of 1" in cmp_["verdict"] and "1 seed(s)" in cmp_["verdict"]


@pytest.fixture(scope="module")
def unscorable_report(tmp_path_factory):
    """The fabricated sweep of test_report, with the FactorVAE metric unscorable for every β-VAE trial."""
    from factorvae.report import build_report

    out = tmp_path_factory.mktemp("sweep")
    fabricate(out)
    for ev_path in (out / "trials").glob("betavae-*/eval.json"):
        ev = json.loads(ev_path.read_text())
        ev["factor_vae"] = {"eval_accuracy": None, "train_accuracy": None, "num_active_dims": 0,
                            "unscorable": "no active dimensions: every latent's std is below 0.05"}
        ev_path.write_text(json.dumps(ev))
    return out, build_report(out)


def test_unscorable_reads_n_a_and_makes_the_verdict_inconclusive(unscorable_report):
    out, rep = unscorable_report
    md, page = rep["markdown"].read_text(), rep["html"].read_text()
    assert rep["comparison"] is None  # no β-VAE setting has a FactorVAE metric to compare
    assert "<p class='verdict inconclusive'>Inconclusive: FactorVAE metric could not score" in page
    assert "Welch's t-test (unequal variances) gives p ≥ 0.05" in md  # the rules, said beside the verdict
    settings = md.split("## Results per setting")[1].split("\n## ")[0]
    beta = [ln for ln in settings.splitlines() if ln.startswith("| betavae")]
    assert beta and all("n/a (no active dimensions" in ln for ln in beta)
    assert all("| 0.000" not in ln for ln in beta)
    trials = md.split("## All trials")[1]
    assert "n/a (no active dimensions" in trials
    head = trials.strip().splitlines()[0]
    assert "train (s)" in head and "metrics (s)" in head and "analyses (s)" in head
    assert "training time" not in head
