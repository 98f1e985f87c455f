"""The training loop. The method owns its losses and optimiser steps; this file owns batches,
logging, checkpoints, images and evaluation."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from factorvae.async_eval import AsyncEval
from factorvae.errors import UserError
from factorvae.group import autocast, configure_device
from factorvae.io import atomic_write_json
from factorvae.loggers import check_loggers, open_loggers
from factorvae.metrics.codes import encode_batch
from factorvae.metrics.suite import evaluate_model
from factorvae.metrics.tc import model_total_correlation
from factorvae.runs import RunDir, build_model, open_dataset, pick_device
from factorvae.weights import memory_guard
from factorvae.viz.traversals import kl_per_dim, mean_std_per_dim, write_run_images


#: nats of mean KL above which a latent counts as active (summary.json's active_dims_kl)
KL_THRESHOLD = 0.1
#: the FactorVAE metric's pruning threshold on the std of a latent's encoder mean (metrics.suite presets)
METRIC_STD_THRESHOLD = 0.05


def _std_active(std: np.ndarray | None) -> list[int] | None:
    return None if std is None else [int(j) for j in np.flatnonzero(std >= METRIC_STD_THRESHOLD)]


def active_dims(kl: np.ndarray | None, threshold: float = KL_THRESHOLD) -> list[int]:
    """Latent dimensions whose mean KL exceeds ``threshold`` nats (the others carry ~nothing)."""
    return [] if kl is None else [int(j) for j in np.nonzero(kl > threshold)[0]]


def check_steps(path, done: int, steps: int) -> None:
    """A run that has trained ``done`` steps cannot be resumed to ``steps`` < ``done``."""
    if done > steps:
        raise UserError(f"--steps {steps}: {path} has already trained {done} steps; a run cannot be resumed to fewer")


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint of ``step`` was saved."""

    def __init__(self, signum: int, step: int, run_dir: Path):
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.run_dir = signum, step, run_dir


def train(cfg: dict, out: str | Path, resume: bool = False, progress: bool = True, dataset=None) -> dict:
    """Train ``cfg`` into run directory ``out`` (resuming from its checkpoint); returns the summary.
    The loop only: callers go through :func:`factorvae.usecases.train.train_run` (threads, resume checks).

    Holds the run's lock throughout. A run without a checkpoint (killed before its first one)
    starts again from step 0 even when ``resume`` is asked. SIGINT/SIGTERM save a checkpoint
    between two steps and raise ``Interrupted``; running out of memory is a ``UserError``."""
    run = RunDir(out)
    with run.lock():
        run.clean_temps()
        with memory_guard():
            return _train_locked(cfg, run, resume and run.ckpt_path.exists(), progress, dataset)


class _SignalFlag:
    """While installed, SIGINT/SIGTERM only record themselves, read between steps (so a
    checkpoint never holds half an update); a second signal interrupts at once, unless the
    first is being handled (``stopping``: the checkpoint is being saved), which it must not
    break. Handlers others installed (Ray's) stay."""

    def __init__(self):
        self.caught: list[int] = []
        self.stopping = False
        self.old: dict = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                    self.old[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        if self.caught and not self.stopping:
            raise KeyboardInterrupt
        self.caught.append(signum)

    def restore(self) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)


