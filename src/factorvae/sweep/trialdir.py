"""A trial directory: one run directory (factorvae.runs.RunDir) plus the sweep's own files::

    trial.json     the trial (factorvae.sweep.spec.Trial) and its attempts
    analysis.json  reconstruction error, true TC, log p(x) (atomic; written last)
    error.txt      traceback of the last failure (removed on success)

Status of a trial directory (``inspect_trial``):

    pending      nothing there yet
    interrupted  started (config, maybe a checkpoint) but not finished -> resumed from checkpoint
    failed       error.txt present -> retried (resumed if it has a valid checkpoint)
    trained      training finished, evaluation missing or made with other eval settings -> evaluated
    finished     summary.json, eval.json and analysis.json present and matching -> skipped
    corrupt      unreadable trial.json/config.yaml or a truncated checkpoint; unfinished ones are
                 moved to DIR/quarantine/ and restarted, ones holding results are left alone
    mismatch     config.yaml differs from the trial's config (edited by hand): never touched
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from factorvae.io import atomic_write_json, atomic_write_text, read_json
from factorvae.runs import RunDir
from factorvae.sweep.spec import Trial, experiment_config


@dataclass
class TrialState:
    """What a trial directory holds (module docstring), and the trial it belongs to."""

    status: str
    detail: str = ""
    step: int | None = None
    checkpoint_ok: bool = False
    has_results: bool = False
    trial: Trial | None = None
    extra: dict = field(default_factory=dict)


def inspect_trial(d: str | Path, trial: Trial | None = None) -> TrialState:
    """What state trial directory ``d`` is in (module docstring). ``trial`` is the expected trial
    (from the spec); without it the directory's own trial.json is used."""
    d = Path(d)
    if not d.is_dir() or not any(d.iterdir()):
        return TrialState("pending", trial=trial)
    run = RunDir(d)
    tj = d / "trial.json"
    own = read_json(tj) if tj.exists() else None
    if tj.exists() and not isinstance(own, dict):
        return TrialState("corrupt", "trial.json unreadable", has_results=_has_results(run), trial=trial)
    if trial is None and own is not None:
        try:
            trial = Trial.from_dict(own)
        except TypeError:
            return TrialState("corrupt", "trial.json unreadable", has_results=_has_results(run))
    step = run.last_step()
    has_results = _has_results(run)
    cfg = None
    if run.config_path.exists():
        try:
            cfg = run.read_config()
        except Exception as e:  # noqa: BLE001 - any unreadable config is "corrupt"
            cause = e.__cause__ or e.__context__ or e
            return TrialState("corrupt", f"config.yaml unreadable ({type(cause).__name__})", step,
                              has_results=has_results, trial=trial)
    if trial is None:
        return TrialState("corrupt", "no trial.json and no usable config", step, has_results=has_results)
    if cfg is not None and experiment_config(cfg) != experiment_config(trial.config):
        return TrialState("mismatch", "config.yaml differs from the trial's config (edited?)", step,
                          has_results=has_results, trial=trial)
    ckpt_ok = run.ckpt_path.exists() and run.checkpoint_readable()
    summary = run.read_summary()
    trained = summary is not None and summary.get("steps") == trial.config["train"]["steps"]
    if trained and not ckpt_ok:
        return TrialState("corrupt", "trained, but the checkpoint is missing or truncated", step,
                          has_results=has_results, trial=trial)
    if trained:
        analysis = read_json(d / "analysis.json")
        if run.read_eval() is not None and isinstance(analysis, dict) and analysis.get("eval_hash") == trial.eval_hash:
            return TrialState("finished", "", step, True, True, trial)
        why = "not evaluated yet" if not isinstance(analysis, dict) else "evaluated with other eval settings"
        if (d / "error.txt").exists():
            return TrialState("failed", _error_line(d), step, True, has_results, trial, {"trained": True})
        return TrialState("trained", why, step, True, has_results, trial)
    if run.ckpt_path.exists() and not ckpt_ok:
        return TrialState("corrupt", "truncated or unreadable checkpoint", step, has_results=has_results, trial=trial)
    if (d / "error.txt").exists():
        return TrialState("failed", _error_line(d), step, ckpt_ok, has_results, trial)
    if ckpt_ok or cfg is not None:
        return TrialState("interrupted", "checkpoint" if ckpt_ok else "no checkpoint yet", step, ckpt_ok,
                          has_results, trial)
    return TrialState("pending", "", step, trial=trial)


def _has_results(run: RunDir) -> bool:
    return run.eval_path.exists() and run.summary_path.exists()


def _error_line(d: Path) -> str:
    try:
        lines = [ln for ln in (d / "error.txt").read_text().splitlines() if ln.strip()]
    except OSError:
        return "error.txt unreadable"
    return lines[-1][:300] if lines else "failed"


def write_error(d: Path, trial_id: str, message: str) -> None:
    """``error.txt``: what failed and when (best effort: an unwritable directory is no second failure)."""
    text = f"trial {trial_id} failed at {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n{message}"
    try:
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "error.txt", text)
    except OSError:
        pass


def quarantine(d: Path, reason: str) -> Path:
    """Move an unusable, unfinished trial directory aside (nothing is deleted)."""
    qdir = d.parent.parent / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    dest = qdir / f"{d.name}.{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while dest.exists():
        dest = qdir / f"{d.name}.{time.strftime('%Y%m%d-%H%M%S')}.{n}"
        n += 1
    shutil.move(str(d), str(dest))
    (dest / "QUARANTINED.txt").write_text(reason + "\n")
    return dest


def write_trial_json(d: Path, trial: Trial, attempt: dict | None = None) -> None:
    """``trial.json``: the trial plus its attempts (``attempt`` replaces the one of the same id)."""
    old = read_json(d / "trial.json")
    attempts = old.get("attempts", []) if isinstance(old, dict) else []
    if attempt is not None:
        attempts = [a for a in attempts if a.get("id") != attempt.get("id")] + [attempt]
    atomic_write_json(d / "trial.json", {**trial.to_dict(), "attempts": attempts})
