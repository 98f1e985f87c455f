"""`factorvae report DIR`: the paper's figures and tables from a sweep directory, as one
self-contained HTML page (images embedded) plus Markdown with the PNGs beside it.

Read-only above the sweep: the rows come from the trial directories (factorvae.sweep.table,
nothing rewritten), the statistics from factorvae.report.stats; this module lays out one
section per function. Missing pieces (no evaluation, failed trials) leave a note instead of a
figure.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from factorvae.errors import UserError
from factorvae.io import atomic_write_text, read_json
from factorvae.report import pictures
from factorvae.report.document import Doc
from factorvae.report.output import Staging
from factorvae.report.study import section as study_section
from factorvae.report.stats import (ALPHA, MIN_SEEDS, NICE, PAPER_NOTE, PALETTE, PRIMARY, RECON_OUTLIER, SECONDARY, _num,
                                    compare_methods, correlations, flag_trials, hyperparameters, latent_factors,
                                    main_score_columns, mean_curve, read_curves, settings_table, spearman_matrix)
from factorvae.runs import RunDir
from factorvae.sweep import aggregate, load_spec
from factorvae.viz import plots
from factorvae.viz.tiles import label_rows_right, save_png


@dataclass
class _Report:
    """What every section reads (rows, groups of seeds, the metric) and where figures go."""

    sweep_dir: Path
    img: Path
    rows: list[dict]
    finished: list[dict]
    groups: list[dict]
    scores: list[str]
    metric: str | None
    metrics: list[str]
    flags: dict = field(default_factory=dict)
    doc: Doc = field(default_factory=Doc)
    images: list[Path] = field(default_factory=list)

    def figure(self, path: Path, caption: str) -> None:
        self.images.append(path)
        self.doc.img(path, caption, f"img/{path.name}")

    def shown_metrics(self) -> list[str]:
        return [self.metric, SECONDARY] if self.metric != SECONDARY else [self.metric]


def _load_sweep(sweep_dir: Path):
    """The sweep's spec (to list trials not started yet), or None when it cannot be re-read."""
    meta = read_json(sweep_dir / "sweep.json") if (sweep_dir / "sweep.json").exists() else {}
    meta = meta if isinstance(meta, dict) else {}
    sweep = None
    if isinstance(meta.get("spec"), dict):
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
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "trials").is_dir() and not (sweep_dir / "sweep.json").exists():
        raise UserError(f"{sweep_dir} is not a sweep directory (no trials/ and no sweep.json); "
                        "run `factorvae sweep SPEC --out DIR` first")
    out = Path(out) if out else sweep_dir / "report"
    staging = Staging(out)  # refuses an --out holding anything the report did not write
    meta, sweep = _load_sweep(sweep_dir)
    rows = aggregate(sweep_dir, sweep, write=False)
    name = meta.get("name") or sweep_dir.name
    finished = [r for r in rows if r.get("status") == "finished"]
    scores = main_score_columns(finished)
    if metric is None:
        metric = PRIMARY if PRIMARY in scores else (scores[0] if scores else None)
    elif finished and metric not in {k for r in finished for k in r}:
        raise UserError(f"--metric {metric!r} is not a column of this sweep's results; "
                        f"metric columns: {', '.join(scores) or 'none (no evaluation yet)'}")
    metrics = list(dict.fromkeys([m for m in (metric,) if m] + [m for m in (SECONDARY,) if m in scores] + scores))
    with staging as tmp:
        img = tmp / "img"
        img.mkdir()
        flags = flag_trials(rows)
        rep = _Report(sweep_dir, img, rows, finished, settings_table(rows, metrics, flags), scores, metric, metrics,
                      flags)
        _header(rep, name, meta)
        counts = _status(rep)
        cmp_ = _comparison(rep, tolerance)
        _settings(rep)
        _hyperparameters(rep)
        _fig4(rep)
        cur = _fig5(rep)
        _fig7(rep, cur)
        corr = _correlation(rep)
        study_section(rep)
        pictures.metric_rank_correlation(rep)
        _traversals(rep, max_traversals)
        pictures.score_matrices(rep, max_traversals)
        pictures.udr_section(rep)
        _all_trials(rep)

        atomic_write_text(tmp / "report.html", rep.doc.html(f"{name} — factorvae sweep report"))
        atomic_write_text(tmp / "report.md", rep.doc.markdown())
        result = {"verdict": cmp_["verdict"] if cmp_ else None, "comparison": cmp_,
                  "correlation": {k: v for k, v in (corr or {}).items() if k not in ("x", "y")}, "counts": counts,
                  "metric": metric, "flags": flags,
                  "groups": [{k: v for k, v in g.items() if k not in ("rows", "finished")} for g in rep.groups]}
        atomic_write_text(tmp / "summary.json", json.dumps(result, indent=1, default=str))
    return {"html": out / "report.html", "markdown": out / "report.md", "summary": out / "summary.json",
            "images": [out / "img" / p.name for p in rep.images], **result}


