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
    from factorvae.sweep import inspect_trial, load_spec, run_sweep
    from factorvae.sweep.packing import parse_group_size
    from factorvae.sweep.projection import describe, project
    from factorvae.sweep.slurm import SlurmOptions

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
    for line in _plan(sweep, Path(args.out), args):
        print(line, file=sys.stderr, flush=True)
    outcome = run_sweep(sweep, args.out, workers=args.workers, ray_address=args.ray,
                        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                        progress=not args.no_progress, only=args.only, threads=args.threads, group_size=group_size,
                        slurm=SlurmOptions(args.slurm_partition, args.slurm_time, args.slurm_executor) if args.slurm else None)
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
    try:
        return plan_lines(sweep, out, args.only, args.workers, args.threads)
    except Exception as e:  # noqa: BLE001 - the plan is advice: failing to time it never stops the sweep
        return [f"plan: not available ({type(e).__name__}: {e})"[:300]]


def plan_lines(sweep, out: Path, only: str | None, workers: int, threads: int | None) -> list[str]:
    """What the sweep will cost on this machine before it starts: per method, training (steps/s
    of a few timed steps on random images), metrics (metrics.plan) and each analysis
    (sweep.trial.analysis_cost); the projected total for the unfinished trials over the workers."""
    import os

    import torch

    from factorvae.commands.train import step_rate
    from factorvae.data import get_dataset_info, image_channels
    from factorvae.data.store import ImageData
    from factorvae.metrics.plan import describe, duration
    from factorvae.sweep import inspect_trial
    from factorvae.sweep.engine import usable_cores
    from factorvae.sweep.spec import QUICK_ANALYSES
    from factorvae.sweep.trial import analysis_cost

    todo = []
    for t in sweep.trials:
        if only and only not in t.id:
            continue
        st = inspect_trial(out / "trials" / t.id, t)
        if st.status != "finished":
            todo.append((t, 0 if st.status == "trained" else t.config["train"]["steps"] - (st.step or 0)))
    if not todo:
        return []
    lines, total, rates = [], 0.0, {}
    n_threads = threads or todo[0][0].config["train"].get("threads") or max(1, usable_cores() // max(workers, 1))
    old = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        for t, steps in todo:
            cfg, info = t.config, get_dataset_info(t.dataset)
            key = (t.method, t.dataset)
            if key not in rates:
                channels = image_channels(t.dataset, cfg["data"].get("channels"))
                gen = torch.Generator().manual_seed(0)
                fake = ImageData("plan", torch.randint(0, 2, (2 * cfg["train"]["batch_size"], channels, 64, 64),
                                                       generator=gen, dtype=torch.uint8), None, scale=1.0)
                rates[key] = step_rate(cfg, fake)
            train = steps / rates[key]
            grid = info.grid
            metrics = None
            if grid is not None and t.eval["metrics"] != []:
                metrics = describe(t.eval["preset"], t.eval["metrics"], grid=grid, channels=info.channels)
                metrics = metrics["expected_seconds"]
            analyses = analysis_cost(t.eval, len(grid)) if grid is not None else {}
            seconds = train + (metrics or 0) + sum(a["seconds"] for a in analyses.values())
            total += seconds
            if len(lines) < 1:  # the first trial in full; the others add to the total
                quick = analysis_cost({**t.eval, **QUICK_ANALYSES}, len(grid)) if grid is not None else {}
                lines.append(
                    f"plan, trial {t.id}: training {steps:,} steps ~{duration(train)} ({rates[key]:.1f} steps/s timed "
                    f"with {n_threads} thread(s), load average {os.getloadavg()[0]:.1f}); metrics (preset "
                    f"{t.eval['preset']}) ~{duration(metrics) if metrics is not None else '? (not measured)'}; "
                    + "; ".join(f"{a['what']} ~{duration(a['seconds'])}" for a in analyses.values()))
                if analyses and sum(a["seconds"] for a in quick.values()) < 0.5 * sum(a["seconds"] for a in analyses.values()):
                    lines.append(f"  the analyses take ~{duration(sum(a['seconds'] for a in quick.values()))} with "
                                 "--set eval.analyses=quick (true TC on a 10,000-image subset: up to ~1 nat under "
                                 "the exact value; README, 'What a sweep costs')")
    finally:
        torch.set_num_threads(old)
    par = max(1, min(workers or 1, len(todo)))
    lines.append(f"plan: {len(todo)} trial(s) to run, ~{duration(total / par)} projected on {par} worker(s) "
                 "(training as timed just now; metrics and analyses as on one idle core: slower on a busy machine)")
    return lines
