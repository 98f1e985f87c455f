"""The extension metrics' keys are disentanglement_lib's, and their small pieces compute what
their papers define (fairness' total variation, the UDR relative strength, the records)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from factorvae.metrics import downstream, fairness, irs, reduced_downstream, strong_downstream, unsupervised
from factorvae.metrics.udr import relative_strength
from test_metrics_ext_parity import codes, reference

RECORDS = [irs.METRIC, unsupervised.METRIC, downstream.METRIC_LOGREG, downstream.METRIC_BOOST, fairness.METRIC,
           strong_downstream.METRIC, reduced_downstream.METRIC]


def test_downstream_and_fairness_key_names_are_dlibs():
    ref = set(reference("i_perfect", "downstream_task_logreg"))
    ours = set()
    for n in (10, 100, 1000, 10000):
        ours |= set(downstream.accuracy_scores(str(n), np.ones(5), np.ones(5)))
    assert ours == ref == set(reference("i_perfect", "downstream_task_boost"))
    m = np.random.default_rng(0).random((5, 5))
    ours = set(fairness.scores_dict(m, "mean_fairness")) | set(fairness.scores_dict(m, "max_fairness"))
    assert ours == set(reference("i_perfect", "fairness"))


def small_perfect(sizes=(3, 4, 5)):
    """Codes of a small grid: one dim per factor, its class (no noise: on a finite grid noise
    would identify each grid point, and trees would memorise the removed factor through it)."""
    from factorvae.data.grid import FactorGrid
    from factorvae.metrics.codes import Codes

    grid = FactorGrid(tuple(f"f{k}" for k in range(len(sizes))), sizes)
    f = grid.all_classes()
    return Codes.from_arrays(f, f.astype(float), sizes)


def test_reduced_task_keys_are_dlibs_and_removal_hides_the_factor():
    r = reduced_downstream.reduced_downstream_task(small_perfect(), np.random.default_rng(0), num_train=[100],
                                                   num_test=100, num_factors_to_remove=1)
    keys = {k for k in reference("i_perfect", "reduced_downstream_task")
            if not any(f"_{k5}" in k.split(":", 1)[1] for k5 in ("factor_3", "factor_4"))}
    assert set(r) == keys  # dlib's names, for 3 factors
    # one dim per factor: removing it leaves the factor near chance, the others intact
    assert r["100:mean_test_accuracy_reduced_factor"] < 0.5 < 0.9 < r["100:mean_test_accuracy_other_factors"]


def test_fairness_aggregates_as_dlib():
    m = np.arange(25, dtype=float).reshape(5, 5)
    s = fairness.scores_dict(m, "p")
    off = m[~np.eye(5, dtype=bool)].reshape(5, 4)  # row i without the diagonal
    assert s["p:pred1:sens0"] == 5 and s["p:pred2:mean_sens"] == pytest.approx(off[2].mean())
    assert s["p:mean_pred:mean_sens"] == pytest.approx(off.mean())
    assert s["p:max_pred:max_sens"] == 23 and s["p:sens0:max_pred"] == 20


def test_inter_group_fairness_is_total_variation():
    same = np.array([[5, 5, 5], [5, 5, 5]])  # predictions independent of the sensitive class
    assert fairness.inter_group_fairness(same) == (0.0, 0.0)
    split = np.array([[10, 0], [0, 30]])  # the prediction is the sensitive class
    mean, mx = fairness.inter_group_fairness(split)
    # pooled (0.25, 0.75); TV of column 0: 0.75, of column 1: 0.25; weighted by 10 and 30
    assert mx == pytest.approx(0.75) and mean == pytest.approx((0.75 * 10 + 0.25 * 30) / 40)


def test_relative_strength():
    assert relative_strength(np.eye(4)) == 1.0  # one-to-one: each dim matches one dim
    assert relative_strength(np.ones((4, 4))) == pytest.approx(0.25)  # every dim matches every dim
    assert relative_strength(np.diag([1.0, 1.0, 0.0])) == pytest.approx(2 / 3)  # an all-zero row/column: 0
    assert relative_strength(np.zeros((0, 3))) == 0.0


def test_strong_task_perfect_codes_generalise():
    """Perfect codes: holding another factor fixed in training does not hurt (gap ~ 0)."""
    r = strong_downstream.strong_downstream_task(codes("i_perfect"), np.random.default_rng(0), num_train=[200],
                                                 num_test=200, n_experiment=1)
    assert set(r) == {k.replace("1000:", "200:") for k in reference("i_perfect", "strong_downstream_task")}
    assert r["200:mean_test_accuracy"] > 0.95 and abs(r["200:strong_generalization_gap"]) < 0.05


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_records_are_complete_and_off_by_default(record):
    assert not record.default
    for preset in ("dlib", "paper", "fast"):
        assert record.draws(record.presets[preset], 11520) > 0
    assert record.headline in record.keys


def test_logistic_regression_notes_stay_silent_with_threads():
    """LogisticRegressionCV's convergence notes on unscaled codes are silenced for every factor,
    also when the factors are fitted on threads (catch_warnings inside each thread let them out)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, (400, 8))
    x = np.c_[rng.standard_normal((400, 6)) * 1e3, y[:, :2] + rng.standard_normal((400, 2))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        downstream.factor_accuracies("logreg", x, y, x, y, np.random.default_rng(0), n_jobs=2)
    assert not caught, {type(w.message).__name__ for w in caught}
