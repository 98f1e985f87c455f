"""Running a sweep: every unfinished trial of a spec on an engine (this process, a local pool
of worker processes, or Ray), under a lock on the sweep directory, then the results table.

Layout of a sweep directory ``DIR``::

    DIR/sweep.json            the spec as given and the trial list of the last invocation
    DIR/trials/<id>/          one trial directory per trial (factorvae.sweep.trialdir)
    DIR/quarantine/           unfinished trial directories that were unreadable, moved aside
    DIR/results.csv, DIR/results.parquet   one row per trial (factorvae.sweep.table)

A new backend is one function ``run_X(todo, out, ..., report)`` (as ``sweep/slurm.py``) that
calls ``report`` with the result of ``run_trial`` or ``run_group`` (or ``failure``) once per trial,
chosen in ``_run_sweep_locked``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from factorvae.errors import UserError
from factorvae.io import atomic_write_json, check_out_dir, read_json
from factorvae.sweep.packing import auto_group_size, pack, parse_group_size
from factorvae.sweep.slurm import SlurmOptions, run_slurm
from factorvae.sweep.spec import Sweep, Trial, load_spec
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
              log=print, slurm: SlurmOptions | None = None, group_size: int | str = "auto") -> SweepOutcome:
    """Run every unfinished trial of ``spec`` into ``out`` and gather the table.

    ``workers`` local processes (0: in this process), or Ray tasks when ``ray_address`` is given
    (``local``: start a local Ray instance; ``auto``: join the running cluster; else an address),
    or Slurm jobs when ``slurm`` is given (``sweep.slurm``; CPUs and GPUs per trial as for Ray).
    Torch threads per trial: ``threads``, else the spec's ``train.threads``, else cores / workers
    (Ray: the trial's CPUs). ``group_size`` (or ``auto``): trials of one group key train as one
    vectorised group of up to that many runs in one worker or Ray task (factorvae.sweep.packing;
    Slurm runs one trial per job)."""
    t0 = time.time()
    sweep = spec if isinstance(spec, Sweep) else load_spec(spec)
    # new, empty, or a sweep directory (whatever else it holds, e.g. its spec): never the user's folder
    out = check_out_dir(out, lambda _, names: bool({"sweep.json", "trials", ".sweep.lock"} & set(names)),
                        "a sweep directory")
    if workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    if ray_address and ray_address not in ("local", "auto") and "ray" not in sys.modules:
        _check_reachable(ray_address)  # before anything is written
    (out / "trials").mkdir(parents=True, exist_ok=True)
    with _SweepLock(out):
        return _run_sweep_locked(sweep, out, workers, ray_address, cpus_per_trial, gpus_per_trial, progress, only,
                                 threads, log, t0, slurm, parse_group_size(group_size))


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
                      t0, slurm=None, group_size=1) -> SweepOutcome:
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
        engine = (f"Ray ({ray_address})" if ray_address else f"Slurm ({slurm.cluster} executor)" if slurm
                  else f"{workers} worker process(es)" if workers else "this process")
        log(f"sweep {sweep.name}: {len(trials)} trial(s) -> {out}  [" + ", ".join(f"{v} {k}" for k, v in by.items())
            + f"]; running {len(todo)} on {engine}"
            + (f" in {len(units)} group(s)" if len(units) < len(todo) and not slurm else ""))
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
            if ray_address:
                _run_ray(units, out, ray_address, cpus_per_trial, gpus_per_trial, report)
            elif slurm:
                run_slurm(todo, out, slurm, cpus_per_trial, gpus_per_trial, report, _failure)
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
        self.process = ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True)
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


def _dirs(out: Path, unit: list[Trial]) -> list[str]:
    return [str(out / "trials" / t.id) for t in unit]


def _run_pool(todo: list[list[Trial]], out: Path, workers: int, report) -> None:
    """Separate processes (spawn), at most ``workers`` units (a trial or a group) in flight,
    each with cores/workers torch threads. Each worker has its own pipe, so a worker that dies
    (killed, out of memory) fails only the trials it held, and a new worker takes its place;
    workers exit when the driver dies."""
    threads = max(1, usable_cores() // workers)
    queue = list(todo)
    ctx = multiprocessing.get_context("spawn")
    idle: list[_Worker] = []
    busy: dict[_Worker, list[Trial]] = {}
    ok = False
    try:
        while queue or busy:
            while queue and len(busy) < workers:
                w = idle.pop() if idle else _Worker(ctx)
                unit = queue.pop(0)
                w.conn.send((unit, _dirs(out, unit), threads))
                busy[w] = unit
            ready = multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                unit = busy.pop(w)
                try:
                    results = w.conn.recv()  # a result sent just before the worker ended still counts
                except (EOFError, OSError):
                    w.stop(0)
                    for t in unit:
                        report(_failure(t, out, "the worker process died (killed or out of memory) while running "
                                                "this trial; it is resumed from its checkpoint on the next run"))
                    continue
                except Exception as e:  # noqa: BLE001 - e.g. a result that could not be unpickled
                    w.stop(0)
                    for t in unit:
                        report(_failure(t, out, f"{type(e).__name__}: {e}"))
                    continue
                idle.append(w)
                for res in results:
                    report(res)
        ok = True
    finally:
        for w in idle + list(busy):
            w.stop(30 if ok else 0)


#: a Ray instance this process starts stays on this machine (loopback only):
#: - Ray's single-machine mode (its default on macOS and Windows): every Ray process binds to
#:   127.0.0.1, instead of all interfaces and the address a UDP "connect" to 8.8.8.8 finds;
#: - no usage statistics;
#: - an HTTP proxy that refuses at once on loopback: Ray's usage module asks the cloud metadata
#:   servers (169.254.169.254, metadata.google.internal) for the cloud it runs on even when
#:   statistics are off, and a local instance has no HTTP to do beyond this machine.
_REFUSE = "http://127.0.0.1:9"
_LOOPBACK = "127.0.0.1,localhost,::1"
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                 "http_proxy": _REFUSE, "https_proxy": _REFUSE, "HTTP_PROXY": _REFUSE, "HTTPS_PROXY": _REFUSE,
                 "no_proxy": _LOOPBACK, "NO_PROXY": _LOOPBACK}


@contextlib.contextmanager
def _local_ray_env():
    """LOCAL_RAY_ENV while a local Ray instance starts (its processes inherit it)."""
    old = {k: os.environ.get(k) for k in LOCAL_RAY_ENV}
    os.environ.update(LOCAL_RAY_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    cluster = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if cluster is not None:  # Ray was imported before the variable was set: it read it at import
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if cluster is not None:
            constants.ENABLE_RAY_CLUSTER = cluster


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """An explicit ``host:port`` (or ``ray://host:port``) must answer within seconds; Ray itself
    waits a minute or more in silence before giving up on an address where nothing listens."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port: Ray's own parsing reports it
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise UserError(f"--ray {address}: no Ray cluster answers at {host}:{port} "
                        f"({e.strerror or type(e).__name__})") from None


def _run_ray(todo: list[list[Trial]], out: Path, address: str, cpus: float | None, gpus: float, report) -> None:
    """One Ray task per unit (a trial or a group). ``out`` must be on storage every node sees
    (a shared file system).
    ``local`` starts an instance on 127.0.0.1 only, without dashboard or usage statistics."""
    if importlib.util.find_spec("ray") is None:
        raise UserError("--ray needs Ray: pip install 'factorvae[ray]'")
    if address not in ("local", "auto") and "ray" not in sys.modules:  # before Ray's slow import
        _check_reachable(address)
    with _local_ray_env() if address == "local" else contextlib.nullcontext():
        import ray  # optional (pip install 'factorvae[ray]'), and slow to import

        started = False
        if not ray.is_initialized():
            if address not in ("local", "auto"):
                _check_reachable(address)
            try:
                if address == "local":  # a new instance on this machine, even if a cluster runs here
                    ray.init(address="local", include_dashboard=False, log_to_driver=False,
                             _node_ip_address="127.0.0.1")
                else:
                    ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({type(e).__name__}: {e})") from None
            started = True
    try:
        cpus = float(cpus) if cpus else 1.0
        remote = ray.remote(num_cpus=cpus, num_gpus=float(gpus or 0), max_retries=0)(run_group)
        refs = {remote.remote(unit, _dirs(out.resolve(), unit), max(1, int(math.floor(cpus)))): unit for unit in todo}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for r in ready:
                unit = refs.pop(r)
                try:
                    results = ray.get(r)
                except Exception as e:  # noqa: BLE001 - worker crashed, node lost, ...
                    for t in unit:
                        report(_failure(t, out, f"Ray task failed: {type(e).__name__}: {str(e)[:2000]}"))
                    continue
                for res in results:
                    report(res)
    finally:
        if started:
            ray.shutdown()
