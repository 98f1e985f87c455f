"""`factorvae metrics` and `factorvae eval` end to end: JSON and table output, eval.json, the
cache at work on a real model, `train --eval-every`, and every bad input (one message on
stderr, exit status 2, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from factorvae.metrics import suite

PARITY = Path(__file__).parent / "fixtures" / "parity"
QUICK = ["--preset", "fast", "--set", "factor_vae.num_train=200", "--set", "factor_vae.num_eval=200",
         "--set", "mig.num_train=2000"]


def test_metrics_json_has_dlib_keys_settings_and_seconds(cli, tmp_path):
    code, out, err = cli("metrics", PARITY / "iii_absent.npz", "--metrics", "factor_vae,mig,sap", *QUICK,
                         "--seed", "3", "--json", "--out", tmp_path / "r.json")
    assert code == 0, err
    r = json.loads(out)
    assert json.loads((tmp_path / "r.json").read_text()) == r
    assert set(r) == {"factor_vae", "mig", "sap", "settings", "seconds"}
    assert {"train_accuracy", "eval_accuracy", "num_active_dims", "votes_train", "latent_factor",
            "factor_latents"} <= set(r["factor_vae"])
    assert r["factor_vae"]["num_active_dims"] == 4 and r["factor_vae"]["factor_latents"]["factor4"] == []
    assert "discrete_mig" in r["mig"] and "SAP_score" in r["sap"]
    s = r["settings"]
    assert s["preset"] == "fast" and s["seed"] == 3 and s["params"]["factor_vae"]["num_train"] == 200
    assert s["factors"] == [f"factor{k}" for k in range(5)] and s["num_codes"] == 4
    assert all(r["seconds"][m] >= 0 for m in ("factor_vae", "mig", "sap", "total"))


def test_metrics_table(cli):
    code, out, err = cli("metrics", PARITY / "i_perfect.npz", "--metrics", "factor_vae", *QUICK)
    assert code == 0, err
    assert "factor_vae.eval_accuracy" in out and "1.0000" in out and "z0:factor0" in out


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def parity_arrays():
    d = np.load(PARITY / "ii_rotated.npz")
    return {k: d[k].copy() for k in ("factors", "codes", "sizes")}


def bad_inputs(tmp_path):
    a = parity_arrays()
    cases = {}
    cases["lengths"] = (write_npz(tmp_path / "len.npz", factors=a["factors"], codes=a["codes"][:-3],
                                  sizes=a["sizes"]), "has 11517 rows but 'factors' has 11520")
    nan = a["codes"].copy()
    nan[10, 2] = np.nan
    cases["nan"] = (write_npz(tmp_path / "nan.npz", factors=a["factors"], codes=nan, sizes=a["sizes"]),
                    "NaN values")
    inf = a["codes"].copy()
    inf[7, 0] = -np.inf
    cases["inf"] = (write_npz(tmp_path / "inf.npz", factors=a["factors"], codes=inf, sizes=a["sizes"]),
                    "infinite values")
    cases["keys"] = (write_npz(tmp_path / "keys.npz", factors=a["factors"], z=a["codes"]), "missing key(s) codes, sizes")
    (tmp_path / "text.npz").write_text("not a zip file")
    cases["not_npz"] = (tmp_path / "text.npz", "not a readable .npz")
    cases["missing"] = (tmp_path / "nowhere.npz", "file not found")
    return cases


@pytest.mark.parametrize("case", ["lengths", "nan", "inf", "keys", "not_npz", "missing"])
def test_bad_grid_files(cli, tmp_path, case):
    path, message = bad_inputs(tmp_path)[case]
    code, out, err = cli("metrics", path)
    assert code == 2 and out == ""
    assert message in err and err.startswith("factorvae metrics: error:") and "Traceback" not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("rows", ["incomplete", "duplicated"])
def test_rows_that_are_not_the_whole_grid_are_a_sample(cli, tmp_path, rows):
    """Not every grid point exactly once: a random sample (MIG, DCI, SAP, modularity), and the
    FactorVAE metric, which needs chosen points, says how to get it."""
    a = parity_arrays()
    factors, codes = a["factors"][1:], a["codes"][1:]
    if rows == "duplicated":
        factors, codes = a["factors"].copy(), a["codes"]
        factors[5] = factors[6]
    path = write_npz(tmp_path / "s.npz", factors=factors, codes=codes, sizes=a["sizes"])
    code, out, err = cli("metrics", path, "--metrics", "factor_vae")
    assert code == 2 and out == "" and f"a random sample of {len(factors)} points" in err
    code, out, err = cli("metrics", path, "--metrics", "mig", "--preset", "fast", "--json")
    assert code == 0 and json.loads(out)["settings"]["sample"]["points"] == len(factors)


@pytest.mark.parametrize("args, message", [
    (["--metrics", "mig,fvae"], "unknown metric 'fvae'"),
    (["--preset", "slow"], "unknown preset 'slow'"),
    (["--seed", "x"], "--seed must be a whole number"),
    (["--set", "mig.num_bin=3"], "mig has no parameter 'num_bin'"),
    (["--set", "factor_vae.batch_size=1"], "batch_size (L) must be >= 2"),
])
def test_bad_options(cli, args, message):
    code, out, err = cli("metrics", PARITY / "i_perfect.npz", *args)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_eval_of_a_missing_run_is_a_user_error(cli, tmp_path):
    code, out, err = cli("eval", tmp_path / "nothing")
    assert code == 2 and "is not a run directory" in err and "Traceback" not in err
    code, out, err = cli("eval", tmp_path / "nothing", "--metrics", "bogus")
    assert code == 2 and "unknown metric 'bogus'" in err


# -- a trained run ------------------------------------------------------------------------------

TINY = {  # a preset small enough for a test: every metric, a few hundred points
    "factor_vae": {"batch_size": 8, "num_train": 30, "num_eval": 30, "num_variance_estimate": 300,
                   "prune_threshold": 0.05},
    "beta_vae": {"batch_size": 4, "num_train": 60, "num_eval": 30},
    "mig": {"num_train": 300, "num_bins": 20},
    "dci": {"num_train": 200, "num_test": 100, "n_estimators": 3},
    "sap": {"num_train": 200, "num_test": 100, "continuous_factors": False},
    "modularity_explicitness": {"num_train": 200, "num_test": 100, "num_bins": 20},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, dsprites_data):
    """20 FactorVAE steps, scored at steps 10 and 20 by ``--eval-every`` with a tiny preset."""
    from factorvae.cli import main

    out = tmp_path_factory.mktemp("runs") / "fvae"
    mp = pytest.MonkeyPatch()
    mp.setitem(suite.PRESETS, "tiny", TINY)  # for the module: the run's config names it
    try:
        code = main(["train", "--model", "factorvae", "--steps", "20", "--seed", "2", "--out", str(out),
                     "--no-progress", "--eval-every", "10", "--set", "train.eval_preset=tiny",
                     "--set", "model.disc.hidden=64", "--set", "model.disc.layers=2",
                     "--set", "train.log_every=10", "--set", "train.image_every=1000"])
        assert code == 0
        yield out
    finally:
        mp.undo()


def test_train_eval_every_logs_scores(tiny_run):
    recs = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if "eval/mig.discrete_mig" in r]
    assert [r["step"] for r in evals] == [10, 20]
    for r in evals:
        for key in ("eval/beta_vae.eval_accuracy", "eval/mig.discrete_mig",
                    "eval/dci.disentanglement", "eval/sap.SAP_score", "eval/modularity_explicitness.modularity_score"):
            assert 0.0 <= r[key] <= 1.0, key
        # after 20 steps no latent mean may move yet: then the FactorVAE metric is unscorable and
        # left out of the log (never logged as 0); its active-dims count is logged either way
        assert r["eval/factor_vae.num_active_dims"] > 0 or "eval/factor_vae.eval_accuracy" not in r
        assert 0.0 < r.get("eval/factor_vae.eval_accuracy", 1.0) <= 1.0


def test_train_eval_metrics_scores_only_those(tmp_path, dsprites_data, monkeypatch):
    """train.eval_metrics restricts the Fig. 5 evaluation (the others cost minutes per point)."""
    from factorvae.cli import main

    monkeypatch.setitem(suite.PRESETS, "tiny", TINY)
    out = tmp_path / "r"
    code = main(["train", "--model", "betavae", "--steps", "6", "--out", str(out), "--no-progress",
                 "--eval-every", "3", "--set", "train.eval_preset=tiny", "--set", "train.eval_metrics=mig,factor_vae",
                 "--set", "train.log_every=3", "--set", "train.image_every=1000"])
    assert code == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["eval_metrics"] == ["factor_vae", "mig"]  # canonical order
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in evals] == [3, 6]
    for r in evals:
        metrics = {k.split("/")[1].split(".")[0] for k in r if k.startswith("eval/")}
        assert metrics == {"factor_vae", "mig"}


def test_eval_writes_eval_json_and_encodes_each_point_once(tiny_run, cli):
    code, out, err = cli("eval", tiny_run, "--metrics", "factor_vae,mig", *QUICK, "--set", "factor_vae.batch_size=16",
                         "--set", "factor_vae.num_variance_estimate=1000", "--no-progress", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert json.loads((tiny_run / "eval.json").read_text()) == r
    assert not list(tiny_run.glob(".eval.json.*"))  # no temp file left behind
    assert r["run"]["step"] == 20 and r["run"]["model"] == "factorvae"
    assert r["settings"]["factors"] == ["shape", "scale", "orientation", "posX", "posY"]
    assert r["settings"]["dropped_factors"] == ["color"]
    enc = r["encoder"]
    requested = 1000 + (200 + 200) * 16 + 2000
    assert enc["images_encoded"] == enc["distinct_points"] <= requested
    fv = r["factor_vae"]
    assert (0.0 < fv["eval_accuracy"] <= 1.0) if fv["num_active_dims"] else fv["eval_accuracy"] is None
    assert len(fv["latent_factor"]) == 10
    code, out, err = cli("eval", tiny_run, "--metrics", "mig", *QUICK, "--no-progress")
    assert code == 0 and "mig.discrete_mig" in out and "eval.json" in out
