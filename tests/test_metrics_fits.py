"""Classifiers fitted once for all metrics (``Codes.fits``, ``gbt.fit_gbt``): every metric starts
from the same seeded stream (dlib's ``RandomState(seed)`` per metric), so DCI and fairness draw the
same training set, as in dlib, and their per-factor GBTs are one fit each."""

from __future__ import annotations

import numpy as np

from factorvae.metrics import downstream, gbt, suite
from factorvae.metrics.codes import Codes

SIZES = (3, 4, 5)


def small_codes() -> Codes:
    rng = np.random.default_rng(0)
    factors = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1).reshape(-1, len(SIZES))
    codes = factors + 0.3 * rng.standard_normal(factors.shape)
    return Codes.from_arrays(factors, np.c_[codes, rng.standard_normal(len(codes))], SIZES)


PARAMS = {"dci": {"num_train": 300, "num_test": 100}, "fairness": {"num_train": 300, "num_test_points_per_class": 10}}


def counting(monkeypatch) -> list:
    fits = []

    class Counted(gbt.GradientBoostedTrees):
        def fit(self, X, y):
            fits.append(len(X))
            return super().fit(X, y)

    monkeypatch.setattr(gbt, "GradientBoostedTrees", Counted)
    return fits


def test_dci_and_fairness_fit_each_factor_once(monkeypatch):
    fits = counting(monkeypatch)
    suite.evaluate(small_codes(), metrics=["dci", "fairness"], preset="fast", overrides=PARAMS)
    assert fits == [300] * len(SIZES)


def test_shared_fits_give_the_scores_of_separate_runs():
    together = suite.evaluate(small_codes(), metrics=["dci", "fairness"], preset="fast", overrides=PARAMS, seed=3)
    alone = suite.evaluate(small_codes(), metrics=["fairness"], preset="fast", overrides=PARAMS, seed=3)
    assert together["fairness"] == alone["fairness"]


def test_same_data_same_trees_other_data_other_fit():
    codes = small_codes()
    y, x = codes.sample(200, np.random.default_rng(1))
    a = gbt.fit_gbt(x, y[:, 0], codes.fits, n_estimators=5)
    assert gbt.fit_gbt(x.copy(), y[:, 0].copy(), codes.fits, n_estimators=5) is a
    b = gbt.fit_gbt(x, y[:, 0], None, n_estimators=5)  # no cache: fitted anew, the same trees
    assert b is not a and np.array_equal(b.predict(x), a.predict(x)) and np.array_equal(b._thr, a._thr)
    assert gbt.fit_gbt(x, y[:, 1], codes.fits, n_estimators=5) is not a
    assert gbt.fit_gbt(x, y[:, 0], codes.fits, n_estimators=6) is not a


def test_the_largest_boosted_tree_task_shares_dcis_fits(monkeypatch):
    """Its largest training set is drawn first, so it is DCI's draw: no fit of its own there, and
    its test accuracy is DCI's informativeness (the same classifier on the same test points)."""
    fits = counting(monkeypatch)
    params = {**PARAMS, "downstream_task_boost": {"num_train": [300, 20], "num_test": 100}}
    res = suite.evaluate(small_codes(), metrics=["dci", "downstream_task_boost", "fairness"], preset="fast",
                         overrides=params)
    assert sorted(fits) == [20] * len(SIZES) + [300] * len(SIZES)
    assert res["downstream_task_boost"]["300:mean_test_accuracy"] == res["dci"]["informativeness_test"]


def test_the_presets_draw_the_largest_training_set_first():
    for rec in (downstream.METRIC_BOOST, downstream.METRIC_LOGREG):
        for preset in rec.presets.values():
            assert preset["num_train"] == sorted(preset["num_train"], reverse=True)
    assert downstream.METRIC_BOOST.presets["dlib"]["num_train"][0] == suite.preset_params("dlib")["dci"]["num_train"]
