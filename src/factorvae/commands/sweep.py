"""`factorvae sweep SPEC --out DIR`: train and evaluate every trial of a sweep spec, locally
(--workers N processes), on a Ray cluster (--ray ADDRESS) or as Slurm jobs (--slurm); rerunning skips finished trials,
resumes interrupted ones and retries failed ones. See docs/reproduce.md."""

from __future__ import annotations

import sys
from pathlib import Path

from factorvae.errors import UserError

# The library is imported inside the functions: `factorvae --help` registers every command's
# parser and should not import torch for that.


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="run a sweep (methods x grids x seeds x data sets) and gather its results",
        description="Train and evaluate every trial of a sweep spec (configs/sweeps/*.yaml) into DIR/trials/, "
                    "then write DIR/results.csv and DIR/results.parquet. Running the same command again skips "
                    "finished trials, resumes interrupted ones from their checkpoints and retries failed ones.")
    p.add_argument("spec", help="sweep spec (YAML), e.g. configs/sweeps/smoke.yaml")
    p.add_argument("--out", required=True, help="sweep directory")
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes (default 1; 0 runs trials in this process); each gets cores/N torch threads")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run on Ray instead: 'local' starts a local instance, 'auto' joins the running cluster, "
                        "or a cluster address; DIR must be on storage every node sees")
    p.add_argument("--slurm", action="store_true",
                   help="submit one Slurm job per trial instead (needs submitit: pip install 'factorvae[slurm]'); "
                        "DIR must be on storage the compute nodes see")
    p.add_argument("--slurm-partition", metavar="NAME", help="Slurm: partition (default: the cluster's)")
    p.add_argument("--slurm-time", metavar="MINUTES", type=int, default=24 * 60,
                   help="Slurm: time limit per trial in minutes (default 1440); a trial cut short resumes on the next run")
    p.add_argument("--slurm-executor", choices=("slurm", "local"), default="slurm",
                   help="Slurm: 'local' runs the jobs on this machine through submitit's local executor, "
                        "to try a set-up (default slurm)")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="Ray, Slurm: CPUs per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="Ray, Slurm: GPUs per trial (default 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per trial (default: the spec's train.threads, else cores / workers); "
                        "1 is often fastest on a shared machine")
    p.add_argument("--group-size", default="auto", metavar="N",
                   help="train up to N trials that differ only in seed and the method's hyper-parameters as one "
                        "vectorised group in one worker (default auto: 1 on a CPU, sized from GPU memory on CUDA)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override the spec (YAML values): seeds=2, eval.preset=fast, or any config key of its base, "
                        "e.g. train.steps=300 (new settings make new trial ids)")
    p.add_argument("--only", metavar="TEXT", help="run only trials whose id contains TEXT")
    p.add_argument("--dry-run", action="store_true",
                   help="list the trials and their status and what running them would cost; run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from factorvae.sweep import SlurmOptions, check_sweep_dir, get_backend, inspect_trial, load_spec, run_sweep
    from factorvae.sweep.packing import parse_group_size

    from factorvae.config import parse_set

    sweep = load_spec(args.spec, sets=parse_set(args.sets))
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if args.ray and args.slurm:
        raise UserError("choose one of --ray and --slurm")
    if (args.ray or args.slurm) and args.workers not in (0, 1):
        raise UserError("--workers is for local runs; with --ray or --slurm use --cpus-per-trial / --gpus-per-trial")
    if not args.slurm and (args.slurm_partition or args.slurm_executor != "slurm" or args.slurm_time != 24 * 60):
        raise UserError("--slurm-partition, --slurm-time and --slurm-executor need --slurm")
    if args.slurm_time < 1:
        raise UserError(f"--slurm-time must be >= 1 minute, got {args.slurm_time}")
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    group_size = parse_group_size(args.group_size)
    if args.dry_run:
        out = Path(args.out)
        print(f"sweep {sweep.name}: {len(sweep.trials)} trial(s)")
        for t in sweep.trials:
            if args.only and args.only not in t.id:
                continue
            st = inspect_trial(out / "trials" / t.id, t)
            print(f"  {st.status:<11} {t.id}  steps={t.config['train']['steps']}" + (f"  ({st.detail})" if st.detail else ""))
        for line in _plan(sweep, out, args):
            print(line)
        return 0
    if args.ray:
        backend = get_backend("ray", address=args.ray, cpus=args.cpus_per_trial, gpus=args.gpus_per_trial)
    elif args.slurm:
        backend = get_backend("slurm", opts=SlurmOptions(args.slurm_partition, args.slurm_time, args.slurm_executor),
                              cpus=args.cpus_per_trial, gpus=args.gpus_per_trial)
    elif args.workers == 0:
        backend = get_backend("local", progress=not args.no_progress)
    else:
        backend = get_backend("pool", workers=args.workers)
    backend.check()  # an unreachable cluster, a missing submitit: said before the plan is timed
    check_sweep_dir(args.out)  # a refused or read-only folder too
    for line in _plan(sweep, Path(args.out), args):
        print(line, file=sys.stderr, flush=True)
    outcome = run_sweep(sweep, args.out, backend, progress=not args.no_progress, only=args.only, threads=args.threads,
                        group_size=group_size)
    counts = outcome.counts()
    print(f"\nsweep {sweep.name}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + f" ({outcome.seconds:.0f} s)")
    print(f"  table: {outcome.out / 'results.csv'}, {outcome.out / 'results.parquet'}")
    bad = [r for r in outcome.rows if r["status"] not in ("finished", "pending")]
    for r in bad[:20]:
        print(f"  {r['status']:<11} {r['trial_id']}: {r.get('detail') or ''}")
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more (see results.csv)")
    print(f"  report: factorvae report {outcome.out}")
    sys.stdout.flush()
    return 1 if any(r["status"] in ("failed", "corrupt", "mismatch") for r in outcome.rows) else 0


def _plan(sweep, out: Path, args) -> list[str]:
    from factorvae.sweep.projection import plan_lines

    try:
        return plan_lines(sweep, out, args.only, args.workers, args.threads)
    except Exception as e:  # noqa: BLE001 - the plan is advice: failing to time it never stops the sweep
        return [f"plan: not available ({type(e).__name__}: {e})"[:300]]
