"""Running one trial: train (or resume) its run directory, then evaluate it. Runs in a worker
process (local pool or Ray task) or in-process; never raises for a failing trial."""

from __future__ import annotations

import copy
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

from factorvae.errors import UserError
from factorvae.group_train import evaluate_group, train_group
from factorvae.io import Busy, atomic_write_json
from factorvae.loggers import log_scores
from factorvae.methods.base import GaussianVAEBase
from factorvae.metrics.likelihood import estimate_log_likelihood
from factorvae.metrics.plan import describe, duration, format_plan
from factorvae.metrics.recon import reconstruction_error
from factorvae.metrics.sampled import evaluate_model
from factorvae.metrics.suite import headline
from factorvae.metrics.tc import model_total_correlation
from factorvae.runs import RunDir, load_run, open_dataset
from factorvae.sweep.spec import Trial
from factorvae.sweep.trialdir import TrialState, inspect_trial, quarantine, write_error, write_trial_json
from factorvae.usecases.train import train_run

_DATASETS: dict = {}

#: CPU seconds per unit of each analysis: per image encoded, per TC sample x mixture image, per
#: reconstructed image, per image x importance sample (benchmarks/analysis_cost.py: the paper's
#: dSprites networks, 1 thread, CPU time measured at load average 6.4 on the 2-core machine).
ANALYSIS_COST = {"encode": 4.3e-4, "tc_pair": 8.7e-8, "recon": 9.3e-4, "log_px": 3.3e-4}


def analysis_cost(ev: dict, num_images: int) -> dict:
    """{analysis: {"what", "seconds"}} for a trial's eval settings (``Trial.eval``) on a data
    set of ``num_images``: what each analysis does and its expected CPU seconds (ANALYSIS_COST)."""
    c, out = ANALYSIS_COST, {}
    if ev.get("recon_images"):
        n = min(ev["recon_images"], num_images)
        out["recon"] = {"what": f"reconstruction error of {n:,} images", "seconds": n * c["recon"]}
    if ev.get("true_tc"):
        m = num_images if ev["true_tc"]["data"] <= 0 else min(ev["true_tc"]["data"], num_images)
        s = min(ev["true_tc"]["samples"], m)
        exact = "the exact mixture of all" if m == num_images else "a subset of"
        out["true_tc"] = {"what": f"true TC, {s:,} samples over {exact} {m:,} images",
                          "seconds": m * c["encode"] + s * m * c["tc_pair"]}
    ll = ev.get("log_likelihood")
    if ll and ll["images"] and ll["samples"]:
        n = min(ll["images"], num_images)
        out["log_px"] = {"what": f"log p(x) of {n:,} images, K = {ll['samples']}",
                         "seconds": n * ll["samples"] * c["log_px"]}
    return out


def _phase_log(trial_id: str):
    """One line per phase of a trial on stderr (worker processes share the driver's)."""
    def log(line: str) -> None:
        print(f"  [{trial_id}] {line}", file=sys.stderr, flush=True)
    return log


def _load_dataset(cfg: dict):
    """Each worker process keeps its data sets (memory-mapped; shared pages across processes)."""
    d = cfg["data"]
    key = (d["name"], d.get("path"), d.get("cache_dir"), d.get("channels"), d.get("scream_path"))
    if key not in _DATASETS:
        _DATASETS[key] = open_dataset(cfg, progress=False)
    return _DATASETS[key]


def _train(cfg, out, resume, progress, dataset):  # a seam for tests (fault injection)
    # threads=0: run_trial has set this trial's share of the cores
    return train_run(out, cfg, resume=resume, threads=0, progress=progress, dataset=dataset, out_flag=None)


def run_trial(trial: Trial, trial_dir: str, threads: int = 0, progress: bool = False,
              scores: dict | None = None) -> dict:
    """Train (or resume) and evaluate one trial under its run directory's lock; never raises for
    a failing trial: the traceback goes to ``trial_dir/error.txt`` and the result says ``failed``.
    A trial another process holds (a worker of a killed driver, still training it) is left to
    it: the result says ``busy``. ``scores``: the metric suite's result, already computed (a
    group's batched evaluation)."""
    d = Path(trial_dir)
    try:
        with RunDir(d).lock():
            return _run_trial_locked(trial, d, threads, progress, scores)
    except Busy as e:
        return {"id": trial.id, "status": "busy", "action": "skipped", "seconds": 0.0, "error": str(e)}
    except UserError as e:  # the lock file cannot be written: read-only or full file system
        return {"id": trial.id, "status": "failed", "action": "", "seconds": 0.0, "error": str(e)}


