"""The views of a study across data sets (Locatello et al. 2019, §5): per data set, the
distribution of each metric per method (their Figs. 2-3: every hyper-parameter value and
seed of a method pooled), and how each metric ranks the same settings on different data sets
(Spearman rank correlation of the settings' mean scores between two data sets, over the
settings both have: does a setting that scores well on one data set score well on another).
Written by ``build_report`` when the finished trials span two or more data sets.
"""

from __future__ import annotations

import json

import numpy as np
from scipy import stats

from factorvae.report.stats import NICE, _num
from factorvae.viz import plots


def datasets_of(rows: list[dict]) -> list[str]:
    return sorted({r["dataset"] for r in rows if r.get("dataset")})


def distributions(rows: list[dict], metric: str) -> dict[str, dict[str, list[float]]]:
    """{data set: {method label: the metric's values over its finished trials}}."""
    out: dict = {}
    for r in rows:
        v = _num(r.get(metric))
        if v is not None and r.get("dataset"):
            label = r.get("method_label") or r.get("method") or "?"
            out.setdefault(r["dataset"], {}).setdefault(label, []).append(v)
    return out


def setting_means(rows: list[dict], metric: str) -> dict[str, dict[str, float]]:
    """{data set: {setting without the data set (method label + grid point): mean over seeds}}."""
    acc: dict = {}
    for r in rows:
        v = _num(r.get(metric))
        if v is None or not r.get("dataset"):
            continue
        key = json.dumps([r.get("method_label") or r.get("method"), r.get("params") or "{}"])
        acc.setdefault(r["dataset"], {}).setdefault(key, []).append(v)
    return {d: {k: float(np.mean(v)) for k, v in s.items()} for d, s in acc.items()}


def transfer_matrix(rows: list[dict], metric: str, datasets: list[str]) -> list[list[float]]:
    """Spearman correlation of the settings' mean ``metric`` between each pair of data sets
    (NaN with fewer than 3 common settings or a constant side)."""
    means = setting_means(rows, metric)
    mat = []
    for a in datasets:
        row = []
        for b in datasets:
            common = sorted(set(means.get(a, {})) & set(means.get(b, {})))
            x = np.array([means[a][k] for k in common])
            y = np.array([means[b][k] for k in common])
            ok = len(common) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
            row.append(float(stats.spearmanr(x, y)[0]) if ok else float("nan"))
        mat.append(row)
    return mat


def _q(values: list[float]) -> str:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:.3g} [{q1:.3g}, {q3:.3g}] ({len(values)})"


def section(rep) -> None:
    """The report's study section (see the module docstring); nothing for one data set."""
    datasets = datasets_of(rep.finished)
    if len(datasets) < 2 or not rep.scores:
        return
    doc = rep.doc
    doc.h(2, "Across data sets (Locatello et al. 2019)")
    doc.p("Per data set: each metric per method, pooled over its hyper-parameter values and seeds; "
          "cells are median [25%, 75%] (trials).", "note")
    dist = {m: distributions(rep.finished, m) for m in rep.scores}
    for d in datasets:
        doc.h(3, d)
        methods = list(dict.fromkeys(k for m in rep.scores for k in dist[m].get(d, {})))
        doc.table(["metric"] + methods,
                  [[NICE.get(m, m)] + [_q(dist[m][d][k]) if k in dist[m].get(d, {}) else "–" for k in methods]
                   for m in rep.scores])
        panels = [(NICE.get(m, m), dist[m][d]) for m in rep.scores if dist[m].get(d)]
        if panels:
            rep.figure(plots.box_grid(panels, rep.img / f"study_{d}.png", d), f"{d}: each metric per method.")
    doc.h(3, "Rank correlation of each metric across data sets")
    doc.p("Spearman correlation, between two data sets, of the settings' mean scores (settings both "
          "data sets have); – where fewer than 3 settings are shared.", "note")
    for m in rep.scores:
        mat = transfer_matrix(rep.finished, m, datasets)
        doc.p(f"{NICE.get(m, m)}:")
        doc.table([""] + datasets, [[a] + ["–" if np.isnan(v) else f"{v:.2f}" for v in row]
                                    for a, row in zip(datasets, mat)])