def _header(rep: _Report, name: str, meta: dict) -> None:
    doc, rows = rep.doc, rep.rows
    doc.h(1, f"Sweep report: {name}")
    if meta.get("description"):
        doc.p(meta["description"])
    steps = sorted({int(r["train.steps"]) for r in rows if _num(r.get("train.steps")) is not None})
    doc.p(f"{len([r for r in rows if r.get('setting')])} trial(s) in {len(rep.groups)} setting(s); training steps: "
          f"{', '.join(map(str, steps)) or '–'}; generated {time.strftime('%Y-%m-%d %H:%M')} from {rep.sweep_dir}. "
          f"Regenerate with: factorvae report {rep.sweep_dir}", "note")


def _status(rep: _Report) -> dict:
    doc, rows = rep.doc, rep.rows
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
    if rep.flags:
        by_id = {r.get("trial_id"): r for r in rows}
        doc.p(f"{len(rep.flags)} trial(s) flagged: failed, collapsed (0 active dims) or reconstructing over "
              f"{RECON_OUTLIER:g}× worse than the median of their setting's other seeds. Finished flagged trials "
              "are still in the means below (marked there); judge them before trusting those means.", "warn")
        doc.table(["trial", "setting", "seed", "why"],
                  [[t, by_id[t].get("setting") or "–", _fmt(by_id[t].get("seed")), "; ".join(why)]
                   for t, why in rep.flags.items()])
    return counts


def _comparison(rep: _Report, tolerance: float) -> dict | None:
    doc, metric = rep.doc, rep.metric
    doc.h(2, "Does FactorVAE beat β-VAE at similar reconstruction?")
    cmp_ = compare_methods(rep.groups, metric, tolerance) if metric else None
    unscored = [g["label"] for g in rep.groups if metric and g.get(f"{metric}:unscorable")]
    if cmp_:
        answer = verdict_answer(cmp_)
        doc.p(f"{ANSWER[answer]}: {cmp_['verdict']}", f"verdict {answer}")
        doc.table(["FactorVAE", "metric", "recon", "β-VAE rival", "metric", "recon", "Δ metric", "rival kind",
                   "outcome"],
                  [[ln["factorvae"], _msd(ln["f_metric"], ln["f_std"]), f"{ln['f_recon']:.1f}", ln["betavae"],
                    _msd(ln["b_metric"], ln["b_std"]), f"{ln['b_recon']:.1f}", f"{ln['delta']:+.3f}", ln["kind"],
                    f"{ln['outcome']} ({ln['why']})"] for ln in cmp_["lines"]])
    elif unscored:
        doc.p(f"Inconclusive: {NICE.get(metric, metric)} could not score seeds of {', '.join(unscored)} "
              f"({_unscorable_text(rep.groups, metric)}).", "verdict inconclusive")
    if cmp_ or unscored:
        doc.p(f"Metric: {NICE.get(metric, metric)}; rivals are β-VAE settings whose mean reconstruction error is at "
              f"most {100 * tolerance:.0f}% above the FactorVAE setting's. Means ± std over finished seeds. "
              f"A comparison is inconclusive with fewer than {MIN_SEEDS} scored seeds on either side, when a seed "
              f"could not be scored or the FactorVAE metric found 0 active dims, or when Welch's t-test (unequal "
              f"variances) gives p ≥ {ALPHA:g}.", "note")
    else:
        doc.p("Not available: needs finished FactorVAE and β-VAE trials with a metric and a reconstruction error.",
              "note")
    doc.p(PAPER_NOTE, "note")
    return cmp_


