"""`factorvae udr RUN_OR_CODES...`: Unsupervised Disentanglement Ranking of a set of models
(Duan et al. 2020; docs/metrics.md, "UDR").

Inputs: run directories / export folders / pretrained names (each encodes the same random
grid points; Gaussian encoders give their log-variances for the KL filter), or one .npz with
``factors``, ``sizes``, ``codes_0..codes_{M-1}`` (optional ``logvars_i``, ``model_names``),
or several codes .npz files of the same grid (``factors``, ``codes``, ``sizes``; optional
``logvars``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from factorvae.commands.encode import parse_number
from factorvae.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("udr", help="rank models without labels: Unsupervised Disentanglement Ranking",
                       description="UDR (Duan et al. 2020): how much each model's representation agrees with the "
                                   "others', lasso and Spearman variants as in disentanglement_lib. Give two or more "
                                   "runs, one .npz with codes_0..codes_{M-1}, or several codes .npz files of one grid.")
    p.add_argument("sources", nargs="+", metavar="RUN_OR_CODES")
    p.add_argument("--correlation", default="both", help="lasso, spearman or both (default)")
    p.add_argument("--points", default="1000", help="grid points every model encodes (default 1000, dlib's)")
    p.add_argument("--seed", default="0", help="seed of the points (default 0)")
    p.add_argument("--kl-threshold", default="0.01", help="drop latents with mean KL <= this (default 0.01)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto (runs only)")
    p.add_argument("--json", action="store_true", help="print the full JSON result")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.set_defaults(func=run)


def _from_files(paths: list[str]):
    """Models from one multi-model .npz or several single-model codes files."""
    import numpy as np

    from factorvae.metrics.codes import Codes
    from factorvae.metrics.udr import load_udr_npz

    if len(paths) == 1:
        return load_udr_npz(paths[0])
    models, logvars = [], []
    for p in paths:
        try:
            with np.load(p, allow_pickle=False) as d:
                data = {k: d[k] for k in d.files}
        except (OSError, ValueError) as e:
            raise UserError(f"{p}: cannot read as .npz ({e})") from None
        missing = [k for k in ("factors", "codes", "sizes") if k not in data]
        if missing:
            raise UserError(f"{p}: missing array(s) {', '.join(missing)}")
        models.append(Codes.from_arrays(data["factors"], data["codes"], data["sizes"], data.get("names"), p))
        logvars.append(Codes.from_arrays(data["factors"], data["logvars"], data["sizes"], data.get("names"), p)
                       if "logvars" in data else None)
    return models, logvars, [Path(p).stem for p in paths]


def _from_runs(sources: list[str], device: str, points: int, seed: int):
    """(means, log-variances, names) of the same random grid points, encoded by each run."""
    import numpy as np

    from factorvae.metrics.udr import encode_for_udr
    from factorvae.runs import load_run

    reps, lvs, names, grid, data_name = [], [], [], None, None
    flat = None
    for s in sources:
        r = load_run(s, device=device)
        g = getattr(r.dataset, "grid", None)
        if g is None:
            raise UserError(f"{s}: data set {r.config['data']['name']} has no ground-truth grid to draw points from")
        if grid is None:
            grid, data_name = g, r.config["data"]["name"]
            flat = g.index(g.sample(points, np.random.default_rng(seed)))
        elif g.sizes != grid.sizes or r.config["data"]["name"] != data_name:
            raise UserError(f"{s}: trained on {r.config['data']['name']}, but {sources[0]} on {data_name}; "
                            "UDR compares models of one data set")
        mu, lv = encode_for_udr(r.model, r.dataset, flat)
        reps.append(mu), lvs.append(lv), names.append(str(s))
    return reps, lvs, names


def run(args) -> int:
    import numpy as np

    from factorvae.io import atomic_write_json
    from factorvae.metrics.udr import CORRELATIONS, kl_per_dim, udr, udr_scores

    corr = list(CORRELATIONS) if args.correlation == "both" else [args.correlation]
    if any(c not in CORRELATIONS for c in corr):
        raise UserError(f"--correlation must be lasso, spearman or both, got {args.correlation!r}")
    points = parse_number(args.points, "--points", int, 2)
    seed = parse_number(args.seed, "--seed", int, 0)
    threshold = parse_number(args.kl_threshold, "--kl-threshold", float, 0.0)
    files = [s.endswith(".npz") for s in args.sources]
    if any(files) and not all(files):
        raise UserError("give either runs or .npz codes files, not both")
    result: dict = {}
    if all(files):
        models, logvars, names = _from_files(args.sources)
        if len(models) < 2:
            raise UserError(f"UDR needs at least two models; {args.sources[0]} holds {len(models)}")
        for c in corr:
            result[f"udr_{c}"] = udr(models, np.random.default_rng(seed), logvars, c, points,
                                     kl_filter_threshold=threshold)
    else:
        if len(args.sources) < 2:
            raise UserError("UDR needs at least two runs")
        reps, lvs, names = _from_runs(args.sources, args.device, points, seed)
        kls = [kl_per_dim(r, lv) for r, lv in zip(reps, lvs)]
        for c in corr:
            result[f"udr_{c}"] = udr_scores(reps, kls, c, kl_filter_threshold=threshold)
    result["models"] = names
    result["settings"] = {"points": points, "seed": seed, "kl_filter_threshold": threshold}
    if args.out:
        atomic_write_json(Path(args.out), result)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    width = max(len(n) for n in names)
    print(f"{'model':<{width}}  " + "  ".join(f"{c:>8}" for c in corr))
    for m, n in enumerate(names):
        print(f"{n:<{width}}  " + "  ".join(f"{result[f'udr_{c}']['model_scores'][m]:8.3f}" for c in corr))
    print(f"UDR (Duan et al. 2020): median agreement with the other {len(names) - 1} models; "
          f"{points} points, seed {seed}", file=sys.stderr)
    return 0
