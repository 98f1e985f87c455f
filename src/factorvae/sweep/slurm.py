"""The Slurm backend of ``factorvae sweep --slurm``: one Slurm job per unfinished trial,
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

from factorvae.errors import UserError
from factorvae.sweep.spec import Trial
from factorvae.sweep.trial import run_trial


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 24 * 60  # per trial
    #: "slurm", or "local": submitit's local executor (the jobs run on this machine), to try a set-up
    cluster: str = "slurm"
    poll_s: float = 2.0


def run_slurm(todo: list[Trial], out: Path, opts: SlurmOptions, cpus: float | None, gpus: float, report,
              failure) -> None:
    """Submit one job per trial (``cpus`` CPUs, default 1, and ``gpus`` whole GPUs each), then
    wait for them and ``report`` each result (``failure`` for a job that failed, timed out or
    was cancelled)."""
    try:
        import submitit  # optional (pip install 'factorvae[slurm]')
    except ImportError:
        raise UserError("--slurm needs submitit: pip install 'factorvae[slurm]'") from None
    if gpus and gpus != int(gpus):
        raise UserError(f"--slurm takes whole GPUs per trial, got --gpus-per-trial {gpus}")
    cpus = max(1, int(math.ceil(cpus or 1)))
    try:
        executor = submitit.AutoExecutor(folder=out / "slurm" / "%j", cluster=opts.cluster)
    except Exception as e:  # noqa: BLE001 - e.g. no sbatch on this machine
        raise UserError(f"--slurm: cannot use the {opts.cluster!r} executor ({type(e).__name__}: {e})") from None
    executor.update_parameters(name="factorvae", timeout_min=int(opts.time_min), cpus_per_task=cpus,
                               gpus_per_node=int(gpus or 0), tasks_per_node=1, nodes=1,
                               slurm_partition=opts.partition)
    jobs = {}
    for t in todo:
        job = executor.submit(run_trial, t, str((out / "trials" / t.id).resolve()), cpus)
        jobs[job] = t
    while jobs:
        done = [j for j in jobs if j.done()]
        if not done:
            time.sleep(opts.poll_s)
            continue
        for job in done:
            t = jobs.pop(job)
            try:
                report(job.result())
            except Exception as e:  # noqa: BLE001 - the job failed, timed out, was cancelled, ...
                last = str(e).strip().splitlines()[-1:] or [""]
                report(failure(t, out, f"Slurm job {job.job_id} failed: {type(e).__name__}: {last[0][:1000]}"))
