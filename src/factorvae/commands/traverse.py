"""`factorvae traverse RUN_DIR`: latent traversals from a run's last checkpoint."""

from __future__ import annotations

from pathlib import Path

from factorvae.errors import UserError

# The library is imported inside the functions: `factorvae --help` registers every command's
# parser and should not import torch for that.


def register(sub) -> None:
    p = sub.add_parser("traverse", help="render latent traversals from a checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--out", help="output folder (default RUN_DIR/images)")
    p.add_argument("--limit", type=float, default=2.0, help="traverse each latent from -LIMIT to LIMIT (default 2)")
    p.add_argument("--steps", type=int, default=10, help="values per latent (default 10)")
    p.add_argument("--references", type=int, default=3, help="number of reference images (default 3)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from factorvae.runs import load_run
    from factorvae.viz.traversals import write_run_images

    if not (args.limit > 0) or args.steps < 2 or args.references < 1:
        raise UserError("--limit must be > 0, --steps >= 2 and --references >= 1")
    r = load_run(args.run_dir, device=args.device)
    out = Path(args.out) if args.out else r.dir / "images"
    written = write_run_images(r.model, r.dataset, out, limit=args.limit, steps=args.steps, references=args.references)
    for k, v in written.items():
        print(f"{k}: {v if isinstance(v, str) else ', '.join(v)}")
    return 0
