"""`factorvae report DIR`: the paper's figures and tables from a sweep directory, as one
self-contained HTML page (images embedded) plus Markdown with the PNGs beside it.

Contents: trial status; per-setting table (metric, Higgins metric, reconstruction error, true and
discriminator TC, log p(x)); whether FactorVAE beats β-VAE at similar reconstruction; Fig. 4
(metric against reconstruction error, mean ± std over seeds); Fig. 5 (metric over training, needs
``train.eval_every``); Fig. 7 (TC estimates over training, needs ``train.true_tc_every``);
reconstruction over training; the correlation of the FactorVAE and Higgins metrics (§6; Pearson,
Kendall, Spearman with p-values); traversal sheets of the best seed of each setting. Missing
pieces (no evaluation, failed trials) leave a note instead of a figure.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np

from factorvae.errors import UserError

PRIMARY = "factor_vae.eval_accuracy"
SECONDARY = "beta_vae.eval_accuracy"
#: the headline score of each metric, first match wins
MAIN_SCORES = {
    "factor_vae": ["eval_accuracy"],
    "beta_vae": ["eval_accuracy"],
    "mig": ["discrete_mig"],
    "dci": ["disentanglement"],
    "sap": ["SAP_score", "sap_score"],
    "modularity_explicitness": ["modularity_score"],
}
NICE = {"factor_vae.eval_accuracy": "FactorVAE metric", "beta_vae.eval_accuracy": "Higgins (β-VAE) metric",
        "recon": "reconstruction error", "analysis.true_tc": "true TC", "final.tc": "discriminator TC"}
BETA_FAMILY = ("betavae", "vae")
PAPER_NOTE = ("Paper (2D Shapes, 3e5 steps, 10 seeds; spec §4): FactorVAE γ=40 → metric ≈ 0.82, β-VAE β=4 → ≈ 0.73, "
              "reconstruction error ≈ 45; FactorVAE/Higgins metric correlation: Pearson 0.404, Kendall 0.310, "
              "Spearman 0.444. 3D Shapes (1e6 steps): recon 3515 at γ=36 vs 3570 at β=24 with similar metric.")
GREEK = {"gamma": "γ", "beta": "β", "lambda": "λ"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


# -- data ----------------------------------------------------------------------------------

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


def settings_table(rows: list[dict], metrics: list[str]) -> list[dict]:
    """One entry per setting: counts and mean ± std over its finished seeds."""
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
             "n": len(done), "total": len(rs), "rows": rs, "finished": done}
        for col in metrics + ["recon", "analysis.true_tc", "final.tc", "analysis.log_px", "active_dims"]:
            m, s, n = _mean_std(r.get(col) for r in done)
            g[f"{col}:mean"], g[f"{col}:std"], g[f"{col}:n"] = m, s, n
        ks = {r.get("analysis.log_px_k") for r in done if r.get("analysis.log_px_k") is not None}
        g["log_px_k"] = ", ".join(str(k) for k in sorted(ks)) if ks else None
        out.append(g)
    out.sort(key=lambda g: (g["method"], g["order"] if g["order"] is not None else math.inf, g["setting"]))
    return out


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _pm(g: dict, col: str, digits: int = 3) -> str:
    m, s = g.get(f"{col}:mean"), g.get(f"{col}:std")
    if m is None:
        return "–"
    if not s:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s >= 10**-digits else f"{m:.{digits}f} ± {s:.1g}"


def compare_methods(groups: list[dict], metric: str, tolerance: float = 0.1) -> dict | None:
    """Does FactorVAE beat β-VAE at similar reconstruction? For each FactorVAE setting f, the
    β-VAE settings that reconstruct at least about as well (recon <= recon_f·(1 + tolerance))
    are its fair rivals (worse-reconstructing β-VAEs buy their metric with reconstruction, the
    paper's point). f beats β-VAE when its mean metric exceeds every rival's; with no rival, the
    β-VAE setting closest in reconstruction error is shown instead."""
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
        lines.append({
            "factorvae": f["label"], "f_metric": f[f"{metric}:mean"], "f_std": f.get(f"{metric}:std"),
            "f_recon": f["recon:mean"], "betavae": best["label"], "b_metric": best[f"{metric}:mean"],
            "b_std": best.get(f"{metric}:std"), "b_recon": best["recon:mean"], "kind": kind, "delta": d,
            "beats": bool(rivals) and d > 0 or (not rivals and d > 0), "clear": d > spread and d > 0 and min(f["n"], best["n"]) >= 2,
            "n": min(f["n"], best["n"]),
        })
    wins = sum(r["beats"] for r in lines)
    clear = sum(r["clear"] for r in lines)
    best_f = max(fv, key=lambda g: g[f"{metric}:mean"])
    best_b = max(bv, key=lambda g: g[f"{metric}:mean"])
    verdict = (f"FactorVAE beats β-VAE at similar or better reconstruction in {wins} of {len(lines)} FactorVAE "
               f"setting(s) ({clear} by more than one combined std over ≥ 2 seeds). "
               f"Best FactorVAE: {best_f['label']} metric {best_f[f'{metric}:mean']:.3f} at recon "
               f"{best_f['recon:mean']:.1f}; best β-VAE: {best_b['label']} metric {best_b[f'{metric}:mean']:.3f} "
               f"at recon {best_b['recon:mean']:.1f}.")
    return {"lines": lines, "wins": wins, "clear": clear, "total": len(lines), "verdict": verdict,
            "tolerance": tolerance}


def correlations(rows: list[dict], a: str, b: str) -> dict | None:
    """Pearson, Kendall and Spearman correlation (with two-sided p-values) of two metrics over
    the finished trials that have both (paper §6)."""
    from scipy import stats

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
        p = sweep_dir / r["dir"] / "metrics.jsonl"
        if not p.exists():
            continue
        series = {k: {} for k in keys}
        try:
            lines = p.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                rec = json.loads(line)
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


# -- document ------------------------------------------------------------------------------

class Doc:
    """A tiny document model rendered to both HTML (self-contained) and Markdown."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str, cls: str = ""):
        self.blocks.append(("p", text, cls))

    def table(self, headers: list[str], rows: list[list]):
        self.blocks.append(("table", headers, rows))

    def img(self, path: Path, caption: str, rel: str):
        self.blocks.append(("img", Path(path), caption, rel))

    def code(self, text: str):
        self.blocks.append(("code", text))

    def html(self, title: str) -> str:
        parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
                 "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
                 "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;"
                 "padding:3px 7px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
                 "figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:12px;color:#555;"
                 "max-width:640px}img{max-width:100%}.note{color:#666;font-size:13px}.verdict{font-size:16px;"
                 "background:#eef6ee;padding:0.6em;border-left:4px solid #4a4}.warn{background:#fff4e5;padding:0.5em;"
                 "border-left:4px solid #e90}pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                parts.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                cls = f" class='{b[2]}'" if b[2] else ""
                parts.append(f"<p{cls}>{html.escape(b[1])}</p>")
            elif b[0] == "code":
                parts.append(f"<pre>{html.escape(b[1])}</pre>")
            elif b[0] == "table":
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in b[1]) + "</tr>")
                for r in b[2]:
                    parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
                parts.append("</table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode()
                parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[2])}'>"
                             f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2] + "\n")
            elif b[0] == "p":
                out.append(("> " if b[2] in ("verdict", "warn") else "") + b[1] + "\n")
            elif b[0] == "code":
                out.append("```\n" + b[1] + "\n```\n")
            elif b[0] == "table":
                esc = [str(h).replace("|", "\\|") for h in b[1]]
                out.append("| " + " | ".join(esc) + " |")
                out.append("|" + "---|" * len(esc))
                for r in b[2]:
                    out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
                out.append("")
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[3]})\n\n*{b[2]}*\n")
        return "\n".join(out)


