"""`factorvae report DIR`: figures and tables of a sweep (paper Figs. 4, 5, 7, metric
correlation, traversals) as one self-contained HTML page plus Markdown."""

from __future__ import annotations

from factorvae.errors import UserError

# The library is imported inside the functions: `factorvae --help` registers every command's
# parser and should not import torch for that.


def register(sub) -> None:
    p = sub.add_parser("report", help="draw a sweep's figures and tables (HTML + Markdown)",
                       description="Read a sweep directory (factorvae sweep ... --out DIR) and write DIR/report/"
                                   "report.html (self-contained, images embedded), report.md and img/*.png.")
    p.add_argument("dir", help="sweep directory")
    p.add_argument("--out", help="report directory (default DIR/report): new, empty, or an earlier report's "
                                 "(the report refuses a directory holding files it did not write)")
    p.add_argument("--metric", help="metric column for the comparison and Fig. 4 (default factor_vae.eval_accuracy)")
    p.add_argument("--tolerance", type=float, default=0.1,
                   help="β-VAE settings count as reconstructing 'similarly' when their recon error is at most "
                        "this fraction above FactorVAE's (default 0.1)")
    p.set_defaults(func=run)


def run(args) -> int:
    from factorvae.report import build_report

    if not 0 <= args.tolerance < 10:
        raise UserError(f"--tolerance must be in [0, 10), got {args.tolerance}")
    rep = build_report(args.dir, args.out, metric=args.metric, tolerance=args.tolerance)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(rep["counts"].items()))
    print(f"report: {rep['html']}\n        {rep['markdown']} ({len(rep['images'])} image(s); trials: {counts})")
    if rep["verdict"]:
        print(f"  {rep['verdict']}")
    corr = rep.get("correlation") or {}
    if corr.get("pearson"):
        print("  FactorVAE vs Higgins metric over {n} trials: ".format(n=corr["n"]) + ", ".join(
            f"{k} {corr[k][0]:.3f} (p={corr[k][1]:.2g})" for k in ("pearson", "kendall", "spearman")))
    return 0
