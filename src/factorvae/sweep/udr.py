"""UDR of a sweep's finished trials (Duan et al., ICLR 2020, "Unsupervised Model Selection for
Variational Disentangled Representation Learning", Eq. 2-3; lasso variant, as
disentanglement_lib's ``udr_sklearn``): the one home of the computation behind the table's
``udr_lasso`` / ``udr_lasso_sweep`` columns and the report's UDR section.

Every trial's model encodes the same ``points`` grid points (drawn with ``seed``); a trial's
``within`` score ranks it among the seeds of its setting (one method, one set of
hyper-parameters: the paper's population), ``across`` among all finished trials of its data set
with the same number of latents (codes of other grids or shapes cannot be compared). A
population of fewer than two trials gives no score. Trials whose model cannot be loaded are
left out and named in ``skipped``; nothing here raises for a broken trial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factorvae.errors import UserError
from factorvae.metrics.udr import encode_for_udr, kl_per_dim, udr_scores
from factorvae.runs import load_run, open_dataset


def encode_trials(sweep_dir: Path, rows: list[dict], points: int = 1000, seed: int = 0):
    """{trial_id: (means, log-variances)} of the same grid points per data set, the data set
    of each, and the trials left out (``"id (why)"``)."""
    reps, datasets, skipped, cache = {}, {}, [], {}
    for r in rows:
        try:  # the model first (fails fast on a damaged checkpoint), each data set once
            run = load_run(Path(sweep_dir) / r["dir"], load_data=False)
            name = run.config["data"]["name"]
            if name not in cache:
                dataset = open_dataset(run.config)
                grid = getattr(dataset, "grid", None)
                flat = None if grid is None else grid.index(grid.sample(points, np.random.default_rng(seed)))
                cache[name] = (dataset, flat)
            dataset, flat = cache[name]
            if flat is None:
                skipped.append(f"{r['trial_id']} (data set {name} has no factor grid)")
                continue
            reps[r["trial_id"]] = encode_for_udr(run.model, dataset, flat)
            datasets[r["trial_id"]] = name
        except (UserError, OSError, RuntimeError, KeyError, ValueError) as e:
            skipped.append(f"{r['trial_id']} ({(str(e).splitlines() or [type(e).__name__])[0][:80]})")
    return reps, datasets, skipped


def trial_udr(sweep_dir: str | Path, rows: list[dict], points: int = 1000, seed: int = 0) -> dict:
    """UDR (lasso) of the finished ``rows``: ``within`` and ``across`` ({trial_id: score}),
    ``skipped`` (trials not loadable) and ``codes`` (the encoded trials)."""
    finished = [r for r in rows if r.get("status") == "finished" and r.get("dir")]
    out: dict = {"within": {}, "across": {}, "skipped": [], "codes": {}}
    if len(finished) < 2:
        return out
    codes, datasets, out["skipped"] = encode_trials(Path(sweep_dir), finished, points, seed)
    out["codes"] = codes

    def scores(members: list[str]) -> dict[str, float]:
        res = udr_scores([codes[i][0] for i in members], [kl_per_dim(*codes[i]) for i in members], "lasso")
        return {i: float(s) for i, s in zip(members, res["model_scores"])}

    def populations(key) -> list[list[str]]:
        groups: dict = {}
        for r in finished:
            i = r["trial_id"]
            if i in codes:
                groups.setdefault((key(r), datasets[i], codes[i][0].shape[1]), []).append(i)
        return [m for m in groups.values() if len(m) >= 2]

    for members in populations(lambda r: r.get("setting")):
        out["within"].update(scores(members))
    for members in populations(lambda r: None):
        out["across"].update(scores(members))
    return out


def add_udr_columns(sweep_dir: str | Path, rows: list[dict], points: int = 1000, seed: int = 0) -> list[dict]:
    """``udr_lasso`` (within the trial's setting) and ``udr_lasso_sweep`` (across the sweep) on
    the finished rows that have one; the rows, changed in place."""
    res = trial_udr(sweep_dir, rows, points, seed)
    for r in rows:
        i = r.get("trial_id")
        if i in res["within"]:
            r["udr_lasso"] = res["within"][i]
        if i in res["across"]:
            r["udr_lasso_sweep"] = res["across"][i]
    return rows