def _train_locked(cfg: dict, run: RunDir, resume: bool, progress: bool, dataset) -> dict:
    t = cfg["train"]
    if not resume:
        if run.ckpt_path.exists():
            raise UserError(f"{run.path} already holds a checkpointed run; resume it or choose another directory")
        run.clear_progress()
    check_loggers(t["loggers"])  # a missing tracker package fails before anything is written
    device = pick_device(t["device"])
    if dataset is None:
        dataset = open_dataset(cfg, progress)
    if dataset.grid is None:
        cfg["data"]["channels"] = dataset.channels  # what "auto" chose, for load_run
    dataset.to(device)
    configure_device(device)
    model, generators, step = start_run(cfg, run, dataset, device, resume)
    data_gen = generators["data"]
    model.train()
    loggers = open_loggers(t["loggers"], run.path, cfg, resume_step=step if resume else None)
    sums: dict[str, torch.Tensor] = {}
    count, t_last, last = 0, time.perf_counter(), {}
    bar = tqdm(total=t["steps"], initial=step, desc=f"{model.name}", disable=not progress, unit="step",
               dynamic_ncols=True)
    signals = _SignalFlag()
    evaluator = None
    try:
        evaluator = AsyncEval.for_training(cfg, device, dataset)  # None: evaluations in this process
        while step < t["steps"]:
            x1 = dataset.sample_batch(t["batch_size"], data_gen)
            x2 = (dataset.sample_batch(t["batch_size"] * model.second_batches, data_gen)
                  if model.needs_second_batch else None)
            with autocast(device, t["precision"]):
                logs = model.train_step(x1, x2, step)
            step += 1
            for k, v in logs.items():  # summed on the device: no sync per step
                sums[k] = sums[k] + v.detach() if k in sums else v.detach().clone()
            count += 1
            bar.update(1)
            if step % t["log_every"] == 0 or step == t["steps"]:
                now = time.perf_counter()
                last = {k: float(v) / count for k, v in sums.items()}
                record_log(model, dataset, cfg, run, loggers, step, last, count / max(now - t_last, 1e-9))
                bar.set_postfix({k: f"{last[k]:.3g}" for k in ("recon", "kl", "tc", "d_acc", "loss") if k in last})
                if evaluator is not None:
                    evaluator.poll()  # scores back from the worker, logged at their own step
                sums, count, t_last = {}, 0, time.perf_counter()
            if evaluator is not None and eval_due(cfg, step):
                evaluator.submit([model], dataset, t["eval_preset"], [t["seed"]], t.get("eval_metrics"), step,
                                 [str(run.path)], [lambda s, at=step: log_eval(s, run, loggers, at)])
            saved = periodic_work(model, dataset, cfg, run, loggers, step, generators, evaluate=evaluator is None)
            if signals.caught:
                signals.stopping = True
                if not saved:
                    run.save_checkpoint(model, step, generators)
                raise Interrupted(signals.caught[0], step, run.path)
        if evaluator is not None:
            evaluator.close()  # every evaluation logged before the summary
    except BaseException:
        if evaluator is not None:
            evaluator.abort()
        loggers.close()
        raise
    finally:
        signals.restore()
        bar.close()
        loggers.flush()

    summary = finish_run(model, dataset, cfg, run, step, generators, last, loggers)
    loggers.finish(cfg, summary)
    return summary

def start_run(cfg: dict, run: RunDir, dataset, device, resume: bool):
    """Build the run's model and generators (model: its seed; data: seed + 1_000_003) and
    restore them from the checkpoint, or start the run directory; returns (model, generators, step)."""
    t = cfg["train"]
    model, model_gen = build_model(cfg, dataset.channels, device)
    if hasattr(model, "set_dataset_size"):
        model.set_dataset_size(len(dataset))
    data_gen = torch.Generator(device=device)
    data_gen.manual_seed(t["seed"] + 1_000_003)
    generators = {"model": model_gen, "data": data_gen}

    step = 0
    if resume:
        step = RunDir.restore(model, run.load_checkpoint(map_location=device), generators)
        check_steps(run.path, step, t["steps"])
        run.truncate_metrics(step)
    run.write_config(cfg)  # only now, when a resumed checkpoint has loaded and fits
    if not resume and "official_file" in dataset.info:  # beside config.yaml: whether --data-path is the published file
        atomic_write_json(run.path / "data.json", {k: dataset.info[k] for k in ("source", "official_file")})
    return model, generators, step


def record_log(model, dataset, cfg: dict, run: RunDir, loggers, step: int, last: dict, steps_per_s: float) -> None:
    """A log step: the mean losses since the last one (``last``, completed in place with
    true_tc when due, unless a group computed it already) to metrics.jsonl and the trackers."""
    t = cfg["train"]
    if t["true_tc_every"] and step % t["true_tc_every"] == 0 and "true_tc" not in last:  # paper Fig. 7, beside "tc"
        last["true_tc"] = log_true_tc(model, dataset, t)
    record = {"step": step, **last, "steps_per_s": steps_per_s}
    run.append_metrics(record)
    loggers.scalars({f"train/{k}": v for k, v in last.items()}, step)


