"""Statistics of a sweep's result rows (factorvae.sweep.table): pure functions, no files written.

Groups of seeds per setting, FactorVAE against β-VAE at similar reconstruction (Kim & Mnih 2018,
Section 4 and Fig. 4), the correlation of the FactorVAE and Higgins metrics (Section 6), and
training curves read from each trial's metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
from scipy import stats

from factorvae.metrics.registry import RECORDS
from factorvae.runs import RunDir

#: disentanglement_lib's lower-case SAP key, found in older result tables
LEGACY_KEYS = {"sap": ["sap_score"]}
PRIMARY = "factor_vae.eval_accuracy"
SECONDARY = "beta_vae.eval_accuracy"
#: the headline score of each metric (its record), then older spellings: first match wins
MAIN_SCORES = {n: [r.headline] + LEGACY_KEYS.get(n, []) for n, r in RECORDS.items()}
NICE = {**{f"{n}.{k}": r.label for n, r in RECORDS.items() for k in [r.headline] + LEGACY_KEYS.get(n, [])},
        "recon": "reconstruction error", "analysis.true_tc": "true TC", "final.tc": "discriminator TC",
        "analysis.log_px": "log p(x)", "active_dims": "active dims"}
#: a finished trial is flagged when its reconstruction error exceeds this multiple of the median
#: of its setting's other finished seeds (a diverged or collapsed seed, not seed-to-seed noise)
RECON_OUTLIER = 1.5
#: config keys that describe the machine or the seed, not a setting: left out of the hyper-parameters
NOT_HYPERPARAMETERS = {"train.seed", "train.device", "train.threads", "train.loggers", "data.cache_dir",
                       "data.path", "train.log_every", "train.ckpt_every", "train.image_every"}
BETA_FAMILY = ("betavae", "vae")
#: the verdict needs this many finished seeds per setting before it says yes or no
MIN_SEEDS = 3
#: significance level of the verdict's test (Welch's two-sample t-test, unequal variances)
ALPHA = 0.05
PAPER_NOTE = ("Paper (2D Shapes, 3e5 steps, 10 seeds; Kim & Mnih 2018, §6): FactorVAE γ=40 → metric ≈ 0.82, β-VAE β=4 → ≈ 0.73, "
              "reconstruction error ≈ 45; FactorVAE/Higgins metric correlation: Pearson 0.404, Kendall 0.310, "
              "Spearman 0.444. 3D Shapes (1e6 steps): recon 3515 at γ=36 vs 3570 at β=24 with similar metric.")
GREEK = {"gamma": "γ", "beta": "β", "lambda": "λ"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _num(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _mean_std(vals) -> tuple[float | None, float | None, int]:
    v = [x for x in (_num(a) for a in vals) if x is not None]
    if not v:
        return None, None, 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)


def main_score_columns(rows: list[dict]) -> list[str]:
    cols = {k for r in rows for k in r}
    out = []
    for metric, keys in MAIN_SCORES.items():
        for k in keys:
            if f"{metric}.{k}" in cols:
                out.append(f"{metric}.{k}")
                break
    return out


def settings_table(rows: list[dict], metrics: list[str], flags: dict | None = None) -> list[dict]:
    """One entry per setting: counts and mean ± std over its finished seeds (flagged ones
    included and counted: ``flags`` from ``flag_trials``)."""
    flags = flags or {}
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("setting"):
            groups.setdefault(r["setting"], []).append(r)
    out = []
    for setting, rs in groups.items():
        done = [r for r in rs if r.get("status") == "finished"]
        method = rs[0].get("method") or ""
        params = {}
        try:
            params = json.loads(rs[0].get("params") or "{}")
        except (TypeError, ValueError):
            pass
        first = next(iter(params.values()), None)
        mlabel = rs[0].get("method_label") or method
        label = setting[len(mlabel):].strip() if setting.startswith(mlabel) else setting
        for k, g in GREEK.items():
            label = re.sub(rf"(^|\s){k}=", rf"\g<1>{g}=", label)
        g = {"setting": setting, "method": method, "label": label or method, "order": _num(first),
             "method_label": rs[0].get("method_label") or method,
             "n": len(done), "total": len(rs), "rows": rs, "finished": done,
             "flagged": sum(bool(flags.get(r.get("trial_id"))) for r in done)}
        for col in metrics + ["recon", "analysis.true_tc", "final.tc", "analysis.log_px", "active_dims"]:
            m, s, n = _mean_std(r.get(col) for r in done)
            g[f"{col}:mean"], g[f"{col}:std"], g[f"{col}:n"] = m, s, n
            g[f"{col}:unscorable"] = unscorable_reasons(done, col)
        g["zero_active_metric_dims"] = sum(_num(r.get("factor_vae.num_active_dims")) == 0 for r in done)
        ks = {r.get("analysis.log_px_k") for r in done if r.get("analysis.log_px_k") is not None}
        g["log_px_k"] = ", ".join(str(k) for k in sorted(ks)) if ks else None
        out.append(g)
    out.sort(key=lambda g: (g["method"], g["order"] if g["order"] is not None else math.inf, g["setting"]))
    return out


def unscorable_reasons(rows: list[dict], col: str) -> list[str]:
    """The reasons (``<metric>.unscorable``, metrics/factor_vae.py, mig.py) of the rows whose
    ``col`` is missing because the metric could not score: never counted as 0."""
    key = col.split(".")[0] + ".unscorable"
    return [str(r[key]) for r in rows if _num(r.get(col)) is None and r.get(key)]


def flag_trials(rows: list[dict]) -> dict[str, list[str]]:
    """{trial_id: reasons} for the trials a mean over seeds should not hide: failed ones,
    collapsed ones (no active latent dimension: every KL(q(z_j|x) || p(z_j)) <= 0.1 nats) and
    ones whose reconstruction error is over RECON_OUTLIER times the median of their setting's
    other finished seeds."""
    out: dict[str, list[str]] = {}
    peers: dict[str, list[tuple[str, float]]] = {}
    for r in rows:
        tid = r.get("trial_id")
        if r.get("status") == "failed":
            out.setdefault(tid, []).append("failed: " + (str(r.get("detail") or "").splitlines() or ["?"])[0][:120])
        if r.get("status") != "finished":
            continue
        if _num(r.get("active_dims")) == 0:
            out.setdefault(tid, []).append("collapsed: 0 active dims (no latent's KL above 0.1 nats)")
        if _num(r.get("recon")) is not None and r.get("setting"):
            peers.setdefault(r["setting"], []).append((tid, _num(r.get("recon"))))
    for setting, vals in peers.items():
        for tid, v in vals:
            others = [x for t, x in vals if t != tid]
            if others and v > RECON_OUTLIER * float(np.median(others)) > 0:
                out.setdefault(tid, []).append(f"recon {v:.1f} is {v / float(np.median(others)):.1f}× the median "
                                               f"of its setting's other seeds ({float(np.median(others)):.1f})")
    return out


def hyperparameters(groups: list[dict]) -> tuple[list[str], list[list], dict]:
    """Every setting's configuration: (keys that differ between settings, one row of their values
    per setting, {key: value} shared by all settings)."""
    configs = []
    for g in groups:
        r = g["rows"][0]
        configs.append({k: v for k, v in r.items() if k.split(".")[0] in ("model", "optim", "train", "data")
                        and k not in NOT_HYPERPARAMETERS})
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    shared = {k: configs[0].get(k) for k in keys if k not in varying} if configs else {}
    return varying, [[c.get(k) for k in varying] for c in configs], shared


def latent_factors(ev: dict | None) -> tuple[list[str | None] | None, str]:
    """The factor each latent captures, from a trial's eval.json: the FactorVAE metric's
    majority-vote classifier (Kim & Mnih 2018, Section 4: the factor whose fixing most often
    leaves that latent with the least variance), else the factor with which the latent shares the
    most mutual information (MIG, Chen et al. 2018), else None."""
    ev = ev or {}
    fv = ev.get("factor_vae") if isinstance(ev.get("factor_vae"), dict) else {}
    if isinstance(fv.get("latent_factor"), list) and any(fv["latent_factor"]):
        return [f if isinstance(f, str) else None for f in fv["latent_factor"]], "FactorVAE metric's majority vote"
    mig = ev.get("mig") if isinstance(ev.get("mig"), dict) else {}
    mi, names = mig.get("mutual_info"), list((mig.get("gap_per_factor") or {}).keys())
    try:
        m = np.asarray(mi, dtype=float)
        if m.ndim == 2 and m.shape[1] == len(names) and m.size:
            return [names[int(np.argmax(row))] if row.max() > 0.01 else None for row in m], \
                "highest mutual information, MIG"
    except (TypeError, ValueError):
        pass
    return None, ""


def compare_methods(groups: list[dict], metric: str, tolerance: float = 0.1) -> dict | None:
    """Does FactorVAE beat β-VAE at similar reconstruction? For each FactorVAE setting f, the
    β-VAE settings that reconstruct at least about as well (recon <= recon_f·(1 + tolerance))
    are its fair rivals (worse-reconstructing β-VAEs buy their metric with reconstruction, the
    paper's point). f beats β-VAE when its mean metric exceeds every rival's; with no rival, the
    β-VAE setting closest in reconstruction error is shown instead. Each line's ``outcome``
    (``judge``) is beats, loses or inconclusive; ``wins`` counts the lines that beat."""
    fv = [g for g in groups if g["method"] == "factorvae" and g.get(f"{metric}:mean") is not None
          and g.get("recon:mean") is not None]
    bv = [g for g in groups if g["method"] in BETA_FAMILY and g.get(f"{metric}:mean") is not None
          and g.get("recon:mean") is not None]
    if not fv or not bv:
        return None
    lines = []
    for f in fv:
        rivals = [b for b in bv if b["recon:mean"] <= f["recon:mean"] * (1 + tolerance)]
        if rivals:
            best = max(rivals, key=lambda b: b[f"{metric}:mean"])
            kind = "best rival"
        else:
            best = min(bv, key=lambda b: abs(b["recon:mean"] - f["recon:mean"]))
            kind = "closest (reconstructs worse)"
        d = f[f"{metric}:mean"] - best[f"{metric}:mean"]
        spread = math.sqrt((f.get(f"{metric}:std") or 0) ** 2 + (best.get(f"{metric}:std") or 0) ** 2)
        outcome, why, p = judge(f, best, metric, bool(rivals))
        lines.append({"outcome": outcome, "why": why, "p": p,
            "factorvae": f["label"], "f_metric": f[f"{metric}:mean"], "f_std": f.get(f"{metric}:std"),
            "f_recon": f["recon:mean"], "betavae": best["label"], "b_metric": best[f"{metric}:mean"],
            "b_std": best.get(f"{metric}:std"), "b_recon": best["recon:mean"], "kind": kind, "delta": d,
            "beats": bool(rivals) and d > 0 or (not rivals and d > 0), "clear": d > spread and d > 0 and min(f["n"], best["n"]) >= 2,
            "n": min(f["n"], best["n"]),
        })
    wins = sum(r["outcome"] == "beats" for r in lines)
    open_ = [r for r in lines if r["outcome"] == "inconclusive"]
    clear = sum(r["clear"] for r in lines)
    best_f = max(fv, key=lambda g: g[f"{metric}:mean"])
    best_b = max(bv, key=lambda g: g[f"{metric}:mean"])
    verdict = (f"FactorVAE beats β-VAE at similar or better reconstruction in {wins} of {len(lines)} FactorVAE "
               f"setting(s) (≥ {MIN_SEEDS} seeds each, Welch's t-test p < {ALPHA:g}); "
               f"{len(open_)} inconclusive"
               + (" (" + "; ".join(f"{r['factorvae']}: {r['why']}" for r in open_) + ")" if open_ else "") + ". "
               f"Best FactorVAE: {best_f['label']} metric {best_f[f'{metric}:mean']:.3f} at recon "
               f"{best_f['recon:mean']:.1f}; best β-VAE: {best_b['label']} metric {best_b[f'{metric}:mean']:.3f} "
               f"at recon {best_b['recon:mean']:.1f}.")
    return {"lines": lines, "wins": wins, "clear": clear, "total": len(lines), "verdict": verdict,
            "inconclusive": len(open_), "tolerance": tolerance}


def judge(f: dict, b: dict, metric: str, fair: bool) -> tuple[str, str, float | None]:
    """(outcome, why, p) of FactorVAE setting ``f`` against β-VAE setting ``b``: "inconclusive"
    with fewer than MIN_SEEDS finished seeds on either side, when a seed's score is unscorable
    or comes from zero active dimensions (the FactorVAE metric's pruning left nothing to vote:
    not a worse model), when ``b`` is no fair rival (it reconstructs worse), or when Welch's
    t-test cannot reject equal means at ALPHA; else "beats" or "loses"."""
    n = min(f.get(f"{metric}:n") or 0, b.get(f"{metric}:n") or 0, f["n"], b["n"])
    bad = [g["label"] for g in (f, b) if g.get(f"{metric}:unscorable")]
    zero = [g["label"] for g in (f, b) if metric.startswith("factor_vae.") and g.get("zero_active_metric_dims")]
    if bad or zero:
        return "inconclusive", f"a seed of {', '.join(dict.fromkeys(bad + zero))} has no score or 0 active dims", None
    if n < MIN_SEEDS:
        return "inconclusive", f"{n} seed(s) with a score; the verdict needs {MIN_SEEDS}", None
    m1, s1, m2, s2 = f[f"{metric}:mean"], f[f"{metric}:std"] or 0.0, b[f"{metric}:mean"], b[f"{metric}:std"] or 0.0
    if s1 == 0 and s2 == 0:
        p = 0.0 if m1 != m2 else 1.0  # no spread: any difference is exact
    else:
        p = float(stats.ttest_ind_from_stats(m1, s1, f[f"{metric}:n"], m2, s2, b[f"{metric}:n"], equal_var=False)[1])
    if p >= ALPHA:
        return "inconclusive", f"difference within the seeds' spread (Welch's t-test p = {p:.2g})", p
    if not fair and m1 < m2:  # a β-VAE that reconstructs worse may buy its metric with it
        return "inconclusive", "only β-VAEs that reconstruct worse to compare with", p
    return ("beats" if m1 > m2 else "loses"), f"Welch's t-test p = {p:.2g}", p


def correlations(rows: list[dict], a: str, b: str) -> dict | None:
    """Pearson, Kendall and Spearman correlation (with two-sided p-values) of two metrics over
    the finished trials that have both (Section 6)."""
    pairs = [(_num(r.get(a)), _num(r.get(b))) for r in rows if r.get("status") == "finished"]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    x, y = np.array(pairs).T
    out = {"n": len(pairs), "x": x.tolist(), "y": y.tolist()}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        out.update({k: (float("nan"), float("nan")) for k in ("pearson", "kendall", "spearman")})
        out["note"] = "one metric is constant over the trials"
        return out
    for name, fn in (("pearson", stats.pearsonr), ("kendall", stats.kendalltau), ("spearman", stats.spearmanr)):
        res = fn(x, y)
        out[name] = (float(res[0]), float(res[1]))
    return out


def read_curves(sweep_dir: Path, rows: list[dict], keys: list[str]) -> dict:
    """{setting: {key: [per-trial {step: value}]}} from each trial's metrics.jsonl."""
    out: dict = {}
    for r in rows:
        if not r.get("setting") or not r.get("dir"):
            continue
        series = {k: {} for k in keys}
        for rec in RunDir(sweep_dir / r["dir"]).read_metrics():
            try:
                step = int(rec["step"])
            except (ValueError, KeyError, TypeError):
                continue
            for k in keys:
                v = _num(rec.get(k))
                if v is not None:
                    series[k][step] = v
        for k in keys:
            if series[k]:
                out.setdefault(r["setting"], {}).setdefault(k, []).append(series[k])
    return out


def mean_curve(per_trial: list[dict]) -> tuple[list[int], list[float], list[float]]:
    steps = sorted({s for d in per_trial for s in d})
    mean, std = [], []
    for s in steps:
        v = [d[s] for d in per_trial if s in d]
        mean.append(float(np.mean(v)))
        std.append(float(np.std(v)) if len(v) > 1 else 0.0)
    return steps, mean, std


def spearman_matrix(rows: list[dict], cols: list[str]) -> list[list[float]] | None:
    """Spearman rank correlation between every pair of ``cols`` over ``rows`` having all of them."""
    data = np.array([[_num(r.get(c)) if _num(r.get(c)) is not None else np.nan for c in cols] for r in rows], dtype=float)
    data = data[~np.isnan(data).any(axis=1)]
    if len(data) < 3:
        return None
    mat = []
    for i in range(len(cols)):
        mat.append([float(stats.spearmanr(data[:, i], data[:, j])[0]) if np.ptp(data[:, i]) and np.ptp(data[:, j])
                    else float("nan") for j in range(len(cols))])
    return mat
