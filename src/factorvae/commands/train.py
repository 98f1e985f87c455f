"""`factorvae train`: train a model into a run directory (or resume one)."""

from __future__ import annotations

import signal
import sys
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


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def given_options(args) -> dict:
    """The options given on a ``--resume`` command line, as {dotted config key: value}: the
    use case (factorvae.usecases.train.resume_config) checks them against the saved config."""
    from factorvae.config import parse_set, read_yaml

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
    return given


def run(args) -> int:
    from factorvae.trainer import Interrupted
    from factorvae.usecases.train import train_run

    threads = _number("--threads", args.threads)
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    cfg = None if args.resume else build_config(args)  # a bad option creates nothing
    given = given_options(args) if args.resume else None
    try:
        summary = train_run(args.out, cfg, resume=args.resume, given=given, threads=threads,
                            progress=not args.no_progress, say=_say)
    except Interrupted as e:
        print(f"\nfactorvae train: stopped by {signal.Signals(e.signum).name} at step {e.step}; checkpoint saved; "
              f"continue with: factorvae train --out {args.out} --resume", file=sys.stderr, flush=True)
        return 128 + e.signum
    print_summary(summary)
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
