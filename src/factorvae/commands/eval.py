"""`factorvae eval RUN_DIR`: score a trained run's representation and write RUN_DIR/eval.json.

RUN_DIR may also be an export folder or a pretrained name (then eval.json is not written
there: the scores are printed, and written to --out if given). The plan (metrics, images to
encode, expected time and memory) prints before the data set loads; ``--dry-run`` stops there.

The model is asked for its representation (``model.representation``: the encoder means for
VAEs) of each grid point a metric needs, at most once per evaluation (the Codes cache);
every metric reads from that cache. The file is written atomically.
"""

from __future__ import annotations

import sys

from factorvae.commands.metrics import add_metric_options, check_options, emit
from factorvae.errors import UserError

# The library is imported inside the functions: `factorvae --help` registers every command's
# parser and should not import torch for that.


def register(sub) -> None:
    p = sub.add_parser("eval", help="score a trained run (writes RUN_DIR/eval.json)",
                       description="Score a run's representation with the disentanglement metrics.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory, export folder or pretrained name")
    add_metric_options(p)
    p.add_argument("--dry-run", action="store_true", help="print what would be scored and how long it takes; "
                                                          "load no data, score nothing")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--batch-size", default="256", help="images per encoder call (default 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--representation", default="mean",
                   help="mean (default: the encoder means), sampled (one seeded draw z ~ q(z|x) per image) or both "
                        "(one encoding pass; eval.json gets 'sampled' beside the means' scores)")
    p.set_defaults(func=run)


def run(args) -> int:
    from factorvae.metrics.sampled import check_representation
    from factorvae.runs import RunDir
    from factorvae.usecases.evaluate import evaluate_run

    names, seed, overrides = check_options(args)
    check_representation(args.representation)
    try:
        batch_size = int(args.batch_size)
    except ValueError:
        raise UserError(f"--batch-size must be a whole number, got {args.batch_size!r}") from None
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    results, where = evaluate_run(args.run_dir, metrics=names, preset=args.preset, seed=seed, overrides=overrides,
                                  device=args.device, batch_size=batch_size, progress=not args.no_progress,
                                  dry_run=args.dry_run, say=_say, representation=args.representation)
    if args.dry_run:
        return 0
    emit(results, args.json)
    if not args.json:
        if "factor_vae" in results:
            print(active_dims_line(results, RunDir(where.parent).read_summary() if where else None))
        print(f"written {where}" if where else "not written: not a run directory")
    return 0


def active_dims_line(results: dict, summary: dict | None) -> str:
    """Both counts of active latents side by side, each with its definition (docs/metrics.md,
    "Two kinds of active dimensions"): they answer different questions and may disagree."""
    fv = results["factor_vae"]
    th = results.get("settings", {}).get("params", {}).get("factor_vae", {}).get("prune_threshold", 0.05)
    line = (f"active dims: {fv.get('num_active_dims')} for the FactorVAE metric (std of the encoder means over the "
            f"data >= {th:g}: the mean moves with the image)")
    kl = (summary or {}).get("active_dims_kl")
    if isinstance(kl, list):
        total = len(summary.get("kl_per_dim") or []) or "?"
        line += (f"; {len(kl)} of {total} by KL (summary.json active_dims_kl: mean KL(q(z_j|x) || p(z_j)) > "
                 f"{summary.get('active_dims_kl_threshold', 0.1)} nats: the posterior differs from the prior). "
                 "Both are right: a latent whose variance shrank while its mean barely moves counts for KL only")
    return line


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