def _run_trial_locked(trial: Trial, d: Path, threads: int, progress: bool, scores: dict | None) -> dict:
    t0 = time.time()
    result = {"id": trial.id, "status": "failed", "action": "", "seconds": 0.0, "error": ""}
    attempt = {"id": os.urandom(4).hex(), "start": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": os.uname().nodename,
               "pid": os.getpid()}
    old_threads = 0
    try:
        threads = int(trial.config["train"].get("threads") or threads or 0)  # the spec's, else the engine's
        if threads:
            old_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        state = inspect_trial(d, trial)
        if state.status == "finished":
            return {**result, "status": "finished", "action": "skipped"}
        if state.status == "mismatch" or (state.status == "corrupt" and state.has_results):
            msg = f"{state.detail}; holds results, left untouched: inspect or remove {d} to rerun it"
            return {**result, "status": state.status, "action": "left alone", "error": msg}
        if state.status == "corrupt":
            moved = quarantine(d, state.detail)
            attempt["restarted_from_corrupt"] = f"{state.detail} (moved to {moved})"
            state = TrialState("pending", trial=trial)
        d.mkdir(parents=True, exist_ok=True)
        (d / "error.txt").unlink(missing_ok=True)
        cfg = copy.deepcopy(trial.config)
        cfg["train"]["threads"] = threads
        _clear_unresumable(d, state)
        attempt["from_status"] = state.status
        attempt["from_step"] = state.step if state.checkpoint_ok else 0
        write_trial_json(d, trial, attempt)
        dataset = _load_dataset(cfg)
        log = _phase_log(trial.id)
        if state.status != "trained":
            resume = state.checkpoint_ok
            result["action"] = f"resumed from step {state.step}" if resume else "trained"
            log(f"training {cfg['train']['steps'] - (state.step if resume else 0):,} steps"
                + (f" from step {state.step}" if resume else ""))
            t_train = time.time()
            _train(cfg, d, resume, progress, dataset)
            attempt["train_seconds"] = round(time.time() - t_train, 2)
        else:
            result["action"] = "evaluated"
        evaluate_trial(d, trial, dataset, scores, log=log)
        result["status"] = "finished"
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - one failing trial never stops the sweep
        write_error(d, trial.id, traceback.format_exc())
        result["error"] = f"{type(e).__name__}: {e}"[:500]
    finally:
        if old_threads:
            torch.set_num_threads(old_threads)
    result["seconds"] = round(time.time() - t0, 2)
    attempt.update({"seconds": result["seconds"], "status": result["status"], "action": result["action"]})
    if result["error"]:
        attempt["error"] = result["error"]
    try:
        write_trial_json(d, trial, attempt)
    except OSError:
        pass
    return result


def _clear_unresumable(d: Path, state: TrialState) -> None:
    if state.status != "trained" and not state.checkpoint_ok and (d / "config.yaml").exists():
        # started, but no checkpoint: nothing worth keeping in the run files; start over
        for p in ("metrics.jsonl", "summary.json", "eval.json", "analysis.json"):
            (d / p).unlink(missing_ok=True)
        shutil.rmtree(d / "tb", ignore_errors=True)


def _train_group(cfgs, outs, resumes, progress, dataset):  # a seam for tests (fault injection)
    return train_group(cfgs, outs, resume=resumes, progress=progress, dataset=dataset)


