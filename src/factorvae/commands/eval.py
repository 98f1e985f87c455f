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
    p.set_defaults(func=run)


def run(args) -> int:
    from factorvae.usecases.evaluate import evaluate_run

    names, seed, overrides = check_options(args)
    try:
        batch_size = int(args.batch_size)
    except ValueError:
        raise UserError(f"--batch-size must be a whole number, got {args.batch_size!r}") from None
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    results, where = evaluate_run(args.run_dir, metrics=names, preset=args.preset, seed=seed, overrides=overrides,
                                  device=args.device, batch_size=batch_size, progress=not args.no_progress,
                                  dry_run=args.dry_run, say=_say)
    if args.dry_run:
        return 0
    emit(results, args.json)
    if not args.json:
        if "factor_vae" in results:
            print("factor_vae active dims: latents whose std over the data is at least the metric's prune threshold "
                  "(not summary.json's active_dims_kl: mean KL > 0.1 nats)")
        print(f"written {where}" if where else "not written: not a run directory")
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
