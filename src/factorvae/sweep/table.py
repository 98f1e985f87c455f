"""The results table: one row per trial directory (config, grid point, final losses, metric
scores, analyses), written to ``results.csv`` and ``results.parquet``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from factorvae.io import atomic_write, atomic_write_text, read_json
from factorvae.runs import RunDir
from factorvae.sweep.spec import Sweep, Trial
from factorvae.sweep.trialdir import inspect_trial
from factorvae.sweep.udr import add_udr_columns

def flatten(tree, prefix: str = "") -> dict:
    """Nested dict -> {"a.b.c": scalar}; lists of scalars become JSON strings, other lists drop."""
    out: dict = {}
    if not isinstance(tree, dict):
        return out
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            if len(v) <= 32 and all(isinstance(x, (int, float, str, bool)) or x is None for x in v):
                out[key] = json.dumps(list(v))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


LEAD_COLUMNS = ["trial_id", "status", "detail", "setting", "method", "dataset", "seed", "params", "step", "steps",
                "seconds", "train_seconds", "metrics_seconds", "analysis_seconds", "recon", "dir"]


def trial_row(d: Path, trial: Trial | None = None) -> dict:
    """One row of the table for trial directory ``d``: never raises (a broken directory gives a
    row with status corrupt and the reason)."""
    row: dict = {"trial_id": d.name, "dir": f"trials/{d.name}"}
    try:
        st = inspect_trial(d, trial)
    except Exception as e:  # noqa: BLE001
        return {**row, "status": "corrupt", "detail": f"{type(e).__name__}: {e}"[:300]}
    t = st.trial.to_dict() if st.trial is not None else {}
    row.update({"status": st.status, "detail": st.detail, "setting": t.get("setting"), "method": t.get("method"),
                "method_label": t.get("label") or t.get("method"),
                "dataset": t.get("dataset"), "seed": t.get("seed"), "step": st.step,
                "steps": (t.get("config") or {}).get("train", {}).get("steps")})
    own = read_json(d / "trial.json")
    if isinstance(own, dict):
        row["seconds"] = round(sum(a.get("seconds", 0) or 0 for a in own.get("attempts", [])), 1)
        trained = [a["train_seconds"] for a in own.get("attempts", []) if isinstance(a.get("train_seconds"), (int, float))]
        if trained:
            row["train_seconds"] = round(sum(trained), 1)
    row.update(flatten(t.get("config") or {}))
    for k, v in (t.get("params") or {}).items():
        row[k] = v if not isinstance(v, (list, dict)) else json.dumps(v)
    row["params"] = json.dumps(t.get("params") or {}, sort_keys=True)
    run = RunDir(d)
    summary = run.read_summary()
    if summary is not None:
        row.update(flatten(summary.get("final") or {}, "final."))
        dims = summary.get("active_dims_kl", summary.get("active_dims"))  # the older runs' name
        if dims is not None:
            row["active_dims"] = len(dims)
    ev = run.read_eval()
    if ev is not None and st.status in ("finished", "trained", "failed", "mismatch"):
        row.update(flatten({k: v for k, v in ev.items() if k not in ("settings", "seconds", "encoder", "run")}))
        if isinstance(ev.get("seconds"), dict) and ev["seconds"].get("total") is not None:
            row["eval_seconds"] = ev["seconds"]["total"]
    an = read_json(d / "analysis.json")
    if isinstance(an, dict):
        row.update(flatten({k: v for k, v in an.items() if k not in ("eval", "eval_hash", "seconds")}, "analysis."))
        row.update(phase_seconds(an.get("seconds")))
    row["recon"] = row.get("analysis.recon", row.get("final.recon"))
    return row


def phase_seconds(seconds) -> dict:
    """``metrics_seconds`` and ``analysis_seconds`` (plus one ``analysis_seconds.<name>`` per
    analysis) from analysis.json's ``seconds``: each phase of a trial in its own column."""
    if not isinstance(seconds, dict):
        return {}
    out = {f"{k}_seconds": v for k, v in seconds.items() if k in ("metrics", "analysis") and isinstance(v, (int, float))}
    for k, v in (seconds.get("analyses") or {}).items():
        if isinstance(v, (int, float)):
            out[f"analysis_seconds.{k}"] = v
    return out


def aggregate(out: str | Path, sweep: Sweep | None = None, write: bool = True, udr: bool = False) -> list[dict]:
    """One row per trial directory under ``out/trials`` (and per spec trial not started yet);
    written to ``out/results.csv`` and ``out/results.parquet``. ``udr``: also the finished
    trials' ``udr_lasso`` (within their setting) and ``udr_lasso_sweep`` (across the sweep;
    ``sweep.udr``): each finished model encodes 1,000 grid points."""
    out = Path(out)
    tdir = out / "trials"
    expected = {t.id: t for t in sweep.trials} if sweep else {}
    rows = []
    dirs = sorted(p for p in tdir.iterdir() if p.is_dir()) if tdir.is_dir() else []
    for d in dirs:
        rows.append(trial_row(d, expected.get(d.name)))
    seen = {d.name for d in dirs}
    for tid, t in expected.items():
        if tid not in seen:
            rows.append(trial_row(tdir / tid, t))
    qdir = out / "quarantine"
    if qdir.is_dir():
        for d in sorted(p for p in qdir.iterdir() if p.is_dir()):
            reason = (d / "QUARANTINED.txt").read_text().strip() if (d / "QUARANTINED.txt").exists() else ""
            rows.append({"trial_id": d.name, "status": "quarantined", "detail": reason, "dir": f"quarantine/{d.name}"})
    if udr:
        add_udr_columns(out, rows)
    if write:
        write_table(rows, out / "results.csv", out / "results.parquet")
    return rows


def _columns(rows: list[dict]) -> list[str]:
    cols = [c for c in LEAD_COLUMNS if any(c in r for r in rows)]
    rest = sorted({k for r in rows for k in r} - set(cols))
    # grid and config first, then metrics, then the rest
    config = [c for c in rest if c.split(".")[0] in ("model", "train", "data", "optim")]
    other = [c for c in rest if c not in config]
    return cols + config + other


def write_table(rows: list[dict], csv_path: Path, parquet_path: Path | None = None) -> None:
    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write_text(csv_path, buf.getvalue())
    if parquet_path is None:
        return
    try:  # optional dependency: pip install 'factorvae[ray]'
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    arrays = {}
    for c in cols:
        vals = [r.get(c) for r in rows]
        present = [v for v in vals if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            arrays[c] = pa.array(vals, type=pa.bool_())
        elif present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            arrays[c] = pa.array(vals, type=pa.int64())
        elif present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            arrays[c] = pa.array([None if v is None else float(v) for v in vals], type=pa.float64())
        else:
            arrays[c] = pa.array([None if v is None else str(v) for v in vals], type=pa.string())
    table = pa.table(arrays)
    atomic_write(parquet_path, lambda f: pq.write_table(table, f))


def read_table(path: str | Path) -> list[dict]:
    """Rows of results.parquet (typed) or results.csv (strings)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # optional dependency

        return pq.read_table(path).to_pylist()
    with open(path, newline="") as f:
        return list(csv.DictReader(f))

