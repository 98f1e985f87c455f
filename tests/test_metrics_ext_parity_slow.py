"""Parity of the GBT and logistic-regression tasks with disentanglement_lib 1.5 at dlib's full
sizes (downstream tasks, fairness, strong / reduced downstream tasks): minutes per case, so
marked ``slow`` and run only with FACTORVAE_FULL_PARITY=1 (about 20 CPU minutes for the six
grids; the fast checks are in test_metrics_ext_parity.py).

dlib ran these with one seed (std 0): its value is one draw. We compare our seed-0 value
within max(0.03, 4 sqrt(2) sigma), sigma = the larger of the binomial standard error of an
accuracy on the points behind it and, for the keys that vary from draw to draw more than
that (small training sets, 100 points per sensitive class, the reduced task's choice of
dimension), our own standard deviation over further seeds of the same estimator.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import pytest

from factorvae.metrics import downstream, fairness, reduced_downstream, strong_downstream
from factorvae.metrics.suite import metric_rng
from test_metrics_ext_parity import CASES, codes, reference

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.environ.get("FACTORVAE_FULL_PARITY"), reason="set FACTORVAE_FULL_PARITY=1")]
K = 5  # factors of the parity grids
RECORDS = {r.name: r for r in (downstream.METRIC_LOGREG, downstream.METRIC_BOOST, fairness.METRIC,
                               strong_downstream.METRIC, reduced_downstream.METRIC)}
#: extra seeds for the spread, and the parameters that give the noisy keys (cheaper where possible)
SPREAD = {
    "downstream_task_logreg": (4, {"num_train": [10, 100], "num_test": 5000}),
    "downstream_task_boost": (4, {"num_train": [10, 100], "num_test": 5000}),
    "fairness": (2, None),
    "strong_downstream_task": (2, None),
    "reduced_downstream_task": (3, None),
}


@functools.lru_cache(maxsize=None)
def run(case: str, metric: str, seed: int, small: bool = False) -> dict:
    rec = RECORDS[metric]
    params = dict(SPREAD[metric][1]) if small else dict(rec.presets["dlib"])
    return rec.function(codes(case), metric_rng(seed), **params)


#: single-draw keys where dlib's one value lies outside our bound for our own seed-0 draw. Not
#: compared here: test_metrics_dlib_replay.py gives our code dlib's own draw and gets dlib's value
#: exactly (logistic regression and the reduced task's choice of dimension with our code as it
#: is, the unfairness keys with dlib's unseeded scikit-learn trees): they are dlib's particular
#: draw, not a difference in what is computed (docs/metrics.md, "Parity").
REPLAYED = {
    # dlib 0.910; ours 0.96-1.000 over 12 seeds of our own (C = 10^4 chosen each time)
    ("iii_absent", "downstream_task_logreg", "100:test_accuracy_factor_3"),
    # factor 4 is absent from the code, so the dim "most important" for it is a random pick;
    # on dlib's draw ours removes dlib's (dim 1; factor 1 then at chance)
    ("iii_absent", "reduced_downstream_task", "100:reduced_factor_4:mean_test_accuracy_factor_1"),
    ("iii_absent", "reduced_downstream_task", "100:reduced_factor_4:mean_test_accuracy_factor_0"),
    # unfairness of a classifier predicting an absent (iii_absent) or rotated (ii_rotated)
    # factor: 100 points per sensitive class, a memorised noise code
    ("iii_absent", "fairness", "mean_fairness:pred4:sens1"),
    ("iii_absent", "fairness", "mean_fairness:sens1:max_pred"),
    ("ii_rotated", "fairness", "max_fairness:pred4:sens2"),
    ("iii_entangled", "fairness", "max_fairness:pred3:sens0"),  # a max over classes of 100-point TVs
    # the same kind: dlib 0.153, ours 0.073 on the shared-stream seed 0 (the old per-metric seed gave
    # 0.11-0.16); three draws of ours cannot bound a max over classes
    ("iii_entangled", "fairness", "max_fairness:pred4:sens0"),
}


def points(metric: str, key: str) -> int | None:
    """Evaluation points behind an accuracy key (None: not a plain accuracy)."""
    if metric.startswith("downstream_task"):
        n, name = key.split(":")
        return (5000 if "test" in name else int(n)) * (K if name.startswith("mean") else 1)
    if metric == "reduced_downstream_task":  # 100 test (training) points per factor
        per = 100 * (K - 1 if "non_reduced" in key or "other_factors" in key else 1)
        return per * (K if key.count(":") == 1 else 1)
    if metric == "strong_downstream_task":
        if "gap" in key:
            return None
        return 1000 * K * (2 if "strong" in key else 1)
    return None


def noisy(metric: str, key: str) -> bool:
    if metric.startswith("downstream_task"):
        return key.split(":")[0] in ("10", "100")
    return True


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("metric", list(RECORDS))
def test_agrees_with_disentanglement_lib(case, metric):
    ours = run(case, metric, 0)
    seeds, small = SPREAD[metric]
    extra = [run(case, metric, s, small is not None) for s in range(1, seeds + 1)]
    checked, failures = 0, []
    for key, ref in reference(case, metric).items():
        sigma = 0.0
        m = points(metric, key)
        if m:
            p = min(max(ref["mean"], 0.0), 1.0)
            sigma = math.sqrt(p * (1 - p) / m)
        if noisy(metric, key):
            values = [ours[key]] + [e[key] for e in extra if key in e]
            sigma = max(sigma, float(np.std(values, ddof=1)))
        tol = max(0.03, 4 * ref["std"], 4 * math.sqrt(2) * sigma)
        if (case, metric, key) in REPLAYED:
            continue  # checked on dlib's own draw: test_metrics_dlib_replay.py
        if not abs(ours[key] - ref["mean"]) <= tol:
            failures.append(f"{key}: ours {ours[key]:.4f}, dlib {ref['mean']:.4f} (tol {tol:.4f})")
        checked += 1
    listed = sum((case, metric, k) in REPLAYED for k in reference(case, metric))
    assert checked + listed == len(reference(case, metric)) and checked > 0
    assert not failures, f"{case} {metric}: " + "; ".join(failures)
