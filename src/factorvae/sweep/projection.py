"""What a sweep will cost before it starts (``factorvae sweep``, also with ``--dry-run``):
training projected from timed steps, the metrics from their records (``metrics.plan``), each
analysis from ``sweep.trial.analysis_cost``.

Cost per step depends on the method, its networks, the batch size and the image channels, not
on the hyper-parameter values a grid varies; so each distinct (method, model options without
the per-run ones, batch size, channels) is timed once: a throwaway model takes ``WARMUP`` then
``STEPS`` training steps on random images on the trials' device, and every trial of that kind
is projected at the measured rate.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from factorvae.data import get_dataset_info, image_channels
from factorvae.methods import get_method
from factorvae.metrics.plan import describe as describe_metrics, duration
from factorvae.runs import build_model, pick_device
from factorvae.sweep.spec import QUICK_ANALYSES
from factorvae.sweep.trial import analysis_cost
from factorvae.sweep.trialdir import inspect_trial
from factorvae.usecases.train import usable_cores

WARMUP = 1
STEPS = 3


def _kind(trial) -> str:
    cls = get_method(trial.method)
    per_run = set(getattr(cls, "group_options", cls.group_hparams))
    model = {k: v for k, v in trial.config["model"].items() if k not in per_run}
    d = trial.config["data"]
    return json.dumps([model, trial.config["train"]["batch_size"], image_channels(d["name"], d.get("channels"))],
                      sort_keys=True, default=str)


def step_rate(cfg: dict, device: torch.device) -> float:
    """Training steps per second of a throwaway copy of ``cfg``'s model on random images."""
    channels = image_channels(cfg["data"]["name"], cfg["data"].get("channels"))
    model, _ = build_model(cfg, channels, device)
    model.train()
    if hasattr(model, "set_dataset_size"):
        model.set_dataset_size(737_280)  # the estimator's N does not change the cost
    b = cfg["train"]["batch_size"]
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((b, channels, 64, 64), generator=gen, device=device)
    x2 = (torch.rand((b * model.second_batches, channels, 64, 64), generator=gen, device=device)
          if model.needs_second_batch else None)
    for i in range(WARMUP):
        model.train_step(x, x2, i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(STEPS):
        model.train_step(x, x2, WARMUP + i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return STEPS / (time.perf_counter() - t0)


def project(trials, remaining: dict | None = None) -> dict:
    """{"device", "seconds" (every trial's training steps at its kind's measured rate),
    "per_trial": {id: seconds}, "rates": {id: steps/s}, "by_method": {method: {"trials",
    "steps", "seconds", "rates"}}}. ``remaining``: {trial id: steps still to train} (default:
    all of each trial's steps)."""
    if not trials:
        return {"device": None, "seconds": 0.0, "per_trial": {}, "rates": {}, "by_method": {}}
    device = pick_device(trials[0].config["train"]["device"])
    rates: dict[str, float] = {}
    out: dict = {}
    per_trial, trial_rates = {}, {}
    for t in trials:
        k = _kind(t)
        if k not in rates:
            rates[k] = step_rate(t.config, device)
        m = out.setdefault(t.method, {"trials": 0, "steps": 0, "seconds": 0.0, "rates": set()})
        steps = int(t.config["train"]["steps"] if remaining is None else remaining[t.id])
        m["trials"] += 1
        m["steps"] += steps
        per_trial[t.id], trial_rates[t.id] = steps / rates[k], rates[k]
        m["seconds"] += per_trial[t.id]
        m["rates"].add(round(rates[k], 2))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} ({torch.get_num_threads()} threads)"
    return {"device": name, "seconds": sum(m["seconds"] for m in out.values()), "per_trial": per_trial,
            "rates": trial_rates, "by_method": {k: {**v, "rates": sorted(v["rates"])} for k, v in out.items()}}


def describe(p: dict) -> list[str]:
    """Lines for the user: the training projection, per method."""
    def dur(s):
        return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s:,.0f} s"
    lines = [f"projected device time (training only, one trial at a time, on {p['device']}): {dur(p['seconds'])}"
             + (f" = {p['seconds'] / 86400 / 365.25:,.2f} device-years" if p["seconds"] > 86400 * 365.25 / 10 else "")]
    for name, m in p["by_method"].items():
        rate = "/".join(f"{r:g}" for r in m["rates"])
        lines.append(f"  {name:<12} {m['trials']:>6,} trials x {m['steps'] // max(1, m['trials']):,} steps at {rate} "
                     f"steps/s (measured over {STEPS} steps): {dur(m['seconds'])}")
    return lines


def plan_lines(sweep, out: Path, only: str | None, workers: int, threads: int | None) -> list[str]:
    """What the unfinished trials of ``sweep`` will cost on this machine: training
    (:func:`project`), metrics (``metrics.plan``) and each analysis (``analysis_cost``); the
    first trial in full, the training per method, the projected total over the workers."""
    todo = []
    for t in sweep.trials:
        if only and only not in t.id:
            continue
        st = inspect_trial(out / "trials" / t.id, t)
        if st.status != "finished":
            todo.append((t, 0 if st.status == "trained" else t.config["train"]["steps"] - (st.step or 0)))
    if not todo:
        return []
    n_threads = threads or todo[0][0].config["train"].get("threads") or max(1, usable_cores() // max(workers, 1))
    old = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        p = project([t for t, _ in todo], remaining={t.id: steps for t, steps in todo})
    finally:
        torch.set_num_threads(old)
    lines, total, metric_cost = [], 0.0, {}
    for t, steps in todo:
        grid = get_dataset_info(t.dataset).grid
        key = (t.eval["preset"], json.dumps(t.eval["metrics"]), t.dataset)
        if key not in metric_cost:  # one plan per (preset, metrics, data set), not per trial
            metric_cost[key] = None
            if grid is not None and t.eval["metrics"] != []:
                metric_cost[key] = describe_metrics(t.eval["preset"], t.eval["metrics"], grid=grid,
                                                    channels=get_dataset_info(t.dataset).channels)["expected_seconds"]
        metrics = metric_cost[key]
        analyses = analysis_cost(t.eval, len(grid)) if grid is not None else {}
        train = p["per_trial"][t.id]
        total += train + (metrics or 0) + sum(a["seconds"] for a in analyses.values())
        if not lines:  # the first trial in full; the others add to the total
            lines.append(
                f"plan, trial {t.id}: training {steps:,} steps ~{duration(train)} ({p['rates'][t.id]:.1f} steps/s timed "
                f"with {n_threads} thread(s), load average {os.getloadavg()[0]:.1f}); metrics (preset "
                f"{t.eval['preset']}) ~{duration(metrics) if metrics is not None else '? (not measured)'}; "
                + "; ".join(f"{a['what']} ~{duration(a['seconds'])}" for a in analyses.values()))
            quick = analysis_cost({**t.eval, **QUICK_ANALYSES}, len(grid)) if grid is not None else {}
            if analyses and sum(a["seconds"] for a in quick.values()) < 0.5 * sum(a["seconds"] for a in analyses.values()):
                lines.append(f"  the analyses take ~{duration(sum(a['seconds'] for a in quick.values()))} with "
                             "--set eval.analyses=quick (true TC on a 10,000-image subset: up to ~1 nat under "
                             "the exact value; README, 'What a sweep costs')")
    lines += describe(p)
    par = max(1, min(workers or 1, len(todo)))
    lines.append(f"plan: {len(todo)} trial(s) to run, ~{duration(total / par)} projected on {par} worker(s) "
                 "(training as timed just now; metrics and analyses as on one idle core: slower on a busy machine)")
    return lines
