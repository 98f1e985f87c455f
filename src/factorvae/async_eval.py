"""The periodic Fig. 5 evaluation scored in a worker process while training goes on
(``train.eval_async``; issue 25: "the CPU part of the metrics (GBTs, DCI) in a separate process
so the GPU never waits").

When an evaluation is due, the training process encodes the whole factor grid under every
member's encoder (``encode_grid``: large batches, one batched pass over a group's members,
``RunGroup.representations``) and hands each member's codes to one worker process, started
with "spawn" and reused for the whole training, as plain numpy arrays with the grid's sizes
and names: the worker builds ``Codes.from_arrays`` and runs ``metrics.suite.evaluate`` with the
run's preset, metrics and seed. Training goes on; the scores are logged with the step they
belong to when they arrive (``AsyncEval.poll`` at log steps), and ``drain`` waits for the
outstanding ones before a run's summary.

The scores equal the synchronous evaluation's (``evaluate_model`` / ``group_train.evaluate_group``):
every metric draws its grid points from a generator seeded by the run's seed
(``suite.metric_rng``), and a complete table serves any draw, so the draws are the same; the
codes differ only by the float rounding of another batch composition. A whole grid costs more
encoding than the points the metrics draw (the price of exactness: a metric chooses its points
as it goes, so they cannot be known before it runs).

A failed evaluation (an exception in the worker, or the worker lost) is one warning naming the
run and step; training continues. An interrupt or an error in training terminates the worker.
"""

from __future__ import annotations

import multiprocessing
import signal
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

import numpy as np
import torch

from factorvae.data import require_grid
from factorvae.data.grid import FactorGrid
from factorvae.group import RunGroup
from factorvae.metrics.codes import Codes, encode_batch
from factorvae.metrics.suite import evaluate

#: evaluation steps in flight at most: a further one first waits for the oldest (a worker slower
#: than ``eval_every`` steps of training would otherwise pile up codes without end)
MAX_IN_FLIGHT = 2


def wanted(setting, device) -> bool:
    """Whether ``train.eval_async`` (auto, true or false; checked by ``config.resolve``) asks for
    a worker process: ``auto`` on CUDA only (on a CPU the worker takes the cores training uses).
    A daemonic process (e.g. in a user's ``multiprocessing.Pool``) cannot start one: synchronous
    there, with a warning when ``true`` asked for it."""
    on = torch.device(device).type == "cuda" if setting == "auto" else bool(setting)
    if on and multiprocessing.current_process().daemon:
        if setting is True:
            warnings.warn("train.eval_async: a daemonic process cannot start the worker process; "
                          "evaluating in the training process", stacklevel=2)
        return False
    return on


@torch.no_grad()
def encode_grid(models: list, dataset, batch_size: int | None = None, strategy: str = "auto") -> np.ndarray:
    """(N, grid points, D) float32 codes (``representation``: encoder means) of every grid point
    in index order under each of the N models, in eval mode; several models encode each batch
    in one pass (``RunGroup.representations``), one model as ``evaluate_model`` does."""
    grid = require_grid(dataset)
    device = next(models[0].parameters()).device
    batch_size = batch_size or encode_batch(device)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        if len(models) == 1:
            def encode(x):
                return models[0].representation(x.to(device))[None]
        else:
            group = RunGroup(models, [torch.Generator() for _ in models], strategy=strategy)

            def encode(x):
                return group.representations(x.to(device, models[0].param_dtype))
        out = None
        for a in range(0, len(grid), batch_size):
            z = encode(dataset.images(np.arange(a, min(a + batch_size, len(grid))))).float().cpu().numpy()
            if out is None:
                out = np.empty((len(models), len(grid), z.shape[2]), dtype=np.float32)
            out[:, a:a + z.shape[1]] = z
        return out
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def score(codes: np.ndarray, sizes: tuple, names: tuple, metrics, preset: str, seed: int) -> dict:
    """The worker's part: ``suite.evaluate`` of a whole-grid code table (rows in grid index order)."""
    grid = FactorGrid(tuple(names), tuple(sizes))
    table = Codes.from_arrays(grid.all_classes(), codes, grid.sizes, grid.names, source="evaluation codes")
    return evaluate(table, metrics=metrics, preset=preset, seed=seed)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the training process ends the worker itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class AsyncEval:
    """One worker process for a training's periodic evaluations (started at the first ``submit``
    or by ``warm``), the evaluations in flight and who logs each result."""

    def __init__(self):
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[tuple[Future, int, str, Callable[[dict], None]]] = []

    @classmethod
    def for_training(cls, cfg: dict, device, dataset) -> "AsyncEval | None":
        """The evaluator of a training of ``cfg`` when it evaluates (``eval_every``, a factor grid)
        in a worker process (``wanted``), its worker started; None for the synchronous path."""
        t = cfg["train"]
        if not (t["eval_every"] and dataset.grid is not None and wanted(t["eval_async"], device)):
            return None
        out = cls()
        out.warm()
        return out

    def __enter__(self) -> "AsyncEval":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:  # interrupt or error: rows still in flight are lost, the worker is not waited for
            self.abort()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init)
        return self._pool

    def warm(self) -> None:
        """Start the worker now (it imports the metrics while training runs)."""
        self._start().submit(int)

    def submit(self, models: list, dataset, preset: str, seeds: list[int], metrics, step: int,
               labels: list[str], sinks: list[Callable[[dict], None]], strategy: str = "auto") -> None:
        """Encode the grid under ``models`` now (``encode_grid``) and queue their scoring;
        ``sinks[i](scores)`` logs model i's scores once they are back (``poll``)."""
        grid = require_grid(dataset)
        codes = encode_grid(models, dataset, strategy=strategy)
        while len({s for _, s, _, _ in self._pending}) >= MAX_IN_FLIGHT:
            wait_for([self._pending[0][0]])
            self.poll()
        pool = self._start()
        for z, seed, label, sink in zip(codes, seeds, labels, sinks):
            future = pool.submit(score, z, grid.sizes, grid.names, metrics, preset, seed)
            self._pending.append((future, step, label, sink))

    def poll(self, wait: bool = False) -> None:
        """Log every evaluation that has finished (with ``wait``: every one, waiting for them);
        never blocks otherwise. A failed one is a warning."""
        keep = []
        for future, step, label, sink in self._pending:
            if not (wait or future.done()):
                keep.append((future, step, label, sink))
                continue
            try:
                scores = future.result()
            except BrokenProcessPool as e:
                self._drop_pool()
                self._warn(label, step, f"the worker process was lost ({e}; a script that trains must guard "
                                        "its entry with `if __name__ == \"__main__\":`, the worker starts with spawn)")
            except Exception as e:  # the worker's exception, re-raised here
                self._warn(label, step, f"{type(e).__name__}: {str(e)[:300]}")
            else:
                sink(scores)
        self._pending = keep

    def drain(self) -> None:
        """Wait for and log every evaluation in flight (before a run's summary)."""
        self.poll(wait=True)

    def close(self) -> None:
        self.drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def abort(self) -> None:
        """Terminate the worker and forget what is in flight; returns at once."""
        self._pending = []
        self._drop_pool()

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for p in list((getattr(pool, "_processes", None) or {}).values()):  # no public way before Python 3.14
            if p.is_alive():
                p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _warn(label: str, step: int, why: str) -> None:
        warnings.warn(f"evaluation of {label} at step {step} failed in the worker process: {why}; "
                      "training goes on without these scores", stacklevel=3)
