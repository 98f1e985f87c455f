"""The local process pool (``factorvae sweep --workers N``, the default with N = 1): spawned
worker processes, at most N units in flight, each with cores/N torch threads."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from factorvae.errors import UserError
from factorvae.sweep.backends.base import Backend, dirs, failure
from factorvae.sweep.spec import Trial
from factorvae.sweep.trial import run_group
from factorvae.usecases.train import usable_cores


def _watch_parent(parent: int) -> None:
    """Exit as soon as the driver is gone (killed with -9, crashed): nobody would read this
    worker's result, and a second sweep on the directory must not race it. Polling the parent
    pid works on Linux and macOS alike; checkpoints are written atomically, so exiting mid-step
    loses at most the steps since the last one."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_main(conn, parent: int) -> None:
    """A pool worker: run the trials the driver sends until it sends None or goes away."""
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):  # the driver closed its end or died
                return
            if job is None:
                return
            result = run_group(*job)
            try:
                conn.send(result)
            except OSError:  # the driver is gone
                return
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the driver reports it
        return


class _Worker:
    """One spawned worker process and the pipe to it."""

    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        # Not daemonic: a trial may start its own evaluation worker (train.eval_async), which a
        # daemonic process cannot. Nothing outlives the driver: Backend.run stops every worker in
        # its finally, and _watch_parent ends them if the driver is killed.
        self.process = ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=False)
        self.process.start()
        child.close()  # so the driver sees EOF when the worker dies

    def stop(self, wait: float) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(wait)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class PoolBackend(Backend):
    """Separate processes (spawn), at most ``workers`` units (a trial or a group) in flight,
    each with cores/workers torch threads. Each worker has its own pipe, so a worker that dies
    (killed, out of memory) fails only the trials it held, and a new worker takes its place;
    workers exit when the driver dies."""

    name = "pool"

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise UserError(f"--workers must be >= 0, got {workers}" if workers < 0 else
                            "a pool needs at least one worker (--workers 0 runs in this process)")
        self.workers = workers
        self.idle: list[_Worker] = []
        self.busy: dict[_Worker, list[Trial]] = {}

    def describe(self) -> str:
        return f"{self.workers} worker process(es)"

    def submit(self, units, out: Path) -> None:
        self.queue, self.out = list(units), out
        self.threads = max(1, usable_cores() // self.workers)
        self.ctx = multiprocessing.get_context("spawn")

    def collect(self) -> Iterator[dict]:
        queue, idle, busy, out = self.queue, self.idle, self.busy, self.out
        while queue or busy:
            while queue and len(busy) < self.workers:
                w = idle.pop() if idle else _Worker(self.ctx)
                unit = queue.pop(0)
                w.conn.send((unit, dirs(out, unit), self.threads))
                busy[w] = unit
            ready = multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                unit = busy.pop(w)
                try:
                    results = w.conn.recv()  # a result sent just before the worker ended still counts
                except (EOFError, OSError):
                    w.stop(0)
                    for t in unit:
                        yield failure(t, out, "the worker process died (killed or out of memory) while running "
                                              "this trial; it is resumed from its checkpoint on the next run")
                    continue
                except Exception as e:  # noqa: BLE001 - e.g. a result that could not be unpickled
                    w.stop(0)
                    for t in unit:
                        yield failure(t, out, f"{type(e).__name__}: {e}")
                    continue
                idle.append(w)
                yield from results

    def cancel(self) -> None:
        for w in self.idle + list(self.busy):
            w.stop(0)
        self.idle, self.busy = [], {}

    def close(self) -> None:  # after the last result: let idle workers exit on their own
        for w in self.idle + list(self.busy):
            w.stop(30)
        self.idle, self.busy = [], {}