# -- the report ----------------------------------------------------------------------------

def _load_sweep(sweep_dir: Path):
    """The sweep's spec (to list trials not started yet), or None when it cannot be re-read."""
    meta = {}
    p = sweep_dir / "sweep.json"
    if p.exists():
        try:
            meta = json.loads(p.read_text())
        except ValueError:
            meta = {}
    sweep = None
    if isinstance(meta.get("spec"), dict):
        from factorvae.sweep import load_spec

        base = Path(meta["source"]).parent if meta.get("source") else sweep_dir
        try:
            sweep = load_spec(meta["spec"], base_dir=base)
        except Exception:  # noqa: BLE001 - config files moved, methods renamed: report what is on disk
            sweep = None
    return meta, sweep


def build_report(sweep_dir: str | Path, out: str | Path | None = None, metric: str | None = None,
                 tolerance: float = 0.1, max_traversals: int = 24) -> dict:
    """Write ``report.html`` (self-contained), ``report.md`` and ``img/*.png`` for the sweep in
    ``sweep_dir``; returns {"html", "markdown", "images", "verdict", ...}."""
    from factorvae.sweep import aggregate
    from factorvae.viz import plots

    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "trials").is_dir() and not (sweep_dir / "sweep.json").exists():
        raise UserError(f"{sweep_dir} is not a sweep directory (no trials/ and no sweep.json); "
                        "run `factorvae sweep SPEC --out DIR` first")
    meta, sweep = _load_sweep(sweep_dir)
    rows = aggregate(sweep_dir, sweep)
    out = Path(out) if out else sweep_dir / "report"
    img = out / "img"
    if img.exists():
        shutil.rmtree(img)
    img.mkdir(parents=True, exist_ok=True)
    name = meta.get("name") or sweep_dir.name
    finished = [r for r in rows if r.get("status") == "finished"]
    scores = main_score_columns(finished)
    if metric is None:
        metric = PRIMARY if PRIMARY in scores else (scores[0] if scores else None)
    elif finished and metric not in {k for r in finished for k in r}:
        raise UserError(f"--metric {metric!r} is not a column of this sweep's results; "
                        f"metric columns: {', '.join(scores) or 'none (no evaluation yet)'}")
    metrics = list(dict.fromkeys([m for m in (metric,) if m] + [m for m in (SECONDARY,) if m in scores] + scores))
    groups = settings_table(rows, metrics)
    images: list[Path] = []
    doc = Doc()
    doc.h(1, f"Sweep report: {name}")
    if meta.get("description"):
        doc.p(meta["description"])
    steps = sorted({int(r["train.steps"]) for r in rows if _num(r.get("train.steps")) is not None})
    presets = sorted({str(r.get("analysis.eval.preset")) for r in finished if r.get("analysis.eval.preset")})
    doc.p(f"{len([r for r in rows if r.get('setting')])} trial(s) in {len(groups)} setting(s); training steps: "
          f"{', '.join(map(str, steps)) or '–'}; generated {time.strftime('%Y-%m-%d %H:%M')} from {sweep_dir}. "
          f"Regenerate with: factorvae report {sweep_dir}", "note")

    # status
    counts: dict = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    doc.h(2, "Trial status")
    doc.table(["status", "trials"], [[k, v] for k, v in sorted(counts.items())])
    problems = [r for r in rows if r["status"] in ("failed", "corrupt", "mismatch", "quarantined", "interrupted")]
    if problems:
        doc.p(f"{len(problems)} trial(s) need attention (rerun the sweep command to resume / retry them; "
              "corrupt ones holding results are left for you to inspect):", "warn")
        doc.table(["trial", "status", "detail"], [[r["trial_id"], r["status"], (r.get("detail") or "")[:200]]
                                                  for r in problems[:100]])

    # headline comparison
    doc.h(2, "Does FactorVAE beat β-VAE at similar reconstruction?")
    cmp_ = compare_methods(groups, metric, tolerance) if metric else None
    if cmp_:
        doc.p(cmp_["verdict"], "verdict")
        doc.table(["FactorVAE", "metric", "recon", "β-VAE rival", "metric", "recon", "Δ metric", "rival kind"],
                  [[ln["factorvae"], _msd(ln["f_metric"], ln["f_std"]), f"{ln['f_recon']:.1f}", ln["betavae"],
                    _msd(ln["b_metric"], ln["b_std"]), f"{ln['b_recon']:.1f}", f"{ln['delta']:+.3f}", ln["kind"]]
                   for ln in cmp_["lines"]])
        doc.p(f"Metric: {NICE.get(metric, metric)}; rivals are β-VAE settings whose mean reconstruction error is at "
              f"most {100 * tolerance:.0f}% above the FactorVAE setting's. Means ± std over finished seeds.", "note")
    else:
        doc.p("Not available: needs finished FactorVAE and β-VAE trials with a metric and a reconstruction error.",
              "note")
    doc.p(PAPER_NOTE, "note")

    # per-setting table
    doc.h(2, "Results per setting (mean ± std over seeds)")
    heads = ["method", "setting", "seeds"] + [NICE.get(m, m) for m in metrics] + [
        "recon (nats)", "true TC", "disc. TC", "log p(x)", "active dims"]
    table = []
    for g in groups:
        lp = _pm(g, "analysis.log_px", 1)
        if g.get("log_px_k") and lp != "–":
            lp += f" (K={g['log_px_k']})"
        table.append([g["method"], g["label"], f"{g['n']}/{g['total']}"] + [_pm(g, m) for m in metrics]
                     + [_pm(g, "recon", 1), _pm(g, "analysis.true_tc", 2), _pm(g, "final.tc", 2), lp,
                        _pm(g, "active_dims", 1)])
    doc.table(heads, table)
    doc.p("recon: Bernoulli NLL summed over pixels, mean over a fixed evaluation set of images (one z ~ q(z|x) "
          "per image, as the training loss); true TC: Monte Carlo over the aggregate posterior (metrics/tc.py); "
          "disc. TC: the discriminator's estimate, mean over the last logging window; log p(x): importance-"
          "sampled (IWAE) bound with K samples per image; active dims: KL > 0.1 nats.", "note")

    # Figure 4
    doc.h(2, "Figure 4: disentanglement against reconstruction")
    made = False
    for m in [metric, SECONDARY] if metric != SECONDARY else [metric]:
        pts = [{"method": g["method"], "method_label": g["method_label"], "label": g["label"], "order": g["order"],
                "recon_mean": g["recon:mean"], "recon_std": g["recon:std"], "metric_mean": g[f"{m}:mean"],
                "metric_std": g[f"{m}:std"], "n": g["n"]}
               for g in groups if m and g.get(f"{m}:mean") is not None and g.get("recon:mean") is not None]
        if pts:
            path = plots.metric_vs_recon(pts, img / f"fig4_{_slug(m)}.png", ylabel=NICE.get(m, m),
                                         title=f"{NICE.get(m, m)} vs reconstruction error (mean ± std over seeds)")
            images.append(path)
            doc.img(path, f"{NICE.get(m, m)} against reconstruction error; one point per setting, bars ± 1 std "
                          f"over seeds (paper Fig. 4).", f"img/{path.name}")
            made = True
    if not made:
        doc.p("No finished trial has both a metric and a reconstruction error yet.", "note")

    # Figure 5 and reconstruction over training
    doc.h(2, "Figure 5: metric over training")
    eval_keys = [f"eval/{m}" for m in metrics]
    cur = read_curves(sweep_dir, rows, eval_keys + ["recon", "tc", "true_tc"])
    made = False
    for m in [metric, SECONDARY] if metric != SECONDARY else [metric]:
        if not m:
            continue
        series = _series(groups, cur, f"eval/{m}")
        if series:
            path = plots.curves(series, img / f"fig5_{_slug(m)}.png", ylabel=NICE.get(m, m),
                                title=f"{NICE.get(m, m)} during training (mean over seeds)")
            images.append(path)
            doc.img(path, f"{NICE.get(m, m)} over training, mean ± std over seeds (paper Fig. 5).", f"img/{path.name}")
            made = True
    if not made:
        doc.p("No metric was logged during training (set train.eval_every in the sweep's base config).", "note")
    series = _series(groups, cur, "recon")
    if series:
        path = plots.curves(series, img / "recon_over_training.png", ylabel="reconstruction error (nats / image)",
                            title="training reconstruction loss (mean over seeds)")
        images.append(path)
        doc.img(path, "Reconstruction loss during training (training batches, mean over each logging window).",
                f"img/{path.name}")

    # Figure 7
    doc.h(2, "Figure 7: total correlation during training")
    series = []
    for i, g in enumerate([g for g in groups if g["setting"] in cur]):
        color = PALETTE[i % len(PALETTE)]
        for key, style, what in (("true_tc", "-", "true TC"), ("tc", "--", "discriminator")):
            if cur[g["setting"]].get(key):
                steps, mean, std = mean_curve(cur[g["setting"]][key])
                series.append({"label": f"{g['method_label']} {g['label']}: {what}", "steps": steps, "mean": mean,
                               "std": std if key == "true_tc" else None, "color": color, "linestyle": style})
    if any("true TC" in s["label"] for s in series):
        path = plots.curves(series, img / "fig7_tc.png", ylabel="total correlation (nats)",
                            title="true TC (solid) and the discriminator's estimate (dashed)")
        images.append(path)
        doc.img(path, "True TC of the aggregate posterior (solid; Monte Carlo, metrics/tc.py) and the "
                      "discriminator's density-ratio estimate (dashed), mean over seeds (paper Fig. 7).",
                f"img/{path.name}")
    else:
        doc.p("No true TC was logged during training (set train.true_tc_every in the sweep's base config).", "note")

    # §6 correlation
    doc.h(2, "Correlation of the FactorVAE and Higgins metrics (§6)")
    corr = correlations(rows, PRIMARY, SECONDARY)
    if corr:
        doc.table(["statistic", "coefficient", "p-value", "paper"],
                  [[n.capitalize(), _fmt(corr[n][0]), _fmt(corr[n][1]), p]
                   for n, p in (("pearson", "0.404"), ("kendall", "0.310"), ("spearman", "0.444"))])
        note = ", ".join(f"{n[0].upper()} {corr[n][0]:.2f}" for n in ("pearson", "kendall", "spearman")
                         if not math.isnan(corr[n][0]))
        methods = [r.get("method") or "" for r in rows if r.get("status") == "finished"
                   and _num(r.get(PRIMARY)) is not None and _num(r.get(SECONDARY)) is not None]
        path = plots.scatter_with_fit(corr["x"], corr["y"], methods, img / "metric_correlation.png",
                                      NICE[PRIMARY], NICE[SECONDARY], note=f"{corr['n']} trials: {note}")
        images.append(path)
        doc.img(path, "Every finished trial; dashed: least-squares line.", f"img/{path.name}")
        doc.p(f"Over {corr['n']} finished trials (two-sided p-values from scipy.stats)." + (
            f" Note: {corr['note']}." if corr.get("note") else ""), "note")
    else:
        doc.p("Needs at least 3 finished trials scored with both metrics.", "note")
    if len(scores) > 2:
        mat = _spearman_matrix(finished, scores)
        if mat:
            doc.p("Spearman rank correlation between all metrics (finished trials):")
            doc.table([""] + [s.split(".")[0] for s in scores],
                      [[scores[i].split(".")[0]] + [_fmt(v, 2) for v in row] for i, row in enumerate(mat)])

    # traversals
    doc.h(2, "Latent traversals: best seed of each setting")
    shown = 0
    for g in groups:
        if shown >= max_traversals or not g["finished"]:
            continue
        key = (lambda r: -(_num(r.get(metric)) or -math.inf)) if metric and any(
            _num(r.get(metric)) is not None for r in g["finished"]) else (lambda r: _num(r.get("recon")) or math.inf)
        best = sorted(g["finished"], key=key)[0]
        src = sweep_dir / best["dir"] / "images" / "traversal_ref0.png"
        if not src.exists():
            continue
        dst = img / f"traversal_{_slug(best['trial_id'])}.png"
        shutil.copyfile(src, dst)
        images.append(dst)
        score = f"{NICE.get(metric, metric)} {_fmt(_num(best.get(metric)))}, " if metric else ""
        doc.img(dst, f"{g['method_label']} {g['label']}, seed {best.get('seed')} ({score}recon "
                     f"{_fmt(_num(best.get('recon')), 4)}): rows = latent dims (labelled with their KL), "
                     "columns = value from -2 to 2.", f"img/{dst.name}")
        shown += 1
    if not shown:
        doc.p("No finished trial with traversal images yet.", "note")

    # all trials
    doc.h(2, "All trials")
    cols = [c for c in (metric, SECONDARY, "recon", "analysis.true_tc", "analysis.log_px") if c]
    doc.table(["trial", "status", "seed"] + [NICE.get(c, c) for c in cols] + ["time (s)"],
              [[r["trial_id"], r["status"], _fmt(r.get("seed"))] + [_fmt(_num(r.get(c)), 4) for c in cols]
               + [_fmt(_num(r.get("seconds")), 4)] for r in rows[:1000]])
    doc.p(f"Full table (every config value and metric as a column): {sweep_dir / 'results.csv'} and "
          f"{sweep_dir / 'results.parquet'}.", "note")

    out.mkdir(parents=True, exist_ok=True)
    from factorvae.runs import atomic_write_bytes

    html_path, md_path = out / "report.html", out / "report.md"
    atomic_write_bytes(html_path, lambda f: f.write(doc.html(f"{name} — factorvae sweep report").encode()))
    atomic_write_bytes(md_path, lambda f: f.write(doc.markdown().encode()))
    result = {"verdict": cmp_["verdict"] if cmp_ else None, "comparison": cmp_,
              "correlation": {k: v for k, v in (corr or {}).items() if k not in ("x", "y")}, "counts": counts,
              "metric": metric, "groups": [{k: v for k, v in g.items() if k not in ("rows", "finished")} for g in groups]}
    atomic_write_bytes(out / "summary.json", lambda f: f.write(json.dumps(result, indent=1, default=str).encode()))
    return {"html": html_path, "markdown": md_path, "summary": out / "summary.json", "images": images, **result}


def _msd(m, s) -> str:
    return f"{m:.3f} ± {s:.3f}" if s else f"{m:.3f}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:100]


def _series(groups: list[dict], cur: dict, key: str) -> list[dict]:
    out = []
    for i, g in enumerate(groups):
        if cur.get(g["setting"], {}).get(key):
            steps, mean, std = mean_curve(cur[g["setting"]][key])
            out.append({"label": f"{g['method_label']} {g['label']}", "steps": steps, "mean": mean, "std": std,
                        "color": PALETTE[i % len(PALETTE)]})
    return out


def _spearman_matrix(rows: list[dict], cols: list[str]):
    from scipy import stats

    data = np.array([[_num(r.get(c)) if _num(r.get(c)) is not None else np.nan for c in cols] for r in rows], dtype=float)
    data = data[~np.isnan(data).any(axis=1)]
    if len(data) < 3:
        return None
    mat = []
    for i in range(len(cols)):
        mat.append([float(stats.spearmanr(data[:, i], data[:, j])[0]) if np.ptp(data[:, i]) and np.ptp(data[:, j])
                    else float("nan") for j in range(len(cols))])
    return mat
