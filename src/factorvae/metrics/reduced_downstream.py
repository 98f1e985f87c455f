"""Reduced downstream task: information leakage once a factor's most informative code
dimensions are removed (disentanglement_lib 1.5's reduced_downstream_task.py with its
``factorwise_dci`` correlation measure; the DCI importances of Eastwood & Williams 2018).

For each training size n in ``num_train`` (n training and ``num_test`` test grid points) and
each factor f: remove, ``num_factors_to_remove`` times, the code dimension with the largest
GBT importance for f (DCI's importance matrix, column f); fit one GBT per factor on the
remaining dimensions. Keys (dlib's): ``n:reduced_factor_{f}:mean_{train,test}_accuracy_factor_{k}``,
``..._reduced_factor`` (k = f: how well f is still predicted), ``..._non_reduced_factor``
(mean over k != f) and the averages over f, ``n:mean_{train,test}_accuracy_{reduced_factor,other_factors}``.

dlib refits all K importance classifiers for every f; only column f is used, so one GBT per
removal is fitted here (the same distribution of choices, K times fewer fits).
"""

from __future__ import annotations

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.codes import Codes
from factorvae.metrics.downstream import factor_accuracies, train_sizes
from factorvae.metrics.gbt import fit_gbt
from factorvae.metrics.record import Metric


def reduced_downstream_task(codes: Codes, rng: np.random.Generator, num_train=(100,), num_test: int = 100,
                            num_factors_to_remove: int = 1) -> dict:
    """Accuracy per factor after removing factor f's most important code dimension(s)."""
    sizes = train_sizes("reduced_downstream_task", num_train)
    D, K = codes.num_codes, codes.grid.num_factors
    if num_test < 1 or not 1 <= num_factors_to_remove < D:
        raise UserError(f"reduced_downstream_task: num_test >= 1 and 1 <= num_factors_to_remove < {D} "
                        "(the number of codes) are needed")
    out: dict = {}
    for n in sizes:
        (y_train, x_train), (y_test, x_test) = codes.sample_split(n, num_test, rng)
        red_train, red_test, other_train, other_test = [], [], [], []
        for f in range(K):
            keep = np.arange(D)
            for _ in range(num_factors_to_remove):
                importance = np.abs(fit_gbt(x_train[:, keep], y_train[:, f]).feature_importances_)
                keep = np.delete(keep, int(np.argmax(importance)))
            train, test = factor_accuracies("boost", x_train[:, keep], y_train, x_test[:, keep], y_test, rng)
            p = f"{n}:reduced_factor_{f}"
            for k in range(K):
                out[f"{p}:mean_train_accuracy_factor_{k}"] = float(train[k])
                out[f"{p}:mean_test_accuracy_factor_{k}"] = float(test[k])
            rest = np.arange(K) != f
            out[f"{p}:mean_train_accuracy_reduced_factor"] = float(train[f])
            out[f"{p}:mean_test_accuracy_reduced_factor"] = float(test[f])
            out[f"{p}:mean_train_accuracy_non_reduced_factor"] = float(np.mean(train[rest])) if rest.any() else float("nan")
            out[f"{p}:mean_test_accuracy_non_reduced_factor"] = float(np.mean(test[rest])) if rest.any() else float("nan")
            red_train.append(train[f]), red_test.append(test[f])
            other_train.append(out[f"{p}:mean_train_accuracy_non_reduced_factor"])
            other_test.append(out[f"{p}:mean_test_accuracy_non_reduced_factor"])
        out[f"{n}:mean_train_accuracy_reduced_factor"] = float(np.mean(red_train))
        out[f"{n}:mean_test_accuracy_reduced_factor"] = float(np.mean(red_test))
        out[f"{n}:mean_train_accuracy_other_factors"] = float(np.mean(other_train))
        out[f"{n}:mean_test_accuracy_other_factors"] = float(np.mean(other_test))
    return out


def reduced_draws(params, num_grid: int) -> int:
    return int(sum(n + params["num_test"] for n in train_sizes("reduced_downstream_task", params["num_train"])))


_DLIB = {"num_train": [100], "num_test": 100, "num_factors_to_remove": 1}
# CPU s of the metric alone, codes cached (benchmarks/eval_cost.py --encode 0, load average 1.5-6.6)
METRIC = Metric(
    name="reduced_downstream_task", function=reduced_downstream_task,
    keys=tuple(f"100:mean_{s}_accuracy_{w}" for s in ("train", "test") for w in ("reduced_factor", "other_factors")),
    headline="100:mean_test_accuracy_reduced_factor", label="reduced downstream (leakage)",
    # dlib ships only a test config (100 points); no study setting exists to follow
    presets={"dlib": _DLIB, "paper": _DLIB, "fast": _DLIB},
    draws=reduced_draws, default=False, seconds={"fast": 20.6, "dlib": 20.6, "paper": 20.6})
