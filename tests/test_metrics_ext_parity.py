"""Parity of the extension metrics (IRS, unsupervised scores, downstream tasks, UDR) with
disentanglement_lib 1.5 at its settings (``METRIC.presets["dlib"]``), on the parity grids
and the UDR cases of tests/fixtures/parity (copied from the project's shared parity set;
reference_values_ext.json: dlib's mean, std and number of seeds per key; EXT_METRICS.md in
the shared set says how dlib was run).

Tolerance: max(0.03, 4 std) where dlib ran 3 seeds. Where it ran one seed (std 0; the GBT and
logistic-regression tasks) a single dlib draw is compared with a single draw of ours, so the
bound is max(0.03, 4 sqrt(2) sigma) with sigma the binomial standard error of an accuracy on
the points behind it. Deliberate deviations (docs/metrics.md) are checked against our
corrected value instead. The slow GBT-based tasks at dlib's full sizes are in
test_metrics_ext_parity_slow.py.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from factorvae.metrics import downstream, irs, unsupervised
from factorvae.metrics.codes import Codes
from factorvae.metrics.suite import metric_rng
from factorvae.metrics.udr import load_udr_npz, udr

PARITY = Path(__file__).parent / "fixtures" / "parity"
REFERENCE = json.loads((PARITY / "reference_values_ext.json").read_text())
CASES = ["i_perfect", "ii_rotated", "iii_absent", "iii_entangled", "iv_noise", "v_extra_dims"]
UDR_CASES = ["udr_i_perfect", "udr_v_extra_dims"]
#: keys where we deliberately differ from dlib 1.5 (docs/metrics.md): checked separately
DEVIATIONS = {("irs", "num_active_dims"), ("unsupervised", "gaussian_total_correlation")}


@functools.lru_cache(maxsize=None)
def codes(case: str) -> Codes:
    d = np.load(PARITY / f"{case}.npz")
    return Codes.from_arrays(d["factors"], d["codes"], d["sizes"])


def reference(case: str, metric: str) -> dict:
    return {k.split(".", 1)[1]: v for k, v in REFERENCE[case].items() if k.split(".", 1)[0] == metric}


def tolerance(ref: dict, points: int | None = None) -> float:
    if ref["n"] > 1:
        return max(0.03, 4 * ref["std"])
    p = min(max(ref["mean"], 0.0), 1.0)
    sigma = math.sqrt(p * (1 - p) / points) if points else 0.0
    return max(0.03, 4 * math.sqrt(2) * sigma)


def check(case: str, metric: str, ours: dict, points=lambda key: None, skip=()) -> int:
    checked = 0
    for key, ref in reference(case, metric).items():
        if (metric, key) in DEVIATIONS or key in skip or (case, metric, key) in DEVIATION_CASES:
            continue
        tol = tolerance(ref, points(key))
        assert abs(ours[key] - ref["mean"]) <= tol, (
            f"{case} {metric}.{key}: ours {ours[key]:.5f}, dlib {ref['mean']:.5f} ± {ref['std']:.5f} (tol {tol:.4f})")
        checked += 1
    return checked


#: single keys that differ on one case by design: the spearman NaN quirk (see test below)
DEVIATION_CASES = {("udr_v_extra_dims", "udr_spearman", k) for k in reference("udr_v_extra_dims", "udr_spearman")}


def mean_over_seeds(function, case: str, params: dict, seeds=(0, 1, 2)) -> dict:
    """Our mean over the seeds dlib ran (its reference is a 3-seed mean): per numeric key."""
    runs = [function(codes(case), metric_rng(s), **params) for s in seeds]
    return {k: float(np.mean([r[k] for r in runs])) for k, v in runs[0].items() if isinstance(v, (int, float))}


@pytest.mark.parametrize("case", CASES)
def test_irs_agrees_with_dlib(case):
    # the deviation weights come from a max over the sample (heavy-tailed on v_extra_dims' N(0,1)
    # dims: 0.461-0.497 over 8 seeds of ours), so a mean is compared with dlib's mean
    ours = mean_over_seeds(irs.irs, case, irs.METRIC.presets["dlib"])
    assert check(case, "irs", ours) == 1


@pytest.mark.parametrize("case", CASES)
def test_irs_num_active_dims_is_a_count(case):
    """dlib 1.5 sums the code values of the active dims (25,001 for i_perfect); we count them."""
    ours = irs.irs(codes(case), metric_rng(0), **irs.METRIC.presets["dlib"])
    true_active = int(np.sum(np.load(PARITY / f"{case}.npz")["codes"].var(axis=0) > 0))
    assert ours["num_active_dims"] == true_active
    assert abs(reference(case, "irs")["num_active_dims"]["mean"] - true_active) > 100  # dlib sums code values


@pytest.mark.parametrize("case", CASES)
def test_unsupervised_agrees_with_dlib(case):
    ours = mean_over_seeds(unsupervised.unsupervised, case, unsupervised.METRIC.presets["dlib"])
    assert check(case, "unsupervised", ours) == 3
    ref = reference(case, "unsupervised")["gaussian_total_correlation"]
    if case != "v_extra_dims":
        assert abs(ours["gaussian_total_correlation"] - ref["mean"]) <= tolerance(ref)
        assert ours["constant_dims"] == 0


def test_total_correlation_with_constant_dims_is_that_of_the_others():
    """dlib: NaN (log 0 - log 0). Ours: a constant dim is independent of the rest, so the TC of
    the code is the TC of its varying dims: the same number as scoring them alone."""
    d = np.load(PARITY / "v_extra_dims.npz")
    assert math.isnan(reference("v_extra_dims", "unsupervised")["gaussian_total_correlation"]["mean"])
    varying = d["codes"].std(axis=0) > 0
    assert (~varying).sum() == 2
    alone = Codes.from_arrays(d["factors"], d["codes"][:, varying], d["sizes"])
    params = unsupervised.METRIC.presets["dlib"]
    full = unsupervised.unsupervised(codes("v_extra_dims"), metric_rng(0), **params)
    part = unsupervised.unsupervised(alone, metric_rng(0), **params)
    assert full["constant_dims"] == 2 and part["constant_dims"] == 0
    assert math.isfinite(full["gaussian_total_correlation"])
    assert full["gaussian_total_correlation"] == pytest.approx(part["gaussian_total_correlation"], rel=1e-9)


def _logreg_points(key: str, K: int = 5, num_test: int = 5000) -> int:
    n, name = key.split(":")
    per = num_test if "test" in name else int(n)
    return per * (K if name.startswith("mean") else 1)


@pytest.mark.parametrize("case", ["iii_absent", "iv_noise"])
def test_logistic_regression_downstream_at_1000_agrees_with_dlib(case):
    """At 1,000 training points (10,000 is in the slow file; 10 and 100 vary more from seed to
    seed than one dlib draw can pin: see the slow file)."""
    ours = downstream.downstream_task_logreg(codes(case), metric_rng(0),
                                             num_train=[1000], num_test=5000)
    keys = [k for k in reference(case, "downstream_task_logreg") if not k.startswith("1000:")]
    assert check(case, "downstream_task_logreg", ours, _logreg_points, skip=keys) == 14


def _udr(case: str, corr: str, seed: int = 0) -> dict:
    models, logvars, _ = load_udr_npz(PARITY / f"{case}.npz")
    return udr(models, np.random.default_rng(seed), logvars, corr)


def _flat(result: dict) -> dict:
    out = {f"model_scores.{m}": v for m, v in enumerate(result["model_scores"])}
    for i, row in enumerate(result["pairwise_disentanglement_scores"]):
        out.update({f"pairwise_disentanglement_scores.{i}.{j}": v for j, v in enumerate(row)})
    return out


@pytest.mark.parametrize("case", UDR_CASES)
@pytest.mark.parametrize("corr", ["lasso", "spearman"])
def test_udr_agrees_with_dlib(case, corr):
    ours = _flat(_udr(case, corr))
    n = check(case, f"udr_{corr}", ours)
    assert n == (0 if (case, corr) == ("udr_v_extra_dims", "spearman") else 20)


def test_udr_spearman_constant_dim_scores_zero_not_the_whole_pair():
    """dlib 1.5: a constant dim that survives the KL filter has a NaN rank correlation, which
    zeroes every row and column max (codes -> perm_sign 0.000). Ours: that dim scores 0 and the
    others count: the pair's score is that of the 8 varying dims times 8/10."""
    assert reference("udr_v_extra_dims", "udr_spearman")["pairwise_disentanglement_scores.0.1"]["mean"] == 0.0
    full = _udr("udr_v_extra_dims", "spearman")
    models, _, _ = load_udr_npz(PARITY / "udr_v_extra_dims.npz")
    classes = models[0].grid.sample(1000, np.random.default_rng(0))  # udr's own draw with seed 0
    reps = [m.get(classes) for m in models]
    varying = [r.std(axis=0) > 0 for r in reps]
    assert [int(v.sum()) for v in varying[:2]] == [8, 8]
    from factorvae.metrics.udr import kl_per_dim, udr_scores

    pair = list(zip(reps, varying))[:2]  # the pair's score depends on these two models only
    part = udr_scores([r[:, v] for r, v in pair], [kl_per_dim(r[:, v], None) for r, v in pair], "spearman")
    assert full["pairwise_disentanglement_scores"][0][1] == pytest.approx(
        0.8 * part["pairwise_disentanglement_scores"][0][1], abs=1e-9)
    assert full["pairwise_disentanglement_scores"][0][1] > 0.6


def test_udr_kl_filter_drops_collapsed_dims():
    """udr_i_perfect's noise model has two collapsed dims (KL ~ 0.001): filtered, as dlib."""
    r = _udr("udr_i_perfect", "lasso")
    assert r["active_dims"][3] == [True, True, True, False, False]
    assert all(all(a) for a in r["active_dims"][:3])
