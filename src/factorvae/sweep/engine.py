"""Running a sweep: every unfinished trial of a spec on an engine (this process, a local pool
of worker processes, or Ray), under a lock on the sweep directory, then the results table.

Layout of a sweep directory ``DIR``::

    DIR/sweep.json            the spec as given and the trial list of the last invocation
    DIR/trials/<id>/          one trial directory per trial (factorvae.sweep.trialdir)
    DIR/quarantine/           unfinished trial directories that were unreadable, moved aside
    DIR/results.csv, DIR/results.parquet   one row per trial (factorvae.sweep.table)

Where the trials run is a backend object (``sweep/backends/``: in-process, process pool, Ray,
Slurm; one class each, selected by name).
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from factorvae.errors import UserError
from factorvae.io import atomic_write_json, check_out_dir, check_writable, read_json
from factorvae.sweep.backends import Backend
from factorvae.sweep.backends.pool import PoolBackend
from factorvae.sweep.packing import auto_group_size, pack, parse_group_size
from factorvae.sweep.spec import Sweep, load_spec
from factorvae.sweep.table import aggregate
from factorvae.sweep.trialdir import inspect_trial


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


def check_sweep_dir(out: str | Path) -> Path:
    """``out`` as a Path if it is new, empty, or a sweep directory (whatever else it holds, e.g.
    its spec) and writable: never the user's folder; else the UserError naming the problem."""
    out = check_out_dir(out, lambda _, names: bool({"sweep.json", "trials", ".sweep.lock"} & set(names)),
                        "a sweep directory")
    check_writable(out / "sweep.json")  # a read-only or full disk is said before any work
    return out


def run_sweep(spec, out: str | Path, backend: Backend | None = None, progress: bool = True, only: str | None = None,
              threads: int | None = None, log=print, group_size: int | str = "auto") -> SweepOutcome:
    """Run every unfinished trial of ``spec`` into ``out`` and gather the table.

    ``backend``: where the trials run (``sweep.backends``; default: one worker process). Torch
    threads per trial: ``threads``, else the spec's ``train.threads``, else the backend's share
    (pool: cores / workers; Ray, Slurm: the trial's CPUs). ``group_size`` (or ``auto``): trials
    of one group key train as one vectorised group of up to that many runs in one unit
    (factorvae.sweep.packing; a backend without ``packs_groups`` runs one trial per unit)."""
    t0 = time.time()
    sweep = spec if isinstance(spec, Sweep) else load_spec(spec)
    out = check_sweep_dir(out)
    backend = PoolBackend(workers=1) if backend is None else backend
    backend.check()  # before anything is written
    (out / "trials").mkdir(parents=True, exist_ok=True)
    with _SweepLock(out):
        return _run_sweep_locked(sweep, out, backend, progress, only, threads, log, t0, parse_group_size(group_size))


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


def _run_sweep_locked(sweep, out, backend: Backend, progress, only, threads, log, t0, group_size=1) -> SweepOutcome:
    atomic_write_json(out / "sweep.json", {
        "name": sweep.name, "description": sweep.description, "source": sweep.source, "spec": sweep.spec,
        "trials": [t.id for t in sweep.trials], "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    trials = [t for t in sweep.trials if not only or only in t.id]
    states = {t.id: inspect_trial(out / "trials" / t.id, t) for t in trials}
    todo = [t for t in trials if states[t.id].status != "finished"]
    done = len(trials) - len(todo)
    units = pack(todo, auto_group_size(todo) if group_size == "auto" else group_size)
    if not backend.packs_groups:
        units = [[t] for t in todo]
    if log:
        by: dict = {}
        for st in states.values():
            by[st.status] = by.get(st.status, 0) + 1
        engine = backend.describe()
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
            failed = sum(r["status"] not in ("finished", "busy") for r in results)  # busy: another process has it
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
            backend.run(units, out, report)
        finally:
            bar.close()
    rows = aggregate(out, sweep, udr=True)  # UDR needs every trial's model: after they finish
    return SweepOutcome(sweep, out, results, rows, time.time() - t0)
