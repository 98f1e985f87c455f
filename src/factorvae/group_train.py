"""Training a group of runs as one batched model (factorvae.group.RunGroup), each run into its
own run directory with exactly the records ``factorvae.trainer.train`` writes for it alone:
config, metrics.jsonl, TensorBoard, checkpoints, images and summary, on the same schedule.

Runs resume from their own checkpoints; runs found at different steps train as separate groups
(one after another), so a group killed at any point resumes like its runs would alone. A run
whose losses turn non-finite (checked at log steps) stops with ``summary.json`` saying
``status: failed``; its last checkpoint is its last good one, and the others continue.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm.auto import tqdm

from factorvae.async_eval import AsyncEval
from factorvae.data import require_grid
from factorvae.errors import UserError
from factorvae.group import RunGroup, configure_device, group_key
from factorvae.loggers import check_loggers, open_loggers
from factorvae.metrics.codes import Codes, encode_batch
from factorvae.metrics.suite import evaluate
from factorvae.metrics.tc import models_total_correlation
from factorvae.runs import RunDir, open_dataset, pick_device
from factorvae.trainer import due, eval_due, finish_run, log_eval, periodic_work, record_log, start_run


class _Run:
    """One member's run-time state: config, run directory, model, generators, trackers."""

    def __init__(self, cfg, run, model, generators, step, loggers):
        self.cfg, self.run, self.model, self.generators = cfg, run, model, generators
        self.step, self.loggers = step, loggers
        self.last: dict = {}
        self.summary: dict | None = None


def train_group(cfgs: list[dict], outs: list, resume: bool | list[bool] = False, progress: bool = True,
                dataset=None) -> list[dict]:
    """Train runs ``cfgs`` (one group key: method, architecture, data, optimiser settings and
    schedule agree; seeds and the method's per-run hyper-parameters may differ) into run
    directories ``outs``; returns their summaries in order."""
    if not cfgs or len(cfgs) != len(outs):
        raise ValueError("train_group needs one output directory per config")
    if len({group_key(c) for c in cfgs}) != 1:
        raise UserError("these runs cannot share a group: they differ in more than seed and per-run hyper-parameters")
    resumes = list(resume) if isinstance(resume, (list, tuple)) else [bool(resume)] * len(cfgs)
    t = cfgs[0]["train"]
    check_loggers(t["loggers"])  # a missing tracker package fails before anything is written
    device = pick_device(t["device"])
    if dataset is None:
        dataset = open_dataset(cfgs[0], progress)
    if dataset.grid is None:
        for c in cfgs:
            c["data"]["channels"] = dataset.channels
    dataset.to(device)
    configure_device(device)
    with contextlib.ExitStack() as locks:  # every run's lock, as train() holds one run's
        runs = []
        for cfg, out, res in zip(cfgs, outs, resumes):
            rd = RunDir(out)
            locks.enter_context(rd.lock())
            rd.clean_temps()
            res = res and rd.ckpt_path.exists()  # no checkpoint yet: start again from step 0, as train()
            if not res:
                rd.clear_progress()
            model, generators, step = start_run(cfg, rd, dataset, device, res)
            model.train()
            runs.append(_Run(cfg, rd, model, generators, step,
                             open_loggers(t["loggers"], rd.path, cfg, resume_step=step if res else None)))
        try:
            # one worker process for every group's evaluations (None: evaluations in this process)
            with AsyncEval.for_training(cfgs[0], device, dataset) or contextlib.nullcontext() as evaluator:
                for start in sorted({r.step for r in runs}):  # runs at different steps: separate groups
                    _train_members([r for r in runs if r.step == start], dataset, progress, evaluator)
        finally:
            for r in runs:
                r.loggers.close()  # finished runs closed theirs in finish(); a second close does nothing
    return [r.summary for r in runs]