ANSWER = {"yes": "Yes", "mixed": "Partly", "no": "No", "inconclusive": "Inconclusive"}


def verdict_answer(cmp_: dict) -> str:
    """The verdict box's class and colour: yes (every FactorVAE setting beats its β-VAE rivals,
    green), no (every one loses, red), inconclusive (no comparison is decided: stats.judge,
    grey), mixed (the rest, amber)."""
    wins, total, open_ = cmp_["wins"], cmp_["total"], cmp_.get("inconclusive", 0)
    if open_ == total:
        return "inconclusive"
    return "yes" if wins == total else ("no" if wins == 0 and not open_ else "mixed")


def _unscorable_text(groups: list[dict], metric: str) -> str:
    """The distinct reasons a metric could not score, for a table cell or a sentence."""
    return "; ".join(dict.fromkeys(r for g in groups for r in g.get(f"{metric}:unscorable") or []))


def _settings(rep: _Report) -> None:
    doc = rep.doc
    doc.h(2, "Results per setting (mean ± std over seeds)")
    heads = ["method", "setting", "seeds"] + [NICE.get(m, m) for m in rep.metrics] + [
        "recon (nats)", "true TC", "disc. TC", "log p(x)", "active dims"]
    table = []
    for g in rep.groups:
        lp = _pm(g, "analysis.log_px", 1)
        if g.get("log_px_k") and lp != "–":
            lp += f" (K={g['log_px_k']})"
        seeds = f"{g['n']}/{g['total']}" + (f" ({g['flagged']} flagged)" if g.get("flagged") else "")
        table.append([g["method"], g["label"], seeds] + [_pm_scored(g, m) for m in rep.metrics]
                     + [_pm(g, "recon", 1), _pm(g, "analysis.true_tc", 2), _pm(g, "final.tc", 2), lp,
                        _pm(g, "active_dims", 1)])
    doc.table(heads, table)
    doc.p("recon: Bernoulli NLL summed over pixels, mean over a fixed evaluation set of images (one z ~ q(z|x) "
          "per image, as the training loss); true TC: Monte Carlo over the aggregate posterior (metrics/tc.py); "
          "disc. TC: the discriminator's estimate, mean over the last logging window; log p(x): importance-"
          "sampled (IWAE) bound with K samples per image; active dims: KL > 0.1 nats.", "note")


def _hyperparameters(rep: _Report) -> None:
    rep.doc.h(2, "Hyper-parameters of each setting")
    varying, values, shared = hyperparameters(rep.groups)
    if not rep.groups:
        rep.doc.p("No setting yet.", "note")
        return
    rep.doc.table(["method", "setting"] + varying,
                  [[g["method"], g["label"]] + [_fmt(v) for v in vals] for g, vals in zip(rep.groups, values)])
    if shared:
        rep.doc.p("Shared by every setting: " + ", ".join(f"{k}={_fmt(v)}" for k, v in shared.items()) + ".", "note")


def _fig4(rep: _Report) -> None:
    rep.doc.h(2, "Figure 4: disentanglement against reconstruction")
    made = False
    for m in rep.shown_metrics():
        pts = [{"method": g["method"], "method_label": g["method_label"], "label": g["label"], "order": g["order"],
                "recon_mean": g["recon:mean"], "recon_std": g["recon:std"], "metric_mean": g[f"{m}:mean"],
                "metric_std": g[f"{m}:std"], "n": g["n"]}
               for g in rep.groups if m and g.get(f"{m}:mean") is not None and g.get("recon:mean") is not None]
        if pts:
            path = plots.metric_vs_recon(pts, rep.img / f"fig4_{_slug(m)}.png", ylabel=NICE.get(m, m),
                                         title=f"{NICE.get(m, m)} vs reconstruction error (mean ± std over seeds)")
            rep.figure(path, f"{NICE.get(m, m)} against reconstruction error; one point per setting, bars ± 1 std "
                             f"over seeds (paper Fig. 4).")
            made = True
    if not made:
        rep.doc.p("No finished trial has both a metric and a reconstruction error yet.", "note")


