"""Running a sweep: every unfinished trial of a spec on an engine (this process, a local pool
of worker processes, or Ray), under a lock on the sweep directory, then the results table.

Layout of a sweep directory ``DIR``::

    DIR/sweep.json            the spec as given and the trial list of the last invocation
    DIR/trials/<id>/          one trial directory per trial (factorvae.sweep.trialdir)
    DIR/quarantine/           unfinished trial directories that were unreadable, moved aside
    DIR/results.csv, DIR/results.parquet   one row per trial (factorvae.sweep.table)

A new backend is one function ``run_X(todo, out, ..., report)`` that calls ``report`` with the
result of ``run_trial`` or ``run_group`` (or ``failure``) once per trial, chosen in ``_run_sweep_locked``.
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from factorvae.errors import UserError
from factorvae.io import atomic_write_json, read_json
from factorvae.sweep.spec import Sweep, Trial, load_spec
from factorvae.sweep.packing import auto_group_size, pack, parse_group_size
from factorvae.sweep.table import aggregate
from factorvae.sweep.trial import run_group
from factorvae.sweep.trialdir import inspect_trial, write_error


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class SweepOutcome:
    sweep: Sweep
    out: Path
    results: list[dict]  # what this invocation did, one per trial it touched
    rows: list[dict]  # the aggregated table
    seconds: float

    def counts(self) -> dict:
        c: dict = {}
        for r in self.rows:
            c[r["status"]] = c.get(r["status"], 0) + 1
        return c


def run_sweep(spec, out: str | Path, workers: int = 1, ray_address: str | None = None, cpus_per_trial: float | None = None,
              gpus_per_trial: float = 0, progress: bool = True, only: str | None = None, threads: int | None = None,
              log=print, group_size: int | str = "auto") -> SweepOutcome:
    """Run every unfinished trial of ``spec`` into ``out`` and gather the table.

    ``workers`` local processes (0: in this process), or Ray tasks when ``ray_address`` is given
    (``local``: start a local Ray instance; ``auto``: join the running cluster; else an address).
    Torch threads per trial: ``threads``, else the spec's ``train.threads``, else cores / workers
    (Ray: the trial's CPUs). ``group_size`` (or ``auto``): trials of one group key train as one
    vectorised group of up to that many runs in one worker or Ray task (factorvae.sweep.packing)."""
    t0 = time.time()
    sweep = spec if isinstance(spec, Sweep) else load_spec(spec)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    (out / "trials").mkdir(parents=True, exist_ok=True)
    with _SweepLock(out):
        return _run_sweep_locked(sweep, out, workers, ray_address, cpus_per_trial, gpus_per_trial, progress, only,
                                 threads, log, t0, parse_group_size(group_size))


class _SweepLock:
    """``DIR/.sweep.lock``: refuse a second sweep on the same directory while one runs on this
    host (two runs would train the same trials at once). A lock left by a dead process is taken over."""

    def __init__(self, out: Path):
        self.path = out / ".sweep.lock"
        self.me = {"pid": os.getpid(), "host": os.uname().nodename}

    def __enter__(self):
        other = read_json(self.path) if self.path.exists() else None
        if isinstance(other, dict) and other.get("host") == self.me["host"] and other.get("pid") != self.me["pid"]:
            try:
                os.kill(int(other["pid"]), 0)
                alive = True
            except (ProcessLookupError, ValueError, TypeError):
                alive = False
            except PermissionError:
                alive = True
            if alive:
                raise UserError(f"another sweep (pid {other['pid']}) is running on {self.path.parent}; "
                                f"wait for it or stop it (remove {self.path} if it is stale)")
        self.path.write_text(json.dumps(self.me))
        return self

    def __exit__(self, *exc):
        if read_json(self.path) == self.me:
            self.path.unlink(missing_ok=True)
        return False


def _run_sweep_locked(sweep, out, workers, ray_address, cpus_per_trial, gpus_per_trial, progress, only, threads, log,
                      t0, group_size=1) -> SweepOutcome:
    atomic_write_json(out / "sweep.json", {
        "name": sweep.name, "description": sweep.description, "source": sweep.source, "spec": sweep.spec,
        "trials": [t.id for t in sweep.trials], "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    trials = [t for t in sweep.trials if not only or only in t.id]
    states = {t.id: inspect_trial(out / "trials" / t.id, t) for t in trials}
    todo = [t for t in trials if states[t.id].status != "finished"]
    done = len(trials) - len(todo)
    units = pack(todo, auto_group_size(todo) if group_size == "auto" else group_size)
    if log:
        by: dict = {}
        for st in states.values():
            by[st.status] = by.get(st.status, 0) + 1
        engine = f"Ray ({ray_address})" if ray_address else (f"{workers} worker process(es)" if workers else "this process")
        log(f"sweep {sweep.name}: {len(trials)} trial(s) -> {out}  [" + ", ".join(f"{v} {k}" for k, v in by.items())
            + f"]; running {len(todo)} on {engine}"
            + (f" in {len(units)} group(s)" if len(units) < len(todo) else ""))
    results: list[dict] = []
    if todo:
        bar = tqdm(total=len(trials), initial=done, desc=f"sweep {sweep.name}", unit="trial", disable=not progress,
                   dynamic_ncols=True)

        def report(res: dict) -> None:
            results.append(res)
            bar.update(1)
            failed = sum(r["status"] not in ("finished",) for r in results)
            bar.set_postfix({"failed": failed})
            line = f"  {res['status']:<9} {res['id']}  {res.get('action', '')} ({res.get('seconds', 0):.0f} s)"
            if res.get("error"):
                line += f"\n            {res['error']}"
            if log:
                (bar.write if progress else log)(line)

        try:
            if threads:  # forced: overrides the spec's train.threads (a machine key, not in the hash)
                todo = [copy.deepcopy(t) for t in todo]
                for t in todo:
                    t.config["train"]["threads"] = int(threads)
                by_id = {t.id: t for t in todo}
                units = [[by_id[t.id] for t in unit] for unit in units]
            if ray_address:
                _run_ray(units, out, ray_address, cpus_per_trial, gpus_per_trial, report)
            elif workers == 0:
                for unit in units:
                    for res in run_group(unit, _dirs(out, unit), threads=0, progress=progress):
                        report(res)
            else:
                _run_pool(units, out, workers, report)
        finally:
            bar.close()
    rows = aggregate(out, sweep)
    return SweepOutcome(sweep, out, results, rows, time.time() - t0)


def _failure(t: Trial, out: Path, message: str) -> dict:
    """Record a failure seen from outside the trial (a worker that died, a Ray error)."""
    write_error(out / "trials" / t.id, t.id, message + "\n")
    return {"id": t.id, "status": "failed", "action": "", "seconds": 0.0, "error": message.splitlines()[-1][:500]}


def _dirs(out: Path, unit: list[Trial]) -> list[str]:
    return [str(out / "trials" / t.id) for t in unit]


def _run_pool(todo: list[list[Trial]], out: Path, workers: int, report) -> None:
    """Separate processes (spawn), at most ``workers`` units (a trial or a group) in flight,
    each with cores/workers torch threads. A worker that dies (killed, out of memory) fails
    only the trials it held; the pool is rebuilt for the rest."""
    threads = max(1, usable_cores() // workers)
    queue = list(todo)
    ctx = multiprocessing.get_context("spawn")
    while queue:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        running: dict = {}
        broken = False
        try:
            while queue or running:
                while queue and len(running) < workers and not broken:
                    t = queue.pop(0)
                    running[pool.submit(run_group, t, _dirs(out, t), threads)] = t
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    unit = running.pop(f)
                    try:
                        for res in f.result():
                            report(res)
                    except BrokenProcessPool:
                        broken = True
                        for t in unit:
                            report(_failure(t, out, "the worker process died (killed or out of memory) while running "
                                                    "this trial; it is resumed from its checkpoint on the next run"))
                    except Exception as e:  # noqa: BLE001 - e.g. a result that could not be unpickled
                        for t in unit:
                            report(_failure(t, out, f"{type(e).__name__}: {e}"))
                if broken and not running:
                    break
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(todo: list[list[Trial]], out: Path, address: str, cpus: float | None, gpus: float, report) -> None:
    """One Ray task per unit (a trial or a group). ``out`` must be on storage every node sees
    (a shared file system)."""
    try:
        import ray  # optional (pip install 'factorvae[ray]'), and slow to import
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'factorvae[ray]'") from None
    started = False
    if not ray.is_initialized():
        try:
            if address == "local":  # a new instance on this machine, even if a cluster runs here
                ray.init(address="local", include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({type(e).__name__}: {e})") from None
        started = True
    try:
        cpus = float(cpus) if cpus else 1.0
        remote = ray.remote(num_cpus=cpus, num_gpus=float(gpus or 0), max_retries=0)(run_group)
        refs = {remote.remote(t, _dirs(out.resolve(), t), max(1, int(math.floor(cpus)))): t for t in todo}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for r in ready:
                unit = refs.pop(r)
                try:
                    for res in ray.get(r):
                        report(res)
                except Exception as e:  # noqa: BLE001 - worker crashed, node lost, ...
                    for t in unit:
                        report(_failure(t, out, f"Ray task failed: {type(e).__name__}: {str(e)[:2000]}"))
    finally:
        if started:
            ray.shutdown()