def run_group(trials: list[Trial], trial_dirs: list[str], threads: int = 0, progress: bool = False) -> list[dict]:
    """Train trials of one group key (factorvae.group.group_key) as one vectorised group
    (factorvae.group_train), then evaluate each through ``run_trial``; one result per trial, in
    order. Trials that are finished, trained, corrupt or mismatched are left to ``run_trial``,
    so each keeps exactly the handling it gets alone. Never raises for failing trials."""
    if len(trials) == 1:
        return [run_trial(trials[0], trial_dirs[0], threads, progress)]
    members, failed, t0 = [], {}, time.time()
    old_threads = 0
    try:
        threads = int(trials[0].config["train"].get("threads") or threads or 0)
        if threads:
            old_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        for trial, td in zip(trials, trial_dirs):
            d, state = Path(td), inspect_trial(td, trial)
            if state.status in ("pending", "interrupted", "failed") and not state.extra.get("trained"):
                members.append((trial, d, state))
        if len(members) > 1:
            ids = [t.id for t, _, _ in members]
            cfgs, resumes, attempts = [], [], []
            for trial, d, state in members:
                d.mkdir(parents=True, exist_ok=True)
                (d / "error.txt").unlink(missing_ok=True)
                _clear_unresumable(d, state)
                attempt = {"id": os.urandom(4).hex(), "start": time.strftime("%Y-%m-%dT%H:%M:%S"),
                           "host": os.uname().nodename, "pid": os.getpid(), "group": ids,
                           "from_status": state.status, "from_step": state.step if state.checkpoint_ok else 0}
                write_trial_json(d, trial, attempt)
                attempts.append(attempt)
                cfg = copy.deepcopy(trial.config)
                cfg["train"]["threads"] = threads
                cfgs.append(cfg)
                resumes.append(state.checkpoint_ok)
            try:
                t_train = time.time()
                summaries = _train_group(cfgs, [d for _, d, _ in members], resumes, progress, _load_dataset(cfgs[0]))
                for (trial, d, _), attempt in zip(members, attempts):  # the group's time: its members trained together
                    write_trial_json(d, trial, {**attempt, "train_seconds": round(time.time() - t_train, 2)})
            except KeyboardInterrupt:
                raise
            except BaseException:  # noqa: BLE001 - the group's trials fail; the sweep goes on
                tb = traceback.format_exc()
                summaries = [{"status": "failed", "error": tb.strip().splitlines()[-1]} for _ in members]
                for trial, d, _ in members:
                    write_error(d, trial.id, f"training its group ({', '.join(ids)}) failed:\n\n{tb}")
            for (trial, d, _), summary in zip(members, summaries):
                if summary.get("status") == "failed":
                    if not (d / "error.txt").exists():
                        write_error(d, trial.id, summary["error"] + "\n")
                    failed[trial.id] = summary["error"][:500]
    finally:
        if old_threads:
            torch.set_num_threads(old_threads)
    grouped = {t.id for t, _, _ in members} if len(members) > 1 else set()
    scores = _evaluate_grouped([(t, d) for t, d, _ in members if t.id in grouped and t.id not in failed])
    seconds = round(time.time() - t0, 2)
    results = []
    for trial, td in zip(trials, trial_dirs):
        if trial.id in failed:
            results.append({"id": trial.id, "status": "failed", "action": f"trained in a group of {len(grouped)}",
                            "seconds": seconds, "error": failed[trial.id]})
            continue
        res = run_trial(trial, td, threads, progress, scores.get(trial.id))
        if trial.id in grouped and res["action"] == "evaluated":
            res = {**res, "action": f"trained in a group of {len(grouped)}, evaluated"}
        results.append(res)
    return results


def _evaluate_grouped(trained: list[tuple[Trial, Path]]) -> dict:
    """Metric scores of a group's trained trials, the grid encoded in one batched pass for all
    (factorvae.group_train.evaluate_group); {} when there is nothing to share or it fails (each
    trial is then scored alone, as without a group)."""
    ev = trained[0][0].eval if trained else None
    if len(trained) < 2 or ev["metrics"] == [] or any(t.eval != ev for t, _ in trained):
        return {}
    try:
        runs = [load_run(d, device=t.config["train"]["device"], load_data=False) for t, d in trained]
        dataset = _load_dataset(runs[0].config)
        if dataset.grid is None:
            return {}
        dataset.to(next(runs[0].model.parameters()).device)
        scores = evaluate_group([r.model for r in runs], dataset, ev["preset"], ev["seed"], ev["metrics"],
                                runs[0].config["train"]["group_strategy"])
    except Exception:  # noqa: BLE001 - a fallback: each trial's own evaluation reports its problem
        return {}
    return {t.id: s for (t, _), s in zip(trained, scores)}


