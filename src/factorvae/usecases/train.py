"""Train or resume a run directory: config merging on resume, the resume checks, the torch
thread count, the time estimate, then :func:`factorvae.trainer.train` (Kim & Mnih 2018,
Algorithms 1 and 2, for FactorVAE). ``factorvae train``, ``factorvae.train`` and a sweep's
trials call :func:`train_run`."""

from __future__ import annotations

import os
import time
from typing import Callable

import torch

from factorvae.config import resolve
from factorvae.errors import UserError
from factorvae.methods import get_method
from factorvae.runs import RunDir, build_model, open_dataset, pick_device
from factorvae.trainer import check_steps, train

#: steps timed (after 2 warm-up steps) for the expected-time line; skipped for shorter runs
ESTIMATE_STEPS, ESTIMATE_MIN_REMAINING = 5, 50
#: what a resumed run may change; every other option must repeat the saved config (threads and
#: eval_async: machine keys, the results do not depend on them; picked on every start)
RESUMABLE_KEYS = ("train.steps", "train.device", "train.loggers", "train.threads", "train.eval_async")
_KEEPS = "a resumed run keeps its config (only --steps, --device, --threads, --logger and train.eval_async may change)"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pick_threads(cores: int | None = None, load: float | None = None) -> int:
    """Torch threads for a CPU run: the cores left idle by the 1-minute load average (rounded),
    at least 1. Measured on a 2-core machine with other jobs on it: 1 thread several times
    faster than 2 (benchmarks/threads.py); 2 pay only when both cores are free."""
    cores = usable_cores() if cores is None else cores
    load = os.getloadavg()[0] if load is None else load
    return max(1, min(cores, int(cores - load + 0.5)))


def step_rate(cfg: dict, dataset) -> float:
    """Training steps per second of a throwaway copy of ``cfg``'s model: ESTIMATE_STEPS steps
    timed after 2 warm-up steps, on two batches of ``dataset``."""
    t = cfg["train"]
    device = pick_device(t["device"])
    model, _ = build_model(cfg, dataset.channels, device)
    model.train()
    gen = torch.Generator(device=device).manual_seed(0)
    batch = [dataset.sample_batch(t["batch_size"], gen) for _ in range(2)]
    second = batch[1] if model.needs_second_batch else None
    for i in range(2):
        model.train_step(batch[0], second, i)
    t0 = time.perf_counter()
    for i in range(ESTIMATE_STEPS):
        model.train_step(batch[0], second, i)
    return ESTIMATE_STEPS / (time.perf_counter() - t0)


def expected_time(cfg: dict, dataset, start: int) -> str | None:
    """One line: the step rate of a few steps of a throwaway copy of the model and the time
    the remaining steps should take at that rate (None for runs too short to time)."""
    remaining = cfg["train"]["steps"] - start
    if remaining < ESTIMATE_MIN_REMAINING:
        return None
    rate = step_rate(cfg, dataset)
    secs = remaining / rate
    when = f"{secs:.0f} s" if secs < 90 else f"{secs / 60:.0f} min" if secs < 5400 else f"{secs / 3600:.1f} h"
    return (f"expect ~{when} for {remaining:,} steps: {rate:.2f} steps/s measured over {ESTIMATE_STEPS} steps "
            f"with {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}")


def _saved_value(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def resume_config(rd: RunDir, given: dict) -> dict:
    """The saved config of the run in ``rd`` with ``train.steps`` / ``train.device`` /
    ``train.loggers`` / ``train.threads`` / ``train.eval_async`` of ``given`` ({dotted key: value},
    the options given again) applied.
    Other options given again must equal the saved values; a differing one is refused by name."""
    saved = rd.read_config()
    given = dict(given)
    if "model.name" in given:
        given["model.name"] = get_method(str(given["model.name"])).name
    cfg = saved
    for key, value in given.items():
        if key in RESUMABLE_KEYS:
            continue
        try:
            old = _saved_value(saved, key)
        except KeyError:
            raise UserError(f"--resume: {key} is not in the saved config of {rd.path}; {_KEEPS}") from None
        if value != old:
            if key == "model.name":
                raise UserError(f"{rd.path} holds a {old!r} run, not {value!r} (model.name); choose another --out")
            raise UserError(f"--resume: {key}={value!r} differs from {old!r} in {rd.config_path}; {_KEEPS}")
    for key in RESUMABLE_KEYS:
        if key in given:
            section, name = key.split(".")
            cfg[section][name] = given[key]
    return resolve(cfg)


def train_run(out, cfg: dict | None = None, *, resume: bool = False, given: dict | None = None,
              threads: int | None = None, progress: bool = True, dataset=None,
              say: Callable[[str], None] | None = None, out_flag: str | None = "--out") -> dict:
    """Train resolved config ``cfg`` into run directory ``out``, or resume the run there; returns
    the summary (summary.json). Holds the run's lock from the checks to the end.

    - ``resume``: continue from the last checkpoint. With ``cfg`` None the saved config is used,
      with ``given`` ({dotted key: value}, the options given again) checked against it
      (:func:`resume_config`); a caller that checked its config itself (a sweep trial) passes it.
      A run without a checkpoint (stopped before its first) starts again from step 0.
    - ``threads``: torch threads; None: the config's ``train.threads`` for a new run, else the
      cores the load average leaves idle (:func:`pick_threads`, picked on every start); 0: leave
      the process's setting (a sweep sets its share of the cores itself).
    - ``out_flag``: how the caller names ``out`` in messages (``--out``; ``out`` for the API); a
      folder that is neither new, empty nor a run is refused. None: the caller owns the folder (a
      sweep trial: a run directory plus the sweep's own trial files).
    - ``say``: receives the lines worth telling before the work starts (a restart from step 0,
      the expected time of the remaining steps, measured on a few steps); None: silent, no timing.
    """
    rd = RunDir(out)
    if out_flag is not None:
        rd.check_new_or_ours(out_flag, resume)  # new, empty, or a run: never the user's folder, `/` or ""
    elif rd.path.exists() and not rd.path.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    if resume and not rd.exists():
        raise UserError(f"--resume: {out} holds no run: it is not a run directory (no config.yaml)")
    if threads is not None and threads < 0:
        raise UserError(f"threads must be >= 0, got {threads}")
    with rd.lock():  # held from the checks to the end: two writers never share a run
        if resume and cfg is None:
            cfg = resume_config(rd, given or {})
        elif not resume and rd.exists():
            old = rd.read_config()["model"]["name"]
            if rd.ckpt_path.exists():
                hint = "" if old == cfg["model"]["name"] else f" of a different model ({old!r})"
                raise UserError(f"{out} already holds a run{hint}; use --resume to continue it or choose another --out")
        resumed, start = False, 0
        if rd.ckpt_path.exists():  # only when resuming: a fresh run on a checkpoint was refused above
            start = int(rd.load_checkpoint().get("step", 0))  # fails early on an unreadable checkpoint
            check_steps(out, start, cfg["train"]["steps"])
            resumed = True
        elif rd.exists() and say:
            say(f"factorvae train: {out} holds no checkpoint (stopped before its first); starting it again from step 0")
        if threads is None:  # a new run's configured count, else picked afresh: the machine's load changes
            threads = cfg["train"]["threads"] if not resume and cfg["train"]["threads"] else pick_threads()
        if threads:
            cfg["train"]["threads"] = threads
            torch.set_num_threads(threads)
        if dataset is None:
            dataset = open_dataset(cfg, progress)
        line = expected_time(cfg, dataset, start) if say else None
        if line:
            say(line)
        return train(cfg, rd.path, resume=resumed, progress=progress, dataset=dataset)