def _fig5(rep: _Report) -> dict:
    """Fig. 5 (metric over training) and the reconstruction loss over training; returns the curves."""
    rep.doc.h(2, "Figure 5: metric over training")
    eval_keys = [f"eval/{m}" for m in rep.metrics]
    cur = read_curves(rep.sweep_dir, rep.rows, eval_keys + ["recon", "tc", "true_tc"])
    made = False
    for m in rep.shown_metrics():
        if not m:
            continue
        series = _series(rep.groups, cur, f"eval/{m}")
        if series:
            path = plots.curves(series, rep.img / f"fig5_{_slug(m)}.png", ylabel=NICE.get(m, m),
                                title=f"{NICE.get(m, m)} during training (mean over seeds)")
            rep.figure(path, f"{NICE.get(m, m)} over training, mean ± std over seeds (paper Fig. 5).")
            made = True
    if not made:
        rep.doc.p("No metric was logged during training (set train.eval_every in the sweep's base config).", "note")
    series = _series(rep.groups, cur, "recon")
    if series:
        path = plots.curves(series, rep.img / "recon_over_training.png", ylabel="reconstruction error (nats / image)",
                            title="training reconstruction loss (mean over seeds)")
        rep.figure(path, "Reconstruction loss during training (training batches, mean over each logging window).")
    return cur


def _fig7(rep: _Report, cur: dict) -> None:
    rep.doc.h(2, "Figure 7: total correlation during training")
    series = []
    for i, g in enumerate([g for g in rep.groups if g["setting"] in cur]):
        color = PALETTE[i % len(PALETTE)]
        for key, style, what in (("true_tc", "-", "true TC"), ("tc", "--", "discriminator")):
            if cur[g["setting"]].get(key):
                steps, mean, std = mean_curve(cur[g["setting"]][key])
                series.append({"label": f"{g['method_label']} {g['label']}: {what}", "steps": steps, "mean": mean,
                               "std": std if key == "true_tc" else None, "color": color, "linestyle": style})
    if any("true TC" in s["label"] for s in series):
        path = plots.curves(series, rep.img / "fig7_tc.png", ylabel="total correlation (nats)",
                            title="true TC (solid) and the discriminator's estimate (dashed)")
        rep.figure(path, "True TC of the aggregate posterior (solid; Monte Carlo, metrics/tc.py) and the "
                         "discriminator's density-ratio estimate (dashed), mean over seeds (paper Fig. 7).")
    else:
        rep.doc.p("No true TC was logged during training (set train.true_tc_every in the sweep's base config).",
                  "note")


def _correlation(rep: _Report) -> dict | None:
    doc, rows, scores = rep.doc, rep.rows, rep.scores
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
        path = plots.scatter_with_fit(corr["x"], corr["y"], methods, rep.img / "metric_correlation.png",
                                      NICE[PRIMARY], NICE[SECONDARY], note=f"{corr['n']} trials: {note}")
        rep.figure(path, "Every finished trial; dashed: least-squares line.")
        doc.p(f"Over {corr['n']} finished trials (two-sided p-values from scipy.stats)." + (
            f" Note: {corr['note']}." if corr.get("note") else ""), "note")
    else:
        doc.p("Needs at least 3 finished trials scored with both metrics.", "note")
    if len(scores) > 2:
        mat = spearman_matrix(rep.finished, scores)
        if mat:
            doc.p("Spearman rank correlation between all metrics (finished trials):")
            doc.table([""] + [NICE.get(s, s) for s in scores],
                      [[NICE.get(scores[i], scores[i])] + [_fmt(v, 2) for v in row] for i, row in enumerate(mat)])
    return corr


