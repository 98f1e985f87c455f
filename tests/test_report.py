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
        # a traversal sheet as viz.tiles draws it: 3 rows (z_dim) of 8-pixel tiles, 2-pixel gaps, 44-pixel labels
        sheet = np.full((3 * 10 + 2, 44 + 10 * 10 + 2), 128, np.uint8)
        sheet[2:-2, 46:-2] = (rng.uniform(size=(28, 98)) * 255).astype(np.uint8)
        Image.fromarray(sheet).save(d / "images" / "traversal_ref0.png")
        Image.fromarray(np.zeros((20, 80), np.uint8)).save(d / "images" / "reconstructions.png")
        if t.method == "betavae" and value == 4 and t.seed == 2:
            (d / "error.txt").write_text("Traceback...\nRuntimeError: NaN loss\n")
            special["failed"] = t.id
            continue
        collapsed = t.method == "betavae" and value == 1 and t.seed == 1
        if collapsed:
            special["collapsed"] = t.id
        if t.method == "betavae" and value == 4 and t.seed == 1:
            recon *= 3  # diverged: three times its one finished peer
            special["outlier"] = t.id
        (d / "summary.json").write_text(json.dumps({"steps": 100, "final": recs[-1],
                                                    "active_dims": [] if collapsed else [0, 1]}))
        if t.method == "factorvae" and value == 10 and t.seed == 2:
            special["trained"] = t.id  # training done, never evaluated
            continue
        (d / "eval.json").write_text(json.dumps({"factor_vae": {"eval_accuracy": metric, "train_accuracy": metric,
                                                                "latent_factor": ["posX", None, "scale"]},
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
    # γ=40 (3 seeds) beats β=1 by Welch's t-test; γ=10 has 2 scored seeds: inconclusive, not a win
    cmp_ = rep["comparison"]
    assert cmp_["wins"] == 1 and cmp_["inconclusive"] == 1 and cmp_["total"] == 2
    lines = {ln["factorvae"]: ln for ln in cmp_["lines"]}
    assert lines["γ=10"]["betavae"] == "β=1" and lines["γ=40"]["betavae"] == "β=1"
    assert lines["γ=40"]["outcome"] == "beats" and lines["γ=40"]["p"] < 0.05
    assert lines["γ=10"]["outcome"] == "inconclusive" and "2 seed(s)" in lines["γ=10"]["why"]
    assert "beats β-VAE at similar or better reconstruction in 1 of 2" in rep["verdict"]
    assert "1 inconclusive (γ=10: 2 seed(s)" in rep["verdict"]
    assert "Welch's t-test (unequal variances) gives p ≥ 0.05" in md  # the rules, said beside the verdict
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


def _tree(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_report_refuses_an_out_holding_files_it_did_not_write(tmp_path, cli, report):
    sweep = report[0]
    user = tmp_path / "mine"
    (user / "img").mkdir(parents=True)
    (user / "img" / "holiday.png").write_bytes(b"not ours")
    (user / "summary.json").write_text('{"a run": 1}')
    before = _tree(user)
    code, _, err = cli("report", sweep, "--out", user)
    assert code == 2 and "did not write" in err or "holds no report" in err, err
    assert "Traceback" not in err and _tree(user) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # the sweep directory itself is not a report directory either
    trials = _tree(sweep / "trials")
    code, _, err = cli("report", sweep, "--out", sweep)
    assert code == 2 and _tree(sweep / "trials") == trials
    # a file where the directory should be
    (tmp_path / "file").write_text("x")
    code, _, err = cli("report", sweep, "--out", tmp_path / "file")
    assert code == 2 and "not a directory" in err and (tmp_path / "file").read_text() == "x"


def _quick_sweep(d: Path) -> Path:
    """A sweep directory with one corrupt trial: a report without figures, built in a blink."""
    (d / "trials" / "x").mkdir(parents=True)
    (d / "trials" / "x" / "config.yaml").write_text("model: [")
    return d


def test_report_rewrites_its_own_output_only(tmp_path, cli):
    sweep, out = _quick_sweep(tmp_path / "sweep"), tmp_path / "rep"
    assert cli("report", sweep, "--out", out)[0] == 0
    first = _tree(out)
    assert ".factorvae-report.json" in first and "report.html" in first
    listed = json.loads(first[".factorvae-report.json"])
    assert sorted(listed["files"]) == sorted(k for k in first if k != ".factorvae-report.json")
    assert listed["dirs"] == ["img"]  # empty here (no figure), still ours
    (out / "report.md").write_text("edited")  # a file of ours, edited: replaced without complaint
    code, _, err = cli("report", sweep, "--out", out)
    assert code == 0, err
    assert (out / "report.md").read_text().startswith("# Sweep report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "sweep"]  # no temporary directory left beside
    (out / "img" / "notes.txt").write_text("my notes")  # the user's now: the report stops
    code, _, err = cli("report", sweep, "--out", out)
    assert code == 2 and "img/notes.txt" in err and (out / "img" / "notes.txt").read_text() == "my notes"
    assert (out / "report.html").exists()
    # the default --out, DIR/report, follows the same rules
    assert cli("report", sweep)[0] == 0 and (sweep / "report" / ".factorvae-report.json").exists()
    (sweep / "report" / "summary.json").write_text('{"mine": 1}')
    assert cli("report", sweep)[0] == 0  # still a file the report wrote: replaced
    (sweep / "report" / "extra").mkdir()
    code, _, err = cli("report", sweep)
    assert code == 2 and "extra" in err and (sweep / "report" / "extra").is_dir()


def test_an_interrupted_report_keeps_the_previous_one(tmp_path, monkeypatch):
    from factorvae.report import build, build_report

    sweep, out = _quick_sweep(tmp_path / "sweep"), tmp_path / "rep"
    build_report(sweep, out)
    before = _tree(out)

    def boom(rep, n):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_traversals", boom)
    with pytest.raises(KeyboardInterrupt):
        build_report(sweep, out)
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["rep", "sweep"]


def test_markdown_escapes_html_from_names_and_labels(tmp_path):
    from factorvae.report import build_report

    spec = json.loads(json.dumps(SPEC))
    spec["name"] = "<script>alert(1)</script>"
    spec["description"] = "<img src=x onerror=alert(2)> | pipe"
    spec["methods"][0]["label"] = "<b onmouseover=alert(3)>beta</b>"
    (tmp_path / "trials").mkdir()
    (tmp_path / "sweep.json").write_text(json.dumps({"name": spec["name"], "description": spec["description"],
                                                     "spec": spec}))
    rep = build_report(tmp_path)
    md, page = rep["markdown"].read_text(), rep["html"].read_text()
    for raw in ("<script", "<img src=x", "<b onmouseover"):
        assert raw not in md and raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "&lt;img src=x onerror=alert(2)&gt;" in md
    assert "&lt;b onmouseover=alert(3)&gt;beta" in md  # the label of every pending β-VAE trial


def test_failed_collapsed_and_diverged_trials_are_flagged(report):
    out, special, rep = report
    flags = rep["flags"]
    assert set(flags) == {special["failed"], special["collapsed"], special["outlier"]}
    assert "NaN loss" in flags[special["failed"]][0]
    assert "0 active dims" in flags[special["collapsed"]][0]
    assert "3.0× the median" in flags[special["outlier"]][0]
    md = rep["markdown"].read_text()
    assert "3 trial(s) flagged" in md
    trials = md.split("## All trials")[1]
    for tid in flags:  # its own line in "All trials" says why
        line = next(ln for ln in trials.splitlines() if ln.startswith(f"| {tid} |"))
        assert line.rstrip(" |").endswith(flags[tid][-1][-20:])
    groups = {g["setting"]: g for g in rep["groups"]}
    assert groups["betavae beta=4"]["flagged"] == 1 and groups["factorvae gamma=40"]["flagged"] == 0
    assert "| betavae | β=4 | 2/3 (1 flagged) |" in md


def test_recon_outlier_rule():
    from factorvae.report.stats import RECON_OUTLIER, flag_trials

    def rows(recons):
        return [{"trial_id": f"t{i}", "setting": "s", "status": "finished", "recon": r, "active_dims": 2}
                for i, r in enumerate(recons)]

    assert flag_trials(rows([40, 41, 39 * RECON_OUTLIER * 0.99])) == {}
    assert set(flag_trials(rows([40, 41, 41 * RECON_OUTLIER * 1.01]))) == {"t2"}
    assert flag_trials(rows([40])) == {}  # no peer, no outlier


def test_hyperparameters_verdict_colour_and_readable_columns(report):
    out, special, rep = report
    md, page = rep["markdown"].read_text(), rep["html"].read_text()
    section = md.split("## Hyper-parameters of each setting")[1].split("\n## ")[0]
    header = section.strip().splitlines()[0]
    for key in ("model.beta", "model.gamma", "model.disc.hidden"):  # differ between settings
        assert key in header
    assert "model.z_dim" not in header and "model.z_dim=3" in section  # shared: said once
    assert "train.seed" not in section
    cells = {ln.split("|")[2].strip(): ln for ln in section.splitlines() if ln.startswith("| factorvae")}
    assert set(cells) == {"γ=10", "γ=40"} and "| 40 |" in cells["γ=40"]
    # one FactorVAE setting beats its rival, the other is inconclusive (2 seeds): amber, "Partly"
    assert "<p class='verdict mixed'>Partly: FactorVAE beats" in page
    assert "> Partly: FactorVAE beats" in md
    trials = md.split("## All trials")[1].strip().splitlines()[0]
    assert "FactorVAE metric" in trials and "reconstruction error (nats)" in trials and "setting" in trials
    assert not re.search(r"\w\.\w", trials)  # no dotted column names


def test_traversals_are_labelled_with_factors_and_reconstructions_shown(report):
    out, special, rep = report
    md = rep["markdown"].read_text()
    trav = [p for p in rep["images"] if p.name.startswith("traversal_")]
    recons = [p for p in rep["images"] if p.name.startswith("reconstructions_")]
    assert len(trav) == 4 and len(recons) == 4
    src = Image.open(out / "trials" / special["collapsed"] / "images" / "traversal_ref0.png")
    for p in trav:
        img = np.asarray(Image.open(p).convert("L"))
        assert img.shape[0] == src.height and img.shape[1] > src.width  # a margin for the labels
        margin = img[:, src.width:]
        written = [(margin[2 + r * 10: 10 + r * 10] > 200).any() for r in range(3)]
        assert written == [True, True, True]  # posX, "-", scale
        # no factor: a plain hyphen, a short flat mark (the bitmap font draws a missing-glyph box for "–")
        ink = np.nonzero((margin[12:20] > 200).any(axis=1))[0]
        assert ink.max() - ink.min() <= 2, ink
    assert "z0 posX, z1 –, z2 scale" in md and "majority vote" in md


def test_verdict_colour_follows_the_answer():
    from factorvae.report.build import verdict_answer
    from factorvae.report.document import Doc

    assert [verdict_answer({"wins": w, "total": 3}) for w in (3, 1, 0)] == ["yes", "mixed", "no"]
    assert verdict_answer({"wins": 0, "total": 2, "inconclusive": 2}) == "inconclusive"
    assert verdict_answer({"wins": 0, "total": 2, "inconclusive": 1}) == "mixed"  # one loses, one open
    doc = Doc()
    doc.p("No: ...", "verdict no")
    page = doc.html("t")
    assert "<p class='verdict no'>" in page and ".verdict.no{background:#fbe9e9" in page