def _train_members(members: list[_Run], dataset, progress: bool, evaluator: AsyncEval | None = None) -> None:
    t = members[0].cfg["train"]
    step = members[0].step
    group = RunGroup([r.model for r in members], [r.generators["data"] for r in members], ids=list(range(len(members))),
                     precision=t["precision"], compile=t["compile"], strategy=t["group_strategy"])
    sums: dict[str, torch.Tensor] = {}
    count, t_last = 0, time.perf_counter()
    bar = tqdm(total=t["steps"], initial=step, desc=f"{members[0].model.name} x{len(members)}", disable=not progress,
               unit="step", dynamic_ncols=True)
    try:
        while step < t["steps"] and len(group):
            logs = group.step(*group.sample(dataset, t["batch_size"]), step)
            step += 1
            for k, v in logs.items():  # (N,) per-run sums, on the device until a log step
                sums[k] = sums[k] + v if k in sums else v.clone()
            count += 1
            bar.update(1)
            if step % t["log_every"] == 0 or step == t["steps"]:
                before = list(group.ids)
                for i in group.drop_failed(sums, step):
                    _fail(members[i], step, count)
                keep = [before.index(i) for i in group.ids]
                tcs = _true_tcs(group, [members[i] for i in group.ids], dataset, step)
                host = {k: v[keep].double().cpu() for k, v in sums.items()}  # one transfer
                rate = count / max(time.perf_counter() - t_last, 1e-9)
                for j, i in enumerate(group.ids):
                    r = members[i]
                    r.last = {k: float(v[j]) / count for k, v in host.items()}
                    if tcs:
                        r.last["true_tc"] = tcs[j]
                    record_log(r.model, dataset, r.cfg, r.run, r.loggers, step, r.last, rate)
                    r.model.train()
                if evaluator is not None:
                    evaluator.poll()  # scores back from the worker, logged at their own step
                sums, count, t_last = {}, 0, time.perf_counter()
            if len(group) and due(members[0].cfg, step):
                group.unstack()  # members hold the group's weights and optimiser states
                live = [members[i] for i in group.ids]
                scores = None
                if evaluator is None:
                    scores = _evaluate_members(live, dataset, step)
                elif eval_due(live[0].cfg, step):  # encoded now, scored in the worker
                    evaluator.submit([r.model for r in live], dataset, t["eval_preset"],
                                     [r.cfg["train"]["seed"] for r in live], t.get("eval_metrics"), step,
                                     [str(r.run.path) for r in live],
                                     [lambda s, r=r, at=step: log_eval(s, r.run, r.loggers, at) for r in live])
                for j, r in enumerate(live):
                    if scores:
                        log_eval(scores[j], r.run, r.loggers, step)
                    periodic_work(r.model, dataset, r.cfg, r.run, r.loggers, step, r.generators,
                                  evaluate=scores is None and evaluator is None)
        if evaluator is not None:
            evaluator.drain()  # every evaluation logged before the summaries
    finally:
        bar.close()
        for r in members:
            r.loggers.flush()
    if len(group):
        group.unstack()
    for i in group.ids:
        r = members[i]
        r.summary = finish_run(r.model, dataset, r.cfg, r.run, step, r.generators, r.last, r.loggers)
        r.loggers.finish(r.cfg, r.summary)


def _true_tcs(group: RunGroup, runs: list[_Run], dataset, step: int) -> list[float] | None:
    """Every run's true TC when due (paper Fig. 7), from one batched encoding of the data set
    (``models_total_correlation``); each equals its run's ``model_total_correlation``."""
    t = runs[0].cfg["train"] if runs else {}
    if not runs or not t["true_tc_every"] or step % t["true_tc_every"]:
        return None
    out = models_total_correlation(group.posteriors, group.device, dataset, [r.cfg["train"]["seed"] for r in runs],
                                   t["true_tc_samples"], t["true_tc_data"])
    return [o["true_tc"] for o in out]


def _evaluate_members(runs: list[_Run], dataset, step: int) -> list[dict] | None:
    """Every run's Fig. 5 scores when due (``evaluate_during_training``'s, each with its own
    seed), their encodings batched across the runs (``evaluate_group``); None when not due."""
    cfg = runs[0].cfg
    if not eval_due(cfg, step) or dataset.grid is None:
        return None
    t = cfg["train"]
    return evaluate_group([r.model for r in runs], dataset, t["eval_preset"], [r.cfg["train"]["seed"] for r in runs],
                          t.get("eval_metrics"))


