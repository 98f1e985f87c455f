"""`factorvae metrics GRID.npz`: score any representation given as arrays.

The .npz holds ``factors`` (N, K) integer classes covering a complete factor grid (rows in
any order), ``codes`` (N, D) floats and ``sizes`` (K,); optionally ``names`` (K,) strings.
This is the format of the parity fixtures (tests/fixtures/parity/).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from factorvae.errors import UserError


def add_metric_options(p) -> None:
    """Options shared by `metrics` and `eval`."""
    p.add_argument("--metrics", default="all",
                   help="comma-separated subset of factor_vae, beta_vae, mig, dci, sap, modularity_explicitness "
                        "(default: all)")
    p.add_argument("--preset", default="dlib",
                   help="dlib (default: disentanglement_lib's study settings), paper, or fast")
    p.add_argument("--seed", default="0", help="random seed of the metrics (default 0)")
    p.add_argument("--json", action="store_true", help="print the full JSON result instead of a table")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METRIC.PARAM=VALUE",
                   help="override a preset value, e.g. --set factor_vae.num_train=800 (repeatable)")


def register(sub) -> None:
    p = sub.add_parser("metrics", help="score a representation given as an .npz (factors, codes, sizes)",
                       description="Score a representation: FactorVAE metric, Higgins (beta-VAE) metric, MIG, DCI, "
                                   "SAP, modularity/explicitness.")
    p.add_argument("grid", metavar="GRID.npz", help=".npz with factors (N,K), codes (N,D), sizes (K)")
    add_metric_options(p)
    p.add_argument("--out", help="also write the JSON result to this file")
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


def load_npz(path: str | Path):
    import numpy as np

    from factorvae.metrics.codes import Codes

    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    if not hasattr(npz, "files"):
        raise UserError(f"{path}: a single array, not an .npz with factors, codes and sizes")
    with npz:
        missing = [k for k in ("factors", "codes", "sizes") if k not in npz.files]
        if missing:
            raise UserError(f"{path}: missing key(s) {', '.join(missing)} (found {', '.join(npz.files) or 'none'}); "
                            "expected factors (N,K), codes (N,D), sizes (K)")
        try:
            arrays = {k: npz[k] for k in ("factors", "codes", "sizes")}
            names = npz["names"] if "names" in npz.files else None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise UserError(f"{path}: cannot read its arrays ({type(e).__name__}: {e})") from None
    return Codes.from_arrays(arrays["factors"], arrays["codes"], arrays["sizes"], names=names, source=str(path))


def emit(results: dict, as_json: bool, out: str | None = None) -> None:
    from factorvae.metrics.suite import format_table

    if out:
        from factorvae.runs import atomic_write_json

        atomic_write_json(Path(out), results)
    if as_json:
        print(json.dumps(results, indent=1))
    else:
        print(format_table(results))


def run(args) -> int:
    from factorvae.metrics.suite import evaluate

    names, seed, overrides = check_options(args)
    codes = load_npz(args.grid)
    results = evaluate(codes, metrics=names, preset=args.preset, seed=seed, overrides=overrides)
    results["settings"]["input"] = str(args.grid)
    emit(results, args.json, args.out)
    return 0
