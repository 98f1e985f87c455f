"""`factorvae traverse RUN_DIR`: latent traversals from a run's last checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

from factorvae.errors import UserError

#: bounds that keep a traversal to seconds: each reference is one PNG sheet (and a GIF column)
MAX_REFS = 100
MAX_STEPS = 100

# The library is imported inside the functions: `factorvae --help` registers every command's
# parser and should not import torch for that.


def register(sub) -> None:
    p = sub.add_parser("traverse", help="render latent traversals from a checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--out", help="output folder (default RUN_DIR/images)")
    p.add_argument("--limit", type=float, default=2.0, help="traverse each latent from -LIMIT to LIMIT (default 2)")
    p.add_argument("--steps", type=int, default=10, help=f"values per latent (default 10, at most {MAX_STEPS})")
    p.add_argument("--references", type=int, default=3, help=f"number of reference images, one sheet each (default 3, at most {MAX_REFS})")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from factorvae.runs import load_run, lock_for_output
    from factorvae.viz.traversals import check_images_out, write_run_images

    if not (0 < args.limit < math.inf) or not (2 <= args.steps <= MAX_STEPS) or not (1 <= args.references <= MAX_REFS):
        raise UserError(f"--limit must be a finite number > 0, --steps 2..{MAX_STEPS} and --references 1..{MAX_REFS} "
                        f"(one image sheet per reference), got {args.limit}, {args.steps}, {args.references}")
    out = check_images_out(args.out if args.out is not None else Path(args.run_dir) / "images")
    r = load_run(args.run_dir, device=args.device)
    with lock_for_output(out):  # a run being trained is not written into
        written = write_run_images(r.model, r.dataset, out, limit=args.limit, steps=args.steps, references=args.references)
    for k, v in written.items():
        print(f"{k}: {v if isinstance(v, str) else ', '.join(v)}")
    return 0
