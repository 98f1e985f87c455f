"""Sweeps: a spec expanded into trials (``spec``), each trial a run directory plus the sweep's
files (``trialdir``), run (``trial``) by ``engine`` on a backend (``backends``: this process, a local process
pool, Ray or Slurm), gathered into one table (``table``). See docs/architecture.md."""

from factorvae.sweep.backends import BACKENDS, Backend, SlurmOptions, get_backend
from factorvae.sweep.engine import SweepOutcome, check_sweep_dir, run_sweep
from factorvae.sweep.spec import EVAL_DEFAULTS, Sweep, Trial, experiment_config, load_spec, resolve_eval, stable_hash
from factorvae.sweep.table import aggregate, flatten, read_table, trial_row, write_table
from factorvae.sweep.trial import evaluate_trial, run_trial
from factorvae.sweep.trialdir import TrialState, inspect_trial, quarantine

__all__ = ["BACKENDS", "Backend", "EVAL_DEFAULTS", "SlurmOptions", "Sweep", "SweepOutcome", "Trial", "TrialState", "aggregate", "check_sweep_dir", "evaluate_trial",
           "experiment_config", "flatten", "inspect_trial", "load_spec", "quarantine", "read_table",
           "get_backend", "resolve_eval", "run_sweep", "run_trial", "stable_hash", "trial_row", "write_table"]
