"""What a GPU window brings back from a sweep (issue 25): small files only, into the folder that
comes back, plus the export (encoder and decoder as safetensors, ~2 MB) of each method's best seed.

    python3 benchmarks/collect_results.py SWEEP_DIR OUT [--metric factor_vae.eval_accuracy]

Writes OUT/results.csv, OUT/report/ (Markdown and figures, if `factorvae report` ran), per trial
OUT/trials/ID/{metrics.jsonl, summary.json, eval.json, analysis.json, trial.json} (the Fig. 5 and
Fig. 7 curves are in metrics.jsonl), OUT/best/METHOD/ (`factorvae export` of the trial with the
highest --metric) and prints one line per setting: seeds, mean ± std of the metric, reconstruction.
Checkpoints (~65 MB each) stay behind.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
from pathlib import Path

from factorvae.export import export_run

SMALL = ("metrics.jsonl", "summary.json", "eval.json", "analysis.json", "trial.json")


def _float(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep")
    ap.add_argument("out")
    ap.add_argument("--metric", default="factor_vae.eval_accuracy")
    args = ap.parse_args()
    sweep, out = Path(args.sweep), Path(args.out)
    table = sweep / "results.csv"
    if not table.is_file():
        print(f"collect: no {table}; did the sweep run?", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(table, out / "results.csv")
    if (sweep / "report").is_dir():
        shutil.copytree(sweep / "report", out / "report", dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if n.endswith((".pt", ".parquet"))])
    rows = list(csv.DictReader(table.open()))
    for r in rows:
        src = sweep / r["dir"]
        (out / "trials" / r["trial_id"]).mkdir(parents=True, exist_ok=True)
        for name in SMALL:
            if (src / name).is_file():
                shutil.copy2(src / name, out / "trials" / r["trial_id"] / name)
    print(f"{'setting':<24} {'seeds':>5} {args.metric:>28} {'recon':>8} {'steps':>7}")
    for setting in sorted({r["setting"] for r in rows}):
        rs = [r for r in rows if r["setting"] == setting and _float(r.get(args.metric)) is not None]
        vals = [_float(r[args.metric]) for r in rs]
        if not vals:
            continue
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        recon = statistics.mean(_float(r["recon"]) for r in rs if _float(r["recon"]) is not None)
        print(f"{setting:<24} {len(vals):>5} {statistics.mean(vals):>20.3f} ± {sd:.3f} {recon:8.1f} {rs[0]['steps']:>7}")
    for method in sorted({r["method"] for r in rows}):
        rs = [r for r in rows if r["method"] == method and _float(r.get(args.metric)) is not None]
        if rs:
            best = max(rs, key=lambda r: _float(r[args.metric]))
            export_run(sweep / best["dir"], out / "best" / method)
            print(f"best {method}: {best['trial_id']} ({args.metric} {_float(best[args.metric]):.3f}) -> {out / 'best' / method}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
