"""`factorvae eval RUN_DIR`: score a trained run's representation and write RUN_DIR/eval.json.

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
    p.add_argument("run_dir", metavar="RUN_DIR")
    add_metric_options(p)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--batch-size", default="256", help="images per encoder call (default 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from factorvae.data import require_grid
    from factorvae.io import check_writable
    from factorvae.metrics.suite import evaluate_model
    from factorvae.runs import RunDir, load_run

    names, seed, overrides = check_options(args)
    try:
        batch_size = int(args.batch_size)
    except ValueError:
        raise UserError(f"--batch-size must be a whole number, got {args.batch_size!r}") from None
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    rd = RunDir(args.run_dir)
    rd.read_config()  # not a run: say so before taking its lock
    with rd.lock():  # a run being trained (or scored) is not scored now
        check_writable(rd.eval_path)  # before minutes of scoring, not after
        r = load_run(args.run_dir, device=args.device, progress=not args.no_progress)
        require_grid(r.dataset)
        if not args.no_progress:
            print(f"scoring {r.dir} (step {r.step}) with preset {args.preset} ...", file=sys.stderr, flush=True)
        results = evaluate_model(r.model, r.dataset, preset=args.preset, seed=seed, metrics=names,
                                 batch_size=batch_size, progress=not args.no_progress, overrides=overrides)
        results = rd.write_eval(results, r.config, r.step)
    emit(results, args.json)
    if not args.json:
        print(f"written {r.dir / 'eval.json'}")
    return 0
