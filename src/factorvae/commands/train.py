"""`factorvae train`: train a model into a run directory (or resume one)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from factorvae.errors import UserError

# The library is imported inside the functions: `factorvae --help` registers every command's
# parser and should not import torch for that.


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model into a run directory",
                       description="Train VAE / β-VAE / FactorVAE (and other methods) on a data set.")
    p.add_argument("--model", help="method: vae, betavae, factorvae, ... (default: from --config, else factorvae)")
    p.add_argument("--dataset", help="data set name (default: from --config, else dsprites)")
    p.add_argument("--data-path", help="official data file or image folder to read instead of generating")
    p.add_argument("--cache-dir", help="where generated data sets are cached (default $FACTORVAE_CACHE or ~/.cache/factorvae)")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.gamma=10 (repeatable)")
    p.add_argument("--steps", help="training steps")
    p.add_argument("--seed", help="random seed")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--threads", help="torch CPU threads (default: the config's train.threads, else 2 or more only "
                                     "when that many cores are idle, else 1: two threads on a busy 2-core machine "
                                     "run several times slower than one; benchmarks/threads.py)")
    p.add_argument("--eval-every", help="score the model every N steps (0: never)")
    p.add_argument("--logger", help="experiment tracker(s), comma-separated: tensorboard (default), wandb "
                                    "(offline unless WANDB_MODE is set), mlflow (RUN/mlruns unless "
                                    "MLFLOW_TRACKING_URI is set), csv (RUN/metrics.csv), none")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


#: steps timed (after 2 warm-up steps) for the expected-time line; skipped for runs so short that
#: timing them would cost a sizeable part of the run
ESTIMATE_STEPS, ESTIMATE_MIN_REMAINING = 5, 50


def pick_threads(cores: int | None = None, load: float | None = None) -> int:
    """Torch threads for a CPU run: the cores left idle by the 1-minute load average (rounded),
    at least 1. Measured on a 2-core machine with other jobs on it: 1 thread several times
    faster than 2 (benchmarks/threads.py); 2 pay only when both cores are free."""
    from factorvae.sweep.engine import usable_cores

    cores = usable_cores() if cores is None else cores
    load = os.getloadavg()[0] if load is None else load
    return max(1, min(cores, int(cores - load + 0.5)))


def step_rate(cfg: dict, dataset) -> float:
    """Training steps per second of a throwaway copy of ``cfg``'s model: ESTIMATE_STEPS steps
    timed after 2 warm-up steps, on two batches of ``dataset``."""
    import torch

    from factorvae.runs import build_model, pick_device

    t = cfg["train"]
    device = pick_device(t["device"])
    model, _ = build_model(cfg, dataset.channels, device)
    model.train()
    gen = torch.Generator(device=device).manual_seed(0)
    batch = [dataset.sample_batch(t["batch_size"], gen) for _ in range(2)]
    second = batch[1] if model.needs_second_batch else None
    for i in range(2):
        model.train_step(batch[0], second, i)
    t0 = time.perf_counter()
    for i in range(ESTIMATE_STEPS):
        model.train_step(batch[0], second, i)
    return ESTIMATE_STEPS / (time.perf_counter() - t0)


def expected_time(cfg: dict, dataset, start: int) -> str | None:
    """One line: the step rate of a few steps of a throwaway copy of the model and the time
    the remaining steps should take at that rate (None for runs too short to time)."""

    import torch

    remaining = cfg["train"]["steps"] - start
    if remaining < ESTIMATE_MIN_REMAINING:
        return None
    rate = step_rate(cfg, dataset)
    secs = remaining / rate
    when = f"{secs:.0f} s" if secs < 90 else f"{secs / 60:.0f} min" if secs < 5400 else f"{secs / 3600:.1f} h"
    return (f"expect ~{when} for {remaining:,} steps: {rate:.2f} steps/s measured over {ESTIMATE_STEPS} steps "
            f"with {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}")


def _number(flag: str, raw: str | None):
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{flag} must be a whole number, got {raw!r}") from None


def build_config(args) -> dict:
    from factorvae.config import parse_set, read_yaml, resolve

    layers = []
    if args.config:
        layers.append(read_yaml(args.config))
    cli: dict = {"model": {}, "data": {}, "train": {}}
    if args.model:
        cli["model"]["name"] = args.model
    if args.dataset:
        cli["data"]["name"] = args.dataset
    if args.data_path:
        cli["data"]["path"] = str(Path(args.data_path).expanduser().resolve())
    if args.cache_dir:
        cli["data"]["cache_dir"] = str(Path(args.cache_dir).expanduser().resolve())
    for flag, key in (("--steps", "steps"), ("--seed", "seed"), ("--eval-every", "eval_every")):
        value = _number(flag, getattr(args, key))
        if value is not None:
            cli["train"][key] = value
    if args.device:
        cli["train"]["device"] = args.device
    if args.logger:
        cli["train"]["loggers"] = args.logger
    sets = parse_set(args.sets)
    # a model named on the command line starts from its own defaults, not the config's model
    if args.model and layers and layers[0].get("model", {}).get("name", args.model) != args.model:
        layers[0] = {k: v for k, v in layers[0].items() if k != "model"}
    return resolve(*layers, cli, sets)


#: what a resumed run may change; every other option must repeat the saved config
RESUMABLE_KEYS = ("train.steps", "train.device", "train.loggers", "train.threads")  # threads: a machine key, picked on every start


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _saved_value(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def resume_config(args, rd) -> dict:
    """The saved config of the run in ``rd`` with ``--steps`` / ``--device`` / ``--logger`` applied. Other
    options given again must equal the saved values; a differing one is refused by name."""
    from factorvae.config import parse_set, read_yaml, resolve
    from factorvae.methods import get_method

    saved = rd.read_config()
    given = _leaves(read_yaml(args.config)) if args.config else {}
    given.update(_leaves(parse_set(args.sets)))
    if args.model:
        given["model.name"] = args.model
    if args.dataset:
        given["data.name"] = args.dataset
    for key, value in (("data.path", args.data_path), ("data.cache_dir", args.cache_dir)):
        if value:
            given[key] = str(Path(value).expanduser().resolve())
    for flag, key in (("--seed", "seed"), ("--eval-every", "eval_every"), ("--steps", "steps")):
        value = _number(flag, getattr(args, key))
        if value is not None:
            given[f"train.{key}"] = value
    if args.device:
        given["train.device"] = args.device
    if args.logger:
        given["train.loggers"] = args.logger
    if "model.name" in given:
        given["model.name"] = get_method(str(given["model.name"])).name
    cfg = saved
    for key, value in given.items():
        if key in RESUMABLE_KEYS:
            continue
        try:
            old = _saved_value(saved, key)
        except KeyError:
            raise UserError(f"--resume: {key} is not in the saved config of {rd.path}; "
                            "a resumed run keeps its config (only --steps, --device, --threads and --logger may change)") from None
        if value != old:
            if key == "model.name":
                raise UserError(f"{rd.path} holds a {old!r} run, not {value!r} (model.name); choose another --out")
            raise UserError(f"--resume: {key}={value!r} differs from {old!r} in {rd.config_path}; "
                            "a resumed run keeps its config (only --steps, --device, --threads and --logger may change)")
    for key in RESUMABLE_KEYS:
        if key in given:
            section, name = key.split(".")
            cfg[section][name] = given[key]
    return resolve(cfg)


def run(args) -> int:
    from factorvae.runs import RunDir
    from factorvae.trainer import Interrupted, train

    rd = RunDir(args.out)
    rd.check_new_or_ours(resume=args.resume)  # new, empty, or a run: never the user's folder, `/` or ""
    if args.resume and not rd.exists():
        raise UserError(f"--resume: {args.out} holds no run (no config.yaml)")
    cfg = None if args.resume else build_config(args)  # a bad option creates nothing
    threads = _number("--threads", args.threads)
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    with rd.lock():  # held from the checks to the end: two writers never share a run
        if args.resume:
            cfg = resume_config(args, rd)
        elif rd.exists():
            old = rd.read_config()["model"]["name"]
            if rd.ckpt_path.exists():
                hint = "" if old == cfg["model"]["name"] else f" of a different model ({old!r})"
                raise UserError(f"{args.out} already holds a run{hint}; use --resume to continue it or choose another --out")
        resume, start = False, 0
        if rd.ckpt_path.exists():  # only with --resume: a fresh run on a checkpoint was refused above
            start = int(rd.load_checkpoint().get("step", 0))  # fails early on an unreadable checkpoint
            if start > cfg["train"]["steps"]:
                raise UserError(f"--steps {cfg['train']['steps']}: {args.out} has already trained {start} steps; "
                                "a run cannot be resumed to fewer")
            resume = True
        elif rd.exists():
            print(f"factorvae train: {args.out} holds no checkpoint (stopped before its first); "
                  "starting it again from step 0", file=sys.stderr, flush=True)
        if threads is None and not (not args.resume and cfg["train"]["threads"]):
            threads = pick_threads()  # picked afresh on every start: the machine's load changes
        if threads is not None:
            cfg["train"]["threads"] = threads
        dataset = prepare(cfg, progress=not args.no_progress)
        line = expected_time(cfg, dataset, start)
        if line:
            print(line, file=sys.stderr, flush=True)
        try:
            summary = train(cfg, rd.path, resume=resume, progress=not args.no_progress, dataset=dataset)
        except Interrupted as e:
            print(f"\nfactorvae train: stopped by {signal.Signals(e.signum).name} at step {e.step}; checkpoint saved; "
                  f"continue with: factorvae train --out {args.out} --resume", file=sys.stderr, flush=True)
            return 128 + e.signum
    print_summary(summary)
    return 0


def prepare(cfg: dict, progress: bool):
    """Threads set, data set loaded: what ``train`` would do first, done here to time a few steps."""
    import torch

    from factorvae.runs import open_dataset

    if cfg["train"]["threads"]:
        torch.set_num_threads(cfg["train"]["threads"])
    return open_dataset(cfg, progress)


def print_summary(summary: dict) -> None:
    final = summary.get("final") or {}
    keys = [k for k in ("recon", "kl", "tc", "d_loss", "d_acc", "loss", "steps_per_s") if k in final]
    print(f"\n{summary['model']} on {summary['data']}: {summary['steps']} steps -> {summary['run_dir']}")
    if keys:
        print("  final  " + "  ".join(f"{k}={final[k]:.4g}" for k in keys))
    if summary.get("kl_per_dim") is not None:
        print(f"  KL per latent dim (nats): {summary['kl_per_dim']}")
        dims, th = summary["active_dims_kl"], summary["active_dims_kl_threshold"]
        n = len(summary["kl_per_dim"])
        print(f"  active dims by KL (mean KL(q(z_j|x) || p(z_j)) > {th} nats: the posterior differs from the prior): "
              f"{len(dims)} of {n} {dims}")
        std = summary.get("active_dims_std")
        if std is not None:
            print(f"  active dims by the FactorVAE metric's rule (std of the encoder means >= "
                  f"{summary['active_dims_std_threshold']} over 1,024 images: the mean moves with the image): "
                  f"{len(std)} of {n} {std}; both are right: a latent whose variance shrank while its mean barely "
                  "moves counts for KL only (docs/metrics.md)")
    imgs = summary.get("images", {})
    if imgs.get("traversals"):
        print(f"  traversals: {imgs['traversals'][0]} (+{len(imgs['traversals']) - 1} more), {imgs.get('traversal_gif')}")
    for k in ("reconstructions", "samples"):
        if k in imgs:
            print(f"  {k}: {imgs[k]}")
    sys.stdout.flush()