def _traversals(rep: _Report, max_traversals: int) -> None:
    metric = rep.metric
    rep.doc.h(2, "Latent traversals: best seed of each setting")
    shown = 0
    for g in rep.groups:
        if shown >= max_traversals or not g["finished"]:
            continue
        key = (lambda r: -(_num(r.get(metric)) or -math.inf)) if metric and any(
            _num(r.get(metric)) is not None for r in g["finished"]) else (lambda r: _num(r.get("recon")) or math.inf)
        best = sorted(g["finished"], key=key)[0]
        images = rep.sweep_dir / best["dir"] / "images"
        src = images / "traversal_ref0.png"
        if not src.exists():
            continue
        run = RunDir(rep.sweep_dir / best["dir"])
        factors, source = latent_factors(run.read_eval())
        dst = rep.img / f"traversal_{_slug(best['trial_id'])}.png"
        z_dim = _num(best.get("model.z_dim"))
        labelled = None
        if factors is not None and z_dim == len(factors):
            with Image.open(src) as im:
                # ASCII "-": the default bitmap font has no glyph for a typographic dash
                labelled = label_rows_right(im, len(factors), [f or "-" for f in factors])
        if labelled is not None:
            save_png(labelled, dst)
        else:
            shutil.copyfile(src, dst)
        score = f"{NICE.get(metric, metric)} {_fmt(_num(best.get(metric)))}, " if metric else ""
        mapping = (f" Right of each row: the factor that latent captures ({source}; – none): "
                   + ", ".join(f"z{j} {f or '–'}" for j, f in enumerate(factors)) + "." if factors else "")
        rep.figure(dst, f"{g['method_label']} {g['label']}, seed {best.get('seed')} ({score}recon "
                        f"{_fmt(_num(best.get('recon')), 4)}): rows = latent dims (left: their KL in nats), "
                        f"columns = value from -2 to 2 (first column, in sheets drawn since issue 24: the input "
                        f"image).{mapping}")
        if (images / "reconstructions.png").exists():
            rdst = rep.img / f"reconstructions_{_slug(best['trial_id'])}.png"
            shutil.copyfile(images / "reconstructions.png", rdst)
            rep.figure(rdst, f"{g['method_label']} {g['label']}, seed {best.get('seed')}: data (top row) and "
                             "reconstructions (bottom row, decoder means of the encoder means).")
        shown += 1
    if not shown:
        rep.doc.p("No finished trial with traversal images yet.", "note")


def _all_trials(rep: _Report) -> None:
    doc = rep.doc
    doc.h(2, "All trials")
    cols = list(dict.fromkeys(c for c in (rep.metric, SECONDARY, *rep.scores, "recon", "analysis.true_tc",
                                          "analysis.log_px", "active_dims") if c))
    units = {"recon": " (nats)", "analysis.true_tc": " (nats)", "analysis.log_px": " (nats)"}
    phases = ["train_seconds", "metrics_seconds", "analysis_seconds"]
    doc.table(["trial", "setting", "seed", "status"] + [NICE.get(c, c) + units.get(c, "") for c in cols]
              + ["train (s)", "metrics (s)", "analyses (s)", "flagged"],
              [[r["trial_id"], r.get("setting") or "–", _fmt(r.get("seed")), r["status"]]
               + [_cell(r, c) for c in cols] + [_fmt(_num(r.get(c)), 4) for c in phases]
               + ["; ".join(rep.flags.get(r["trial_id"], [])) or ""]
               for r in rep.rows[:1000]])
    doc.p("train / metrics / analyses: wall seconds of each phase of a trial (analyses: reconstruction error, "
          "true TC, log p(x)); a trial trained over several attempts adds them up, one trained in a group shows the "
          "group's training time; n/a: the metric could not "
          "score (the reason is given), which is not a score of 0.", "note")
    doc.p(f"Full table (every config value and metric as a column): {rep.sweep_dir / 'results.csv'} and "
          f"{rep.sweep_dir / 'results.parquet'}.", "note")


# -- formatting ----------------------------------------------------------------------------

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


def _cell(r: dict, col: str) -> str:
    """One trial's value, or "n/a (reason)" where its metric could not score."""
    if _num(r.get(col)) is None and r.get(col.split(".")[0] + ".unscorable"):
        return f"n/a ({r[col.split('.')[0] + '.unscorable']})"
    return _fmt(_num(r.get(col)), 4)


def _pm_scored(g: dict, col: str) -> str:
    """mean ± std, with "n/a (reason)" for seeds whose metric could not score (never a 0)."""
    reasons = g.get(f"{col}:unscorable") or []
    if not reasons:
        return _pm(g, col)
    na = f"n/a ({reasons[0]})" if len(reasons) == len(g["finished"]) else f"{len(reasons)} seed(s) n/a ({reasons[0]})"
    return na if g.get(f"{col}:mean") is None else f"{_pm(g, col)}; {na}"


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