def evaluate_trial(d: Path, trial: Trial, dataset, scores: dict | None = None, log=None) -> dict:
    """Metric suite -> eval.json; reconstruction error, true TC and log p(x) -> analysis.json
    (written last, with the eval hash: its presence marks the trial finished). ``log`` gets one
    line before each phase (what it does, its expected cost) and one with the phases' times."""
    log = log or (lambda line: None)
    ev = trial.eval
    run = load_run(d, device=trial.config["train"]["device"], load_data=False)
    model = run.model
    dataset.to(next(model.parameters()).device)
    t0 = time.time()
    # eval.sampled: also z ~ q(z|x), one seeded draw per image (metrics.sampled), from the same encoding pass
    sampled = bool(ev.get("sampled") and ev["metrics"] != [] and dataset.grid is not None
                   and isinstance(model, GaussianVAEBase))
    if scores is None and ev["metrics"] != [] and dataset.grid is not None:
        plan = describe(ev["preset"], ev["metrics"], grid=dataset.grid, channels=dataset.channels)
        log(f"metrics: {format_plan(plan)}")
        scores = evaluate_model(model, dataset, "both" if sampled else "mean", preset=ev["preset"], seed=ev["seed"],
                                metrics=ev["metrics"])
    scores = scores or {}
    if sampled and "sampled" not in scores:  # the means were scored with the group
        scores = {**scores, "sampled": evaluate_model(model, dataset, "sampled", preset=ev["preset"], seed=ev["seed"],
                                                      metrics=ev["metrics"])}
    if "sampled" in scores:  # the scores only: settings are the means' (top level), and would become table columns
        scores["sampled"] = {k: v for k, v in scores["sampled"].items() if k not in ("settings", "seconds", "encoder")}
    RunDir(d).write_eval(scores, run.config, run.step)
    t_metrics = time.time() - t0
    analysis: dict = {"eval_hash": trial.eval_hash, "eval": ev, "step": run.step}
    if not isinstance(model, GaussianVAEBase):  # the analyses need q(z|x) Gaussian and p(x|z) Bernoulli
        analysis["note"] = f"no reconstruction / TC / log p(x) analysis for model {model.name!r}"
        ev = {**ev, "recon_images": 0, "true_tc": None, "log_likelihood": None}
    took: dict[str, float] = {}
    costs = analysis_cost(ev, len(dataset))

    def timed(name: str, fn):
        log(f"{name}: {costs[name]['what']}; expected ~{duration(costs[name]['seconds'])} on one idle CPU core")
        t = time.time()
        analysis.update(fn())
        took[name] = round(time.time() - t, 2)

    with torch.no_grad():
        if ev["recon_images"]:
            timed("recon", lambda: reconstruction_error(model, dataset, ev["recon_images"], seed=ev["seed"]))
        if ev["true_tc"]:
            timed("true_tc", lambda: model_total_correlation(model, dataset, ev["true_tc"]["samples"],
                                                             ev["true_tc"]["data"], seed=ev["seed"]))
        if ev["log_likelihood"] and ev["log_likelihood"]["images"] and ev["log_likelihood"]["samples"]:
            timed("log_px", lambda: estimate_log_likelihood(model, dataset, ev["log_likelihood"]["images"],
                                                            ev["log_likelihood"]["samples"], seed=ev["seed"]))
    analysis["seconds"] = {"metrics": round(t_metrics, 2), "analysis": round(time.time() - t0 - t_metrics, 2),
                           "analyses": took}
    log(f"evaluated: metrics {t_metrics:.0f} s, " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()))
    atomic_write_json(d / "analysis.json", analysis)
    log_scores(d, run.config, run.step, {**headline(scores), **{k: v for k, v in analysis.items() if k in (
        "recon", "true_tc", "log_px") and isinstance(v, (int, float))}})  # TensorBoard HParams of the sweep
    return analysis
