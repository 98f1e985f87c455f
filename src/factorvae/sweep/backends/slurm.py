"""Slurm (``factorvae sweep --slurm``): one Slurm job per unfinished trial,
submitted through submitit (``pip install 'factorvae[slurm]'``). Each job runs
``sweep.trial.run_trial`` on the trial directory under ``DIR/trials/``, exactly as the local
pool and Ray do, so a rerun skips finished trials and resumes the others from their
checkpoints. ``DIR`` must be on storage the compute nodes see; submitit keeps its job scripts,
pickles and logs under ``DIR/slurm/``."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from factorvae.errors import UserError
from factorvae.sweep.backends.base import Backend, failure
from factorvae.sweep.trial import run_trial


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 24 * 60  # per trial
    #: "slurm", or "local": submitit's local executor (the jobs run on this machine), to try a set-up
    cluster: str = "slurm"
    poll_s: float = 2.0


class SlurmBackend(Backend):
    """One job per trial (``cpus`` CPUs, default 1, and ``gpus`` whole GPUs each), polled every
    ``opts.poll_s`` seconds; a job that failed, timed out or was cancelled is a failure."""

    name = "slurm"
    packs_groups = False  # one job per trial

    def __init__(self, opts: SlurmOptions | None = None, cpus: float | None = None, gpus: float = 0):
        self.opts, self.cpus, self.gpus = opts or SlurmOptions(), cpus, gpus
        self.jobs: dict = {}

    def describe(self) -> str:
        return f"Slurm ({self.opts.cluster} executor)"

    def submit(self, units, out: Path) -> None:
        opts, gpus = self.opts, self.gpus
        try:
            import submitit  # optional (pip install 'factorvae[slurm]')
        except ImportError:
            raise UserError("--slurm needs submitit: pip install 'factorvae[slurm]'") from None
        if gpus and gpus != int(gpus):
            raise UserError(f"--slurm takes whole GPUs per trial, got --gpus-per-trial {gpus}")
        cpus = max(1, int(math.ceil(self.cpus or 1)))
        try:
            executor = submitit.AutoExecutor(folder=out / "slurm" / "%j", cluster=opts.cluster)
        except Exception as e:  # noqa: BLE001 - e.g. no sbatch on this machine
            raise UserError(f"--slurm: cannot use the {opts.cluster!r} executor ({type(e).__name__}: {e})") from None
        executor.update_parameters(name="factorvae", timeout_min=int(opts.time_min), cpus_per_task=cpus,
                                   gpus_per_node=int(gpus or 0), tasks_per_node=1, nodes=1,
                                   slurm_partition=opts.partition)
        self.out = out
        for unit in units:
            for t in unit:
                job = executor.submit(run_trial, t, str((out / "trials" / t.id).resolve()), cpus)
                self.jobs[job] = t

    def collect(self) -> Iterator[dict]:
        jobs = self.jobs
        while jobs:
            done = [j for j in jobs if j.done()]
            if not done:
                time.sleep(self.opts.poll_s)
                continue
            for job in done:
                t = jobs.pop(job)
                try:
                    result = job.result()
                except Exception as e:  # noqa: BLE001 - the job failed, timed out, was cancelled, ...
                    last = str(e).strip().splitlines()[-1:] or [""]
                    result = failure(t, self.out, f"Slurm job {job.job_id} failed: {type(e).__name__}: {last[0][:1000]}")
                yield result

    # cancel: the default (nothing): submitted jobs keep running on the cluster after the driver
    # stops, each under its trial's lock; a rerun skips what they finished
