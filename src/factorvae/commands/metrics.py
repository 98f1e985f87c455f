"""`factorvae metrics CODES.npz`: score any representation given as arrays.

The .npz holds ``factors`` (N, K) integer classes, ``codes`` (N, D) floats and ``sizes``
(K,); optionally ``names`` (K,) strings. Either every grid point once, rows in any order
(all metrics; the parity fixtures in tests/fixtures/parity/), or a random sample of grid
points of any size (MIG, DCI, SAP, modularity/explicitness; ``factorvae encode`` writes one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from factorvae.errors import UserError


def add_metric_options(p) -> None:
    """Options shared by `metrics` and `eval`."""
    p.add_argument("--metrics", default=None,
                   help="comma-separated metric names (`factorvae metrics --list` shows them), or all "
                        "(default: the default set)")
    p.add_argument("--preset", default="dlib",
                   help="dlib (default: disentanglement_lib's study settings), paper, or fast")
    p.add_argument("--seed", default="0", help="random seed of the metrics (default 0)")
    p.add_argument("--json", action="store_true", help="print the full JSON result instead of a table")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METRIC.PARAM=VALUE",
                   help="override a preset value, e.g. --set factor_vae.num_train=800 (repeatable)")


def register(sub) -> None:
    p = sub.add_parser("metrics", help="score a representation given as an .npz (factors, codes, sizes)",
                       description="Score a representation: FactorVAE metric, Higgins (beta-VAE) metric, MIG, DCI, "
                                   "SAP, modularity/explicitness. The .npz holds codes of every grid point (all "
                                   "metrics) or of a random sample of grid points (MIG, DCI, SAP, modularity; "
                                   "`factorvae encode RUN --out codes.npz` writes one). See docs/metrics.md.")
    p.add_argument("grid", metavar="CODES.npz", nargs="?", help=".npz with factors (N,K), codes (N,D), sizes (K)")
    p.add_argument("--list", action="store_true", help="list the metrics: keys, headline, cost per preset; score nothing")
    add_metric_options(p)
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--dry-run", action="store_true", help="say what would be scored and how long it takes; score nothing")
    p.set_defaults(func=run)


def check_options(args) -> tuple[list[str], int, dict]:
    from factorvae.metrics.suite import parse_metrics, parse_settings, preset_params

    names = parse_metrics(args.metrics)
    preset_params(args.preset)
    overrides = parse_settings(args.sets)
    try:
        seed = int(args.seed)
    except ValueError:
        raise UserError(f"--seed must be a whole number, got {args.seed!r}") from None
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    return names, seed, overrides


def emit(results: dict, as_json: bool, out: str | None = None) -> None:
    from factorvae.metrics.suite import format_table

    if out:
        from factorvae.io import atomic_write_json

        atomic_write_json(Path(out), results)
    if as_json:
        print(json.dumps(results, indent=1))
    else:
        print(format_table(results))


def list_metrics() -> str:
    """One block per registered metric (its record): name, label, keys, headline, whether it
    fixes a factor, and per preset the grid points it draws on dSprites and its measured seconds."""
    from factorvae.data import require_grid
    from factorvae.metrics.record import PRESET_NAMES
    from factorvae.metrics.registry import RECORDS

    num_grid = len(require_grid("dsprites"))
    lines = []
    for name, r in RECORDS.items():
        flags = ", ".join(f for f, on in (("default", r.default), ("fixes a factor", r.fixes_factor)) if on)
        lines.append(f"{name}: {r.label}" + (f" ({flags})" if flags else ""))
        lines.append(f"  keys: {', '.join(r.keys)}; headline: {r.headline}")
        cost = []
        for p in PRESET_NAMES:
            secs = r.seconds.get(p)
            cost.append(f"{p} {r.draws(r.presets[p], num_grid):,} points, "
                        + (f"{secs:g} s" if secs is not None else "time not measured"))
        lines.append("  cost on dSprites (one CPU core, codes cached): " + "; ".join(cost))
    return "\n".join(lines)


def run(args) -> int:
    from factorvae.io import check_not_input, check_out_file, check_writable
    from factorvae.metrics.api import is_result_file
    from factorvae.metrics.api import load_codes
    from factorvae.metrics.plan import describe, format_plan
    from factorvae.metrics.suite import evaluate, sample_warnings

    if args.list:
        print(list_metrics())
        return 0
    if args.grid is None:
        raise UserError("give CODES.npz (or --list)")
    names, seed, overrides = check_options(args)
    metrics = args.metrics if args.metrics in (None, "all") else names  # a sample's default: the metrics it serves
    if args.out:
        check_not_input(args.out, [args.grid])
        check_out_file(args.out, is_result_file, "a result of factorvae metrics")
        check_writable(args.out)  # a wrong --out is said before the scoring, not after
    codes = load_codes(args.grid)
    kind = f"a sample of {codes.num_points:,} grid points" if codes.is_sample else "every grid point"
    print(f"{args.grid}: codes of {kind}; " + format_plan(describe(args.preset, metrics, codes=codes,
                                                                   overrides=overrides)), file=sys.stderr)
    if args.dry_run:
        return 0
    results = evaluate(codes, metrics=metrics, preset=args.preset, seed=seed, overrides=overrides)
    results["settings"]["input"] = str(args.grid)
    for line in sample_warnings(results):
        print(f"note: {line}", file=sys.stderr)
    emit(results, args.json, args.out)
    return 0