def _fail(r: _Run, step: int, since: int) -> None:
    """A run whose losses turned non-finite: summary.json says failed; its checkpoint stays the
    last good one (a rerun resumes from there)."""
    r.summary = {
        "model": r.model.name, "data": r.cfg["data"]["name"], "steps": step, "status": "failed",
        "error": f"non-finite losses between steps {step - since} and {step}; training stopped",
        "final": {}, "run_dir": str(r.run.path),
    }
    r.run.write_summary(r.summary)


class _Lockstep:
    """The members' evaluations in step: each runs the metric suite in its own thread on its own
    codes (its own seeded draws); their encoder calls wait for each other and are served by one
    batched pass (``RunGroup.representations`` with per-run images), in the calling thread."""

    def __init__(self, group: RunGroup):
        self.group, self.cv = group, threading.Condition()
        self.pending: dict[int, torch.Tensor] = {}  # member -> images it waits to have encoded
        self.results: dict[int, torch.Tensor] = {}
        self.active, self.error = len(group), None

    def encode(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Member ``i``'s codes of images ``x`` (B, C, H, W), once every active member asked."""
        with self.cv:
            self.pending[i] = x
            self.cv.notify_all()
            while i not in self.results and self.error is None:
                self.cv.wait()
            if self.error is not None:
                raise RuntimeError("the group's batched encoding failed") from self.error
            return self.results.pop(i)

    def done(self) -> None:
        with self.cv:
            self.active -= 1
            self.cv.notify_all()

    def serve(self) -> None:
        """Encode the members' requests together until every evaluation has finished."""
        while True:
            with self.cv:
                while self.active and len(self.pending) < self.active:
                    self.cv.wait()
                if not self.active:
                    return
                asked, self.pending = self.pending, {}
            try:
                z = self._encode(asked)
            except BaseException as e:
                with self.cv:
                    self.error = e
                    self.cv.notify_all()
                raise
            with self.cv:
                self.results.update(z)
                self.cv.notify_all()

    def _encode(self, asked: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """One pass: every member's images, padded to the longest request (members not asking
        now, finished ones, encode zeros that nobody reads)."""
        g = self.group
        first = next(iter(asked.values()))
        x = first.new_zeros((len(g), max(len(v) for v in asked.values()), *first.shape[1:]))
        for i, v in asked.items():
            x[i, :len(v)] = v
        z = g.representations(x.to(g.device, g.members[0].param_dtype), per_run=True).float().cpu()
        return {i: z[i, :len(v)] for i, v in asked.items()}


@torch.no_grad()
def evaluate_group(models: list, dataset, preset: str, seed: int | list[int], metrics=None, strategy: str = "auto",
                   batch_size: int | None = None) -> list[dict]:
    """The metric suite's scores of each trained model (``evaluate_model``'s result with its
    ``seed``, one per model or one for all), its draws its own, the encoding of every batch done
    for all models in one pass (``_Lockstep``). ``batch_size``: a model's images per pass
    (default: 4,096 on a GPU, 256 on a CPU)."""
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(models)
    if len(seeds) != len(models):
        raise ValueError("evaluate_group: one seed per model, or one for all")
    grid = require_grid(dataset)
    group = RunGroup(models, [torch.Generator() for _ in models], strategy=strategy)
    batch_size = batch_size or encode_batch(group.device)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    step = _Lockstep(group)

    def run(i):
        try:
            codes = Codes.from_encoder(lambda x: step.encode(i, x), dataset.images, grid, batch_size=batch_size,
                                       progress=False)
            return evaluate(codes, metrics=metrics, preset=preset, seed=seeds[i])
        finally:
            step.done()

    try:
        with ThreadPoolExecutor(len(models), thread_name_prefix="group-eval") as pool:
            futures = [pool.submit(run, i) for i in range(len(models))]
            step.serve()
            return [f.result() for f in futures]
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