def periodic_work(model, dataset, cfg: dict, run: RunDir, loggers, step: int, generators: dict,
                  evaluate: bool = True) -> bool:
    """Evaluation (unless a group did it: ``evaluate``), images and checkpoint when ``step`` is
    due for them; whether it saved one."""
    t = cfg["train"]
    if evaluate and eval_due(cfg, step):
        evaluate_during_training(model, dataset, cfg, step, run, loggers)
        model.train()
    if step % t["image_every"] == 0 and step != t["steps"]:
        loggers.images(write_run_images(model, dataset, run.images, step=step), step)
        model.train()
    saved = step % t["ckpt_every"] == 0 or step == t["steps"]
    if saved:
        run.save_checkpoint(model, step, generators)
    return saved


def eval_due(cfg: dict, step: int) -> bool:
    """Whether ``step`` is due for the Fig. 5 evaluation (``train.eval_every``)."""
    return bool(cfg["train"]["eval_every"] and step % cfg["train"]["eval_every"] == 0)


def due(cfg: dict, step: int) -> bool:
    """Whether ``periodic_work`` has anything to do at ``step`` (a group unstacks only then)."""
    t = cfg["train"]
    return bool((t["eval_every"] and step % t["eval_every"] == 0) or step % t["image_every"] == 0
                or step % t["ckpt_every"] == 0 or step == t["steps"])


def finish_run(model, dataset, cfg: dict, run: RunDir, step: int, generators: dict, last: dict, loggers) -> dict:
    """Final images, checkpoint (if none yet) and summary.json; returns the summary."""
    t = cfg["train"]
    kl = kl_per_dim(model, dataset)
    written = write_run_images(model, dataset, run.images, kl=kl)
    loggers.images(written, step)
    if t["steps"] == 0 or not run.ckpt_path.exists():
        run.save_checkpoint(model, step, generators)
    summary = {
        "model": model.name, "data": cfg["data"]["name"], "steps": step,
        "final": last or (run.read_metrics()[-1] if run.read_metrics() else {}),
        "kl_per_dim": None if kl is None else [round(float(v), 4) for v in kl],
        # KL-active latents; not the FactorVAE metric's "active_dims" (std over the data, eval.json)
        "active_dims_kl": active_dims(kl, KL_THRESHOLD), "active_dims_kl_threshold": KL_THRESHOLD,
        # the FactorVAE metric's rule (std of the encoder means >= 0.05) on the same images
        "active_dims_std": _std_active(mean_std_per_dim(model, dataset)),
        "active_dims_std_threshold": METRIC_STD_THRESHOLD,
        "images": written, "run_dir": str(run.path),
    }
    run.write_summary(summary)
    return summary

def log_true_tc(model, dataset, t: dict) -> float:
    """True TC of the aggregate posterior (Section 4, Fig. 7) with its own random state."""
    tc = model_total_correlation(model, dataset, t["true_tc_samples"], t["true_tc_data"], seed=t["seed"])["true_tc"]
    model.train()
    return tc


def evaluate_during_training(model, dataset, cfg, step, run: RunDir, loggers) -> dict | None:
    """Score the current model (paper Fig. 5 curves); logged to metrics.jsonl and the trackers."""
    if dataset.grid is None:
        return None
    model.eval()
    t = cfg["train"]
    scores = evaluate_model(model, dataset, preset=t["eval_preset"], seed=t["seed"], metrics=t.get("eval_metrics"),
                            batch_size=encode_batch(next(model.parameters()).device))
    log_eval(scores, run, loggers, step)
    return scores


def log_eval(scores: dict, run: RunDir, loggers, step: int) -> None:
    """A periodic evaluation's numeric scores as ``eval/<metric>.<key>``, to metrics.jsonl and the trackers."""
    flat = {}
    for metric, vals in scores.items():
        if isinstance(vals, dict) and metric not in ("settings", "seconds", "encoder"):
            for k, v in vals.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    flat[f"eval/{metric}.{k}"] = float(v)
    run.append_metrics({"step": step, **flat})
    loggers.scalars(flat, step)
