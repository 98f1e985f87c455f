"""Codes of a random sample of grid points: which metrics they serve, disjoint train/test
draws, agreement with the full grid, the message for metrics that fix a factor; and
`describe`, what an evaluation will do before it starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from factorvae.data.grid import FactorGrid
from factorvae.errors import UserError
from factorvae.metrics import plan, suite
from factorvae.metrics.api import choose_points
from factorvae.metrics.codes import Codes

PARITY = Path(__file__).parent / "fixtures" / "parity"


def parity(name):
    d = np.load(PARITY / f"{name}.npz")
    return d["factors"], d["codes"], d["sizes"]


def test_from_points_tells_a_complete_grid_from_a_sample():
    f, z, s = parity("i_perfect")
    assert not Codes.from_points(f[::-1], z[::-1], s).is_sample
    assert Codes.from_points(f[1:], z[1:], s).is_sample
    dup = np.concatenate([f, f[:3]]), np.concatenate([z, z[:3]])
    assert Codes.from_points(*dup, s).num_points == len(f) + 3  # repeats are allowed in a sample
    with pytest.raises(UserError, match="at least 2"):
        Codes.from_sample(f[:1], z[:1], s)
    with pytest.raises(UserError, match="NaN"):
        Codes.from_points(f[:5], np.full((5, 5), np.nan), s)


def test_sample_split_never_shares_a_row_and_shrinks_in_proportion():
    grid = FactorGrid(("a", "b"), (10, 10))
    rng = np.random.default_rng(0)
    factors = grid.sample(600, rng)
    ids = np.arange(600, dtype=float)[:, None]  # the code is the row id
    c = Codes.from_sample(factors, ids, grid.sizes)
    (ytr, ztr), (yte, zte) = c.sample_split(300, 200, rng)
    assert len(ztr) == 300 and len(zte) == 200 and not set(ztr[:, 0]) & set(zte[:, 0])
    assert len(set(ztr[:, 0])) == 300  # without replacement
    np.testing.assert_array_equal(ytr, factors[ztr[:, 0].astype(int)])
    (_, ztr), (_, zte) = c.sample_split(800, 400, rng)
    assert (len(ztr), len(zte)) == (400, 200) and not set(ztr[:, 0]) & set(zte[:, 0])
    assert c.draws[-1] == {"asked": [800, 400], "got": [400, 200]}
    _, z = c.sample(1000, rng)
    assert sorted(z[:, 0]) == list(range(600))


def test_grid_codes_keep_their_draws():
    """A complete table still draws train and test independently (dlib; the parity values)."""
    f, z, s = parity("ii_rotated")
    c = Codes.from_arrays(f, z, s)
    a, b = c.sample_split(100, 50, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(a[0], c.sample(100, rng)[0])
    np.testing.assert_array_equal(b[0], c.sample(50, rng)[0])


def test_a_sample_scores_like_the_full_grid():
    """MIG and modularity of the rotated parity codes from 6,000 random points agree with the
    scores from the whole grid (11,520 points) within sampling noise."""
    f, z, s = parity("ii_rotated")
    pick = np.random.default_rng(1).choice(len(f), 6000, replace=False)
    kw = dict(metrics="mig,modularity_explicitness", preset="fast",
              overrides={"mig": {"num_train": 5000}, "modularity_explicitness": {"num_train": 4000, "num_test": 2000}})
    full = suite.evaluate(Codes.from_arrays(f, z, s), **kw)
    part = suite.evaluate(Codes.from_sample(f[pick], z[pick], s), **kw)
    assert part["mig"]["discrete_mig"] == pytest.approx(full["mig"]["discrete_mig"], abs=0.02)
    for key in ("modularity_score", "explicitness_score_test"):
        assert part["modularity_explicitness"][key] == pytest.approx(full["modularity_explicitness"][key], abs=0.02)
    assert part["settings"]["sample"] == {"points": 6000, "skipped": [], "short": {}, "missing_classes": {}}
    # and the sample still tells perfect codes from noise
    noise = suite.evaluate(Codes.from_sample(*parity("iv_noise")[:2], s), metrics="mig", preset="fast")
    assert noise["mig"]["discrete_mig"] < 0.05 < part["mig"]["discrete_mig"]


def test_metrics_that_fix_a_factor_refuse_a_sample_with_a_pointer():
    f, z, s = parity("i_perfect")
    c = Codes.from_sample(f[:500], z[:500], s)
    for m in ("factor_vae", "beta_vae"):
        with pytest.raises(UserError, match=rf"{m} fixes one factor.*factorvae.evaluate\(model="):
            suite.evaluate(c, metrics=["mig", m])
    with pytest.raises(UserError, match="cannot give them"):
        c.get(f[:2])
    r = suite.evaluate(c, metrics=None, preset="fast", overrides={"dci": {"n_estimators": 2}})
    assert [m for m in suite.METRICS if m in r] == ["mig", "dci", "sap", "modularity_explicitness"]
    assert r["settings"]["sample"]["skipped"] == ["factor_vae", "beta_vae"]
    lines = suite.sample_warnings(r)
    assert any(line.startswith("skipped factor_vae, beta_vae") for line in lines)
    assert any(line.startswith("mig: the sample has 500 points") for line in lines)


def test_a_sample_missing_classes_is_flagged():
    f, z, s = parity("i_perfect")
    keep = f[:, 0] != 2  # a sample that never shows class 2 of factor0: not uniform
    r = suite.evaluate(Codes.from_sample(f[keep], z[keep], s), metrics="mig", preset="fast")
    assert r["settings"]["sample"]["missing_classes"] == {"factor0": 1}
    assert any("never shows 1 class(es) of factor0" in line for line in suite.sample_warnings(r))


def test_choose_points():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(choose_points(50, None, rng), np.arange(50))
    np.testing.assert_array_equal(choose_points(50, 80, rng), np.arange(50))
    big = choose_points(2_000_000, None, rng)
    assert len(big) == 100_000 and len(np.unique(big)) == 100_000 and big.max() < 2_000_000
    with pytest.raises(UserError, match=">= 2"):
        choose_points(50, 1, rng)


# -- describe ---------------------------------------------------------------------------------------

def test_describe_counts_draws_and_images_to_encode():
    grid = FactorGrid(("shape", "scale", "orientation", "posX", "posY"), (3, 6, 40, 32, 32))
    d = plan.describe("fast", grid=grid)
    assert d["metrics"] == list(suite.DEFAULT_METRICS)
    assert d["draws"]["factor_vae"] == 5000 + (500 + 500) * 64 and d["draws"]["beta_vae"] == 2 * 500 * 64
    assert d["draws"]["dci"] == 3000 and d["draws"]["mig"] == 5000
    assert 0 < d["images_to_encode"] < min(len(grid), sum(d["draws"].values()))
    dlib = plan.describe("dlib", grid=grid)
    assert dlib["images_to_encode"] > d["images_to_encode"]
    assert plan.describe("fast", metrics="mig", grid=grid)["draws"] == {"mig": 5000}
    # dSprites is where the figures were measured: the scaling reproduces them there
    assert dlib["expected_memory_mb"] == plan.MEASURED["presets"]["dlib"]["peak_memory_mb"]
    assert dlib["expected_seconds"] > d["expected_seconds"] > 0
    assert plan.describe("fast", grid=grid, channels=3)["expected_memory_mb"] > d["expected_memory_mb"]
    f, z, s = parity("i_perfect")
    on_codes = plan.describe("fast", codes=Codes.from_sample(f[:900], z[:900], s))
    assert on_codes["images_to_encode"] == 0 and "factor_vae" not in on_codes["metrics"]
    with pytest.raises(UserError, match="unknown preset"):
        plan.describe("slow", grid=grid)


def test_describe_predicts_the_images_an_evaluation_encodes(monkeypatch):
    """The expected number of distinct grid points among the draws is what the Codes cache
    actually encodes (within 3%)."""
    grid = FactorGrid(("a", "b", "c"), (8, 10, 12))
    params = suite.preset_params("fast")
    params["factor_vae"].update(num_train=20, num_eval=20, batch_size=10, num_variance_estimate=300)
    params["beta_vae"].update(num_train=20, num_eval=10, batch_size=4)
    monkeypatch.setitem(suite.PRESETS, "small", params)
    metrics = "factor_vae,beta_vae,mig"
    expected = plan.describe("small", metrics=metrics, grid=grid)["images_to_encode"]
    codes = Codes.from_encoder(lambda x: x.flatten(1)[:, :3] + torch.randn(len(x), 3),
                               lambda i: torch.rand(len(i), 1, 64, 64), grid, progress=False)
    suite.evaluate(codes, preset="small", metrics=metrics)
    assert 0 < expected < len(grid)
    assert codes.num_encoded == pytest.approx(expected, rel=0.03)


def test_format_plan_is_one_line():
    grid = FactorGrid(("a", "b"), (30, 40))
    line = plan.format_plan(plan.describe("fast", grid=grid))
    assert "\n" not in line and line.startswith("preset fast: factor_vae") and "grid images to encode" in line


def test_metrics_dry_run_says_what_it_would_do_and_scores_nothing(cli):
    code, out, err = cli("metrics", PARITY / "i_perfect.npz", "--preset", "fast", "--dry-run")
    assert code == 0 and out == ""
    assert "codes of every grid point; preset fast: factor_vae, beta_vae, mig, dci, sap, modularity_explicitness" in err
