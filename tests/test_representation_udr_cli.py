"""`--representation mean|sampled|both` on `encode` and `eval`, and `factorvae udr` on runs
and on .npz files; bad input is one line, exit status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_encode_export import train_toy_run

PARITY = Path(__file__).parent / "fixtures" / "parity"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A 4-step FactorVAE on the toy discs (3,072 grid points)."""
    return train_toy_run(tmp_path_factory.mktemp("runs") / "toy")


def test_encode_both_holds_means_and_draws(cli, toy_run, tmp_path):
    code, _, err = cli("encode", toy_run, "--out", tmp_path / "m.npz", "--points", "300", "--no-progress")
    assert code == 0, err
    code, _, err = cli("encode", toy_run, "--out", tmp_path / "b.npz", "--points", "300", "--representation", "both",
                       "--no-progress")
    assert code == 0, err
    m, b = np.load(tmp_path / "m.npz"), np.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(m["factors"], b["factors"])
    np.testing.assert_allclose(b["codes"], m["codes"], rtol=1e-5, atol=1e-6)
    diff = b["codes_sampled"] - b["codes"]
    assert diff.std() > 0.05  # a 4-step model's posterior std is near 1: draws differ from means
    code, _, err = cli("encode", toy_run, "--out", tmp_path / "x.npz", "--representation", "mode")
    assert code == 2 and "unknown representation 'mode'" in err and not (tmp_path / "x.npz").exists()


def test_eval_both_writes_sampled_scores(cli, toy_run):
    code, out, err = cli("eval", toy_run, "--metrics", "mig", "--preset", "fast", "--representation", "both",
                         "--no-progress")
    assert code == 0, err
    result = json.loads((toy_run / "eval.json").read_text())
    assert result["settings"]["representation"] == "both"
    assert result["sampled"]["mig"]["discrete_mig"] != result["mig"]["discrete_mig"]
    assert result["encoder"]["distinct_points"] <= 3072


def test_udr_of_runs(cli, toy_run, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(toy_run, twin, ignore=shutil.ignore_patterns(".lock"))
    code, out, err = cli("udr", toy_run, twin, "--points", "200", "--json")
    assert code == 0, err
    r = json.loads(out)
    for corr in ("udr_lasso", "udr_spearman"):
        assert len(r[corr]["model_scores"]) == 2
        # identical models agree with each other as much as UDR allows
        assert r[corr]["model_scores"][0] == pytest.approx(r[corr]["model_scores"][1])


def test_udr_npz_table_and_errors(cli, tmp_path):
    code, out, err = cli("udr", PARITY / "udr_i_perfect.npz", "--correlation", "lasso")
    assert code == 0, err
    rows = dict(line.split() for line in out.strip().splitlines()[1:])
    assert float(rows["codes"]) > 0.2 and float(rows["noise"]) < 0.05
    code, out, err = cli("udr", PARITY / "i_perfect.npz", PARITY / "ii_rotated.npz", "--out", tmp_path / "u.json")
    assert code == 0, err and (tmp_path / "u.json").exists()
    for args, message in [((PARITY / "i_perfect.npz",), "UDR needs at least two models"),
                          ((PARITY / "udr_i_perfect.npz", "--correlation", "pearson"), "--correlation must be"),
                          ((PARITY / "udr_i_perfect.npz", "--points", "1"), "--points must be >= 2"),
                          ((PARITY / "udr_i_perfect.npz", tmp_path), "either runs or .npz")]:
        code, out, err = cli("udr", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
