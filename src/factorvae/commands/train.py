"""`factorvae train`: train a model into a run directory (or resume one)."""

from __future__ import annotations

import json
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


def run(args) -> int:
    from factorvae.runs import RunDir
    from factorvae.train import train

    rd = RunDir(args.out)
    if args.resume:
        if not rd.exists():
            raise UserError(f"--resume: {args.out} holds no run (no config.yaml)")
        cfg = rd.read_config()
        if args.model and args.model != cfg["model"]["name"]:
            raise UserError(f"{args.out} holds a {cfg['model']['name']!r} run, not {args.model!r}; "
                            "choose another --out")
        if args.dataset and args.dataset != cfg["data"]["name"]:
            raise UserError(f"{args.out} holds a run on {cfg['data']['name']!r}, not {args.dataset!r}")
        if args.config or args.sets or args.seed:
            raise UserError("--resume continues the saved config; only --steps, --device and --logger may change")
        steps = _number("--steps", args.steps)
        if steps is not None:
            cfg["train"]["steps"] = steps
        if args.device:
            cfg["train"]["device"] = args.device
        if args.logger:
            from factorvae.loggers import parse_loggers

            cfg["train"]["loggers"] = parse_loggers(args.logger)
        rd.load_checkpoint()  # fail early on an unreadable checkpoint
        if steps is not None:
            from factorvae.config import resolve

            cfg = resolve(cfg)
            rd.write_config(cfg)
    else:
        cfg = build_config(args)
        if rd.exists():
            old = rd.read_config()["model"]["name"]
            hint = "" if old == cfg["model"]["name"] else f" of a different model ({old!r})"
            raise UserError(f"{args.out} already holds a run{hint}; use --resume to continue it or choose another --out")
        if rd.path.exists() and not rd.path.is_dir():
            raise UserError(f"--out {args.out} exists and is not a directory")
    summary = train(cfg, rd.path, resume=args.resume, progress=not args.no_progress)
    print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    final = summary.get("final") or {}
    keys = [k for k in ("recon", "kl", "tc", "d_loss", "d_acc", "loss", "steps_per_s") if k in final]
    print(f"\n{summary['model']} on {summary['data']}: {summary['steps']} steps -> {summary['run_dir']}")
    if keys:
        print("  final  " + "  ".join(f"{k}={final[k]:.4g}" for k in keys))
    if summary.get("kl_per_dim") is not None:
        print(f"  KL per latent dim (nats): {summary['kl_per_dim']}")
        print(f"  active dims (KL > 0.1): {summary['active_dims']} ({len(summary['active_dims'])} of {len(summary['kl_per_dim'])})")
    imgs = summary.get("images", {})
    if imgs.get("traversals"):
        print(f"  traversals: {imgs['traversals'][0]} (+{len(imgs['traversals']) - 1} more), {imgs.get('traversal_gif')}")
    for k in ("reconstructions", "samples"):
        if k in imgs:
            print(f"  {k}: {imgs[k]}")
    sys.stdout.flush()
