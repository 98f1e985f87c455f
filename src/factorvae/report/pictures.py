"""Report sections with the pictures disentanglement_lib's ``visualize_scores`` gives: per
trial the DCI importance matrix and MIG's mutual-information matrix as heat-maps (latents x
factors, with the factor names), and across the sweep the rank correlation between all
metrics as a heat-map (Locatello et al., ICML 2019, Fig. 2 style); UDR (Duan et al. 2020) of
every trial within its setting and across the sweep, against the supervised metric.

Each function is one section of ``report.build``'s report: it reads the ``_Report`` there
(``doc``, ``img``, ``figure``, ``groups``, ``sweep_dir``, ``metric``, ``finished``, ``scores``).
"""

from __future__ import annotations

import math

from factorvae.report.stats import NICE, _num, spearman_matrix
from factorvae.runs import RunDir
from factorvae.sweep.udr import trial_udr
from factorvae.viz import plots


def _best(group: dict, metric: str | None) -> dict:
    if metric and any(_num(r.get(metric)) is not None for r in group["finished"]):
        return sorted(group["finished"], key=lambda r: -(_num(r.get(metric)) or -math.inf))[0]
    return group["finished"][0]


def score_matrices(rep, max_trials: int = 24) -> int:
    """Section: DCI importances and MIG mutual information of the best seed of each setting."""
    rep.doc.h(2, "Which latent carries which factor: DCI importance and mutual information")
    shown = 0
    for g in rep.groups:
        if shown >= max_trials or not g["finished"]:
            continue
        best = _best(g, rep.metric)
        ev = RunDir(rep.sweep_dir / best["dir"]).read_eval() or {}
        factors = (ev.get("settings") or {}).get("factors")
        pieces = [("dci", "importance_matrix", "DCI importance (gradient-boosted trees)", "importance"),
                  ("mig", "mutual_info", "mutual information (20-bin codes, nats)", "nats")]
        drawn = 0
        for metric, key, what, unit in pieces:
            m = (ev.get(metric) or {}).get(key)
            if not m or not factors or len(m[0]) != len(factors):
                continue
            slug = "".join(c if c.isalnum() else "_" for c in best["trial_id"])
            path = plots.heatmap(m, [f"z{j}" for j in range(len(m))], list(factors),
                                 rep.img / f"{metric}_matrix_{slug}.png", colorbar=unit, vmin=0.0,
                                 title=f"{g['method_label']} {g['label']}, seed {best.get('seed')}")
            rep.figure(path, f"{g['method_label']} {g['label']}, seed {best.get('seed')}: {what}, latents (rows) x "
                             "factors (columns). A disentangled code has one bright cell per row and per column.")
            drawn += 1
        shown += drawn > 0
    if not shown:
        rep.doc.p("No finished trial with DCI or MIG scores yet (run the sweep's evaluation with dci and mig).",
                  "note")
    return shown


def metric_rank_correlation(rep) -> list[list[float]] | None:
    """Section: Spearman rank correlation between every pair of metrics over the finished trials."""
    rep.doc.h(2, "How the metrics agree: rank correlation over trials")
    scores = rep.scores
    mat = spearman_matrix(rep.finished, scores) if len(scores) >= 2 else None
    if not mat:
        rep.doc.p("Needs at least 3 finished trials scored with two or more metrics.", "note")
        return None
    labels = [NICE.get(s, s) for s in scores]
    path = plots.heatmap(mat, labels, labels, rep.img / "metric_rank_correlation.png", vmin=-1.0, vmax=1.0,
                         cmap="RdBu_r", colorbar="Spearman rank correlation")
    rep.figure(path, f"Spearman rank correlation between the metrics over {len(rep.finished)} finished trials "
                     "(Locatello et al. 2019, Fig. 2 style); blank: a metric constant over the trials.")
    return mat


def udr_section(rep, points: int = 1000, seed: int = 0) -> dict | None:
    """Section: UDR (Duan et al. 2020, lasso) of every finished trial within its setting (the
    seeds of one method and hyper-parameters: the paper's population) and across the sweep,
    and UDR against the supervised metric (``sweep.udr.trial_udr``: the table's columns)."""
    doc = rep.doc
    doc.h(2, "Unsupervised Disentanglement Ranking (UDR)")
    finished = [r for g in rep.groups for r in g["finished"]]
    if len(finished) < 2:
        doc.p("Needs at least 2 finished trials.", "note")
        return None
    res = trial_udr(rep.sweep_dir, finished, points, seed)
    skipped, within, across = res["skipped"], res["within"], res["across"]
    if skipped:
        doc.p(f"Not scored (model not loadable): {', '.join(skipped[:5])}" + (" ..." if len(skipped) > 5 else ""),
              "note")
    ids = [r["trial_id"] for r in finished if r["trial_id"] in across]
    if len(ids) < 2:
        doc.p("Needs at least 2 loadable finished trials of one data set with the same number of latents.", "note")
        return None
    label = {r["trial_id"]: f"{g['method_label']} {g['label']}" for g in rep.groups for r in g["finished"]}
    metric = rep.metric
    value = {r["trial_id"]: _num(r.get(metric)) for r in finished} if metric else {}
    doc.table(["trial", "setting", "UDR within setting", "UDR across sweep"] + ([NICE.get(metric, metric)] if metric else []),
              [[i, label[i], f"{within[i]:.3f}" if i in within else "–", f"{across[i]:.3f}"]
               + ([f"{value[i]:.3f}" if value.get(i) is not None else "–"] if metric else []) for i in ids])
    pairs = [(across[i], value[i]) for i in ids if value.get(i) is not None]
    if metric and len(pairs) >= 3:
        methods = [r.get("method") or "" for r in finished if r["trial_id"] in across and value.get(r["trial_id"]) is not None]
        path = plots.scatter_with_fit([p[0] for p in pairs], [p[1] for p in pairs], methods,
                                      rep.img / "udr_vs_supervised.png", "UDR (lasso, across the sweep)",
                                      NICE.get(metric, metric), note=f"{len(pairs)} trials")
        rep.figure(path, "UDR needs no labels: does it rank the trials as the supervised metric does?")
    doc.p(f"UDR (Duan et al. 2020; docs/metrics.md): every model encodes the same {points} grid points (seed "
          f"{seed}); score = median agreement (lasso relative strength) with the other models of the population.",
          "note")
    return {"within": within, "across": across}
