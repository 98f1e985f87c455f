"""Sweeps: a YAML spec (methods x hyper-parameter grids x seeds x data sets, plus training and
evaluation settings) expanded into trials, run locally or on a Ray cluster, gathered into one
table. See docs/reproduce.md for the spec format and configs/sweeps/ for the paper's sweeps.

Layout of a sweep directory ``DIR``::

    DIR/sweep.json            the spec as given and the trial list of the last invocation
    DIR/trials/<id>/          one normal run directory per trial (config.yaml, metrics.jsonl,
                              checkpoints/, images/, tb/, summary.json) plus
                              trial.json    the trial: setting, grid point, seed, hashes, attempts
                              eval.json     metric scores (factorvae.metrics.suite), atomic
                              analysis.json reconstruction error, true TC, log p(x) (atomic; last)
                              error.txt     traceback of the last failure (removed on success)
    DIR/quarantine/           unfinished trial directories that were unreadable, moved aside
    DIR/results.csv, DIR/results.parquet   one row per trial

A trial's id is readable and stable: ``<method>-<grid point>-seed<s>-<hash>`` where the hash is
over the resolved config (without machine-only keys: device, threads, cache_dir), so editing the
spec gives new trials and never silently reuses old results.

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

import copy
import hashlib
import json
import math
import os
import re
import shutil
import time
import traceback
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from factorvae.errors import UserError

SPEC_KEYS = {"name", "description", "config", "base", "methods", "seeds", "datasets", "eval"}
METHOD_KEYS = {"name", "label", "config", "set", "grid"}
METRIC_NAMES = ("factor_vae", "beta_vae", "mig", "dci", "sap", "modularity_explicitness")
PRESETS = ("dlib", "paper", "fast")
EVAL_DEFAULTS: dict = {
    # metric suite (factorvae.metrics.suite.evaluate_model): preset, metric subset (null: all), seed
    "preset": "fast",
    "metrics": None,
    "seed": 0,
    # reconstruction error as the paper reports it: Bernoulli NLL summed over pixels, mean over a
    # fixed random set of this many images (the same set for every trial)
    "recon_images": 10000,
    # true TC of the final model (metrics/tc.py): S samples, mixture over M images (0: all)
    "true_tc": {"samples": 2000, "data": 10000},
    # importance-sampled log p(x) (metrics/likelihood.py): images and K samples per image
    "log_likelihood": {"images": 256, "samples": 100},
}
#: keys that describe the machine, not the experiment: left out of the trial hash
MACHINE_KEYS = (("train", "device"), ("train", "threads"), ("data", "cache_dir"))
STATUSES = ("finished", "trained", "interrupted", "failed", "pending", "corrupt", "mismatch")


# -- spec -> trials ------------------------------------------------------------------------

@dataclass
class Trial:
    id: str
    setting: str  # the trial's setting without the seed, e.g. "factorvae gamma=40"
    method: str
    dataset: str
    seed: int
    params: dict  # the grid point, {dotted key: value}
    config: dict  # complete, resolved
    eval: dict
    config_hash: str
    eval_hash: str
    sweep: str = ""
    label: str = ""  # the method's label in the spec (default: its name)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sweep:
    name: str
    description: str
    trials: list[Trial]
    spec: dict
    source: str | None = None


def _canonical(obj):
    """Numbers as floats (YAML's 1 and a resolver's 1.0 are one value), mappings sorted."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return float(obj)
    return obj


def stable_hash(obj) -> str:
    """8 hex digits of SHA-1 over the canonical JSON of ``obj``."""
    return hashlib.sha1(json.dumps(_canonical(obj), sort_keys=True, default=str).encode()).hexdigest()[:8]


def experiment_config(cfg: dict) -> dict:
    """``cfg`` without the machine-only keys (what the trial hash and status checks compare)."""
    out = copy.deepcopy(cfg)
    for section, key in MACHINE_KEYS:
        out.get(section, {}).pop(key, None)
    return out


def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "_".join(f"{k}{_fmt(v)}" for k, v in value.items())
    return str(value)


def _slug(text: str, limit: int = 80) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:limit] or "x"


def _set_dotted(tree: dict, key: str, value) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"{key}: {p} is not a section")
    node[parts[-1]] = copy.deepcopy(value)


def _as_layer(value, where: str) -> dict:
    """A config layer from a nested mapping whose keys may also be dotted (``model.gamma: 10``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping of config values, got {type(value).__name__}")
    out: dict = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise UserError(f"{where}: keys must be non-empty strings, got {k!r}")
        if isinstance(v, dict) and "." not in k:
            v = _as_layer(v, f"{where}.{k}")
            from factorvae.config import deep_update

            deep_update(out.setdefault(k, {}), v)
        else:
            _set_dotted(out, k, v)
    return out


def _grid_key(key) -> str:
    if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
        raise UserError(f"grid key must be a config path such as model.gamma, got {key!r}")
    return key if "." in key else f"model.{key}"


def _config_files(value, base_dir: Path, where: str) -> list[dict]:
    from factorvae.config import read_yaml

    if value is None:
        return []
    files = value if isinstance(value, list) else [value]
    layers = []
    for f in files:
        if not isinstance(f, str):
            raise UserError(f"{where}: config must be a file path or a list of them, got {f!r}")
        p = Path(f).expanduser()
        if not p.is_absolute():
            p = base_dir / p
        layers.append(read_yaml(p))
    return layers


def _seeds(value) -> list[int]:
    if value is None:
        return [0]
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UserError(f"seeds: a count must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        if len(set(value)) != len(value):
            raise UserError(f"seeds: repeated seed in {value}")
        return list(value)
    raise UserError(f"seeds must be a count (e.g. 10) or a non-empty list of whole numbers >= 0, got {value!r}")


def _datasets(value) -> list[dict | None]:
    if value is None:
        return [None]
    if not isinstance(value, list) or not value:
        raise UserError(f"datasets must be a non-empty list of data set names or data sections, got {value!r}")
    out = []
    for d in value:
        if isinstance(d, str):
            out.append({"name": d})
        elif isinstance(d, dict) and isinstance(d.get("name"), str):
            out.append(dict(d))
        else:
            raise UserError(f"datasets: each entry must be a name or a mapping with a name, got {d!r}")
    return out


def resolve_eval(value) -> dict:
    ev = copy.deepcopy(EVAL_DEFAULTS)
    if value is None:
        return ev
    if not isinstance(value, dict):
        raise UserError(f"eval must be a mapping, got {type(value).__name__}")
    unknown = set(value) - set(ev)
    if unknown:
        raise UserError(f"unknown eval option(s): {', '.join(sorted(unknown))}; options are {', '.join(ev)}")
    for k, v in value.items():
        if k in ("true_tc", "log_likelihood"):
            if v in (None, False):
                ev[k] = None
                continue
            if not isinstance(v, dict) or set(v) - set(EVAL_DEFAULTS[k]):
                raise UserError(f"eval.{k} must be null or a mapping with keys {', '.join(EVAL_DEFAULTS[k])}, got {v!r}")
            ev[k].update(v)
            for kk, vv in ev[k].items():
                if isinstance(vv, bool) or not isinstance(vv, int) or vv < 0:
                    raise UserError(f"eval.{k}.{kk} must be a whole number >= 0, got {vv!r}")
        else:
            ev[k] = v
    try:  # the metric suite's own names, when it is installed
        from factorvae.metrics.suite import METRICS as metric_names, PRESETS as presets
    except ImportError:
        metric_names, presets = METRIC_NAMES, PRESETS
    if ev["preset"] not in presets:
        raise UserError(f"eval.preset must be one of {', '.join(presets)}, got {ev['preset']!r}")
    m = ev["metrics"]
    if isinstance(m, str):
        m = [s.strip() for s in m.split(",") if s.strip()]
    if m is not None:
        if not isinstance(m, list) or any(x not in metric_names for x in m):
            raise UserError(f"eval.metrics must be null (all) or a list from {', '.join(metric_names)}, got {ev['metrics']!r}")
    ev["metrics"] = m
    if isinstance(ev["seed"], bool) or not isinstance(ev["seed"], int) or ev["seed"] < 0:
        raise UserError(f"eval.seed must be a whole number >= 0, got {ev['seed']!r}")
    if isinstance(ev["recon_images"], bool) or not isinstance(ev["recon_images"], int) or ev["recon_images"] < 0:
        raise UserError(f"eval.recon_images must be a whole number >= 0, got {ev['recon_images']!r}")
    return ev


def load_spec(source: str | Path | dict, base_dir: str | Path | None = None) -> Sweep:
    """Read and expand a sweep spec (a YAML file or a dict) into its trials; every bad value is
    a UserError naming where it is."""
    from factorvae.config import read_yaml, resolve

    if isinstance(source, dict):
        spec, where, base = copy.deepcopy(source), "sweep spec", Path(base_dir or ".")
        src = None
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"sweep spec not found: {path}")
        spec, where, base = read_yaml(path), str(path), Path(base_dir or path.parent)
        src = str(path)
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a spec has {', '.join(sorted(SPEC_KEYS))}")
    name = str(spec.get("name") or (Path(src).stem if src else "sweep"))
    methods = spec.get("methods")
    if isinstance(methods, dict):  # {factorvae: {grid: ...}} shorthand
        methods = [{"name": k, **(v or {})} for k, v in methods.items()]
    if not isinstance(methods, list) or not methods:
        raise UserError(f"{where}: 'methods' must be a non-empty list, e.g. [{{name: factorvae, grid: {{gamma: [10, 40]}}}}]")
    top_layers = _config_files(spec.get("config"), base, f"{where}: config")
    base_layer = _as_layer(spec.get("base"), f"{where}: base")
    seeds = _seeds(spec.get("seeds"))
    datasets = _datasets(spec.get("datasets"))
    ev = resolve_eval(spec.get("eval"))
    eval_hash = stable_hash(ev)
    trials: dict[str, Trial] = {}
    for i, m in enumerate(methods):
        mw = f"{where}: methods[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise UserError(f"{mw} must be a mapping with a method name")
        bad = set(m) - METHOD_KEYS
        if bad:
            raise UserError(f"{mw}: unknown key(s) {', '.join(sorted(bad))}; allowed: {', '.join(sorted(METHOD_KEYS))}")
        from factorvae.methods import get_method

        try:
            method = get_method(m["name"]).name
        except UserError as e:
            raise UserError(f"{mw}: {e}") from None
        grid = m.get("grid") or {}
        if not isinstance(grid, dict):
            raise UserError(f"{mw}: grid must be a mapping of config path -> list of values")
        keys, values = [], []
        for k, v in grid.items():
            if not isinstance(v, list) or not v:
                raise UserError(f"{mw}: grid {k!r} must be a non-empty list of values, got {v!r}")
            keys.append(_grid_key(k))
            values.append(v)
        last = [k.split(".")[-1] for k in keys]
        short = {k: (k.split(".")[-1] if last.count(k.split(".")[-1]) == 1 else "_".join(k.split(".")[-2:])) for k in keys}
        points = [{}]
        for k, vs in zip(keys, values):
            points = [{**p, k: v} for p in points for v in vs]
        layers = top_layers + _config_files(m.get("config"), base, f"{mw}: config")
        set_layer = _as_layer(m.get("set"), f"{mw}: set")
        label = str(m.get("label") or method)
        for d in datasets:
            for point in points:
                grid_layer: dict = {}
                for k, v in point.items():
                    _set_dotted(grid_layer, k, v)
                for seed in seeds:
                    try:
                        cfg = resolve(*layers, base_layer, set_layer, {"model": {"name": method}},
                                      {"data": d} if d else {}, grid_layer, {"train": {"seed": seed}})
                    except UserError as e:
                        raise UserError(f"{mw} {point or ''}: {e}") from None
                    chash = stable_hash(experiment_config(cfg))
                    ascii_label = m.get("label") and re.fullmatch(r"[A-Za-z0-9._-]+", str(m["label"]))
                    readable = "-".join([_slug(str(m["label"]) if ascii_label else method)]
                                        + [_slug(f"{short[k]}{_fmt(v)}", 40) for k, v in point.items()]
                                        + ([_slug(cfg["data"]["name"])] if len(datasets) > 1 else [])
                                        + [f"seed{seed}"])
                    tid = f"{readable}-{chash}"
                    setting = " ".join([label] + [f"{short[k]}={_fmt(v)}" for k, v in point.items()]
                                       + ([f"[{cfg['data']['name']}]"] if len(datasets) > 1 else []))
                    trials.setdefault(tid, Trial(tid, setting, method, cfg["data"]["name"], seed, dict(point),
                                                 cfg, ev, chash, eval_hash, name, label))
    return Sweep(name, str(spec.get("description") or ""), list(trials.values()), spec, src)


# -- status of a trial directory -----------------------------------------------------------

@dataclass
class TrialState:
    status: str
    detail: str = ""
    step: int | None = None
    checkpoint_ok: bool = False
    has_results: bool = False
    trial: dict | None = None
    extra: dict = field(default_factory=dict)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def checkpoint_readable(path: Path) -> bool:
    """Cheap check of a torch checkpoint (a zip file): a truncated one has no central directory."""
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def last_logged_step(run_dir: Path) -> int | None:
    p = run_dir / "metrics.jsonl"
    if not p.exists():
        return None
    step = None
    try:
        for line in p.read_text().splitlines():
            try:
                step = int(json.loads(line).get("step", step))
            except (ValueError, TypeError, AttributeError):
                continue
    except OSError:
        return None
    return step


def inspect_trial(d: str | Path, trial: dict | None = None) -> TrialState:
    """What state trial directory ``d`` is in (module docstring). ``trial`` is the expected trial
    (from the spec); without it the directory's own trial.json is used."""
    d = Path(d)
    if not d.is_dir() or not any(d.iterdir()):
        return TrialState("pending", trial=trial)
    tj = d / "trial.json"
    own = _read_json(tj) if tj.exists() else None
    if tj.exists() and not isinstance(own, dict):
        return TrialState("corrupt", "trial.json unreadable", has_results=_has_results(d), trial=trial)
    trial = trial or own
    step = last_logged_step(d)
    has_results = _has_results(d)
    cfg = None
    if (d / "config.yaml").exists():
        try:
            from factorvae.config import resolve

            raw = yaml.safe_load((d / "config.yaml").read_text())
            if not isinstance(raw, dict):
                raise ValueError("not a mapping")
            cfg = resolve(raw)
        except Exception as e:  # noqa: BLE001 - any unreadable config is "corrupt"
            return TrialState("corrupt", f"config.yaml unreadable ({type(e).__name__})", step,
                              has_results=has_results, trial=trial)
    if trial is None:
        return TrialState("corrupt", "no trial.json and no usable config", step, has_results=has_results)
    if cfg is not None and experiment_config(cfg) != experiment_config(trial["config"]):
        return TrialState("mismatch", "config.yaml differs from the trial's config (edited?)", step,
                          has_results=has_results, trial=trial)
    ckpt = d / "checkpoints" / "last.pt"
    ckpt_ok = ckpt.exists() and checkpoint_readable(ckpt)
    summary = _read_json(d / "summary.json")
    target = trial["config"]["train"]["steps"]
    trained = isinstance(summary, dict) and summary.get("steps") == target
    if trained and not ckpt_ok:
        return TrialState("corrupt", "trained, but the checkpoint is missing or truncated", step,
                          has_results=has_results, trial=trial)
    if trained:
        analysis = _read_json(d / "analysis.json")
        ev = _read_json(d / "eval.json")
        if isinstance(ev, dict) and isinstance(analysis, dict) and analysis.get("eval_hash") == trial["eval_hash"]:
            return TrialState("finished", "", step, True, True, trial)
        why = "not evaluated yet" if not isinstance(analysis, dict) else "evaluated with other eval settings"
        if (d / "error.txt").exists():
            return TrialState("failed", _error_line(d), step, True, has_results, trial, {"trained": True})
        return TrialState("trained", why, step, True, has_results, trial)
    if ckpt.exists() and not ckpt_ok:
        return TrialState("corrupt", "truncated or unreadable checkpoint", step, has_results=has_results, trial=trial)
    if (d / "error.txt").exists():
        return TrialState("failed", _error_line(d), step, ckpt_ok, has_results, trial)
    if ckpt_ok or cfg is not None:
        return TrialState("interrupted", "checkpoint" if ckpt_ok else "no checkpoint yet", step, ckpt_ok,
                          has_results, trial)
    return TrialState("pending", "", step, trial=trial)


def _has_results(d: Path) -> bool:
    return (d / "eval.json").exists() and (d / "summary.json").exists()


def _error_line(d: Path) -> str:
    try:
        lines = [ln for ln in (d / "error.txt").read_text().splitlines() if ln.strip()]
    except OSError:
        return "error.txt unreadable"
    return lines[-1][:300] if lines else "failed"


# -- running one trial ---------------------------------------------------------------------

_DATASETS: dict = {}


def _load_dataset(cfg: dict):
    """Each worker process keeps its data sets (memory-mapped; shared pages across processes)."""
    from factorvae.data import load_dataset

    d = cfg["data"]
    key = (d["name"], d.get("path"), d.get("cache_dir"))
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(d["name"], d.get("path"), d.get("cache_dir"), progress=False)
    return _DATASETS[key]


def _train(cfg, out, resume, progress, dataset):  # a seam for tests (fault injection)
    from factorvae.train import train

    return train(cfg, out, resume=resume, progress=progress, dataset=dataset)


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


def _write_trial_json(d: Path, trial: dict, attempt: dict | None = None) -> None:
    from factorvae.runs import atomic_write_json

    old = _read_json(d / "trial.json")
    attempts = old.get("attempts", []) if isinstance(old, dict) else []
    if attempt is not None:
        attempts = [a for a in attempts if a.get("id") != attempt.get("id")] + [attempt]
    atomic_write_json(d / "trial.json", {**trial, "attempts": attempts})


def run_trial(trial: dict, trial_dir: str, threads: int = 0, progress: bool = False) -> dict:
    """Train (or resume) and evaluate one trial; never raises for a failing trial: the traceback
    goes to ``trial_dir/error.txt`` and the result says ``failed``. Runs in a worker process
    (local pool or Ray task) or in-process."""
    d = Path(trial_dir)
    t0 = time.time()
    result = {"id": trial["id"], "status": "failed", "action": "", "seconds": 0.0, "error": ""}
    attempt = {"id": os.urandom(4).hex(), "start": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": os.uname().nodename,
               "pid": os.getpid()}
    old_threads = 0
    try:
        import torch

        threads = int(trial["config"]["train"].get("threads") or threads or 0)  # the spec's, else the engine's
        if threads:
            old_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        state = inspect_trial(d, trial)
        if state.status == "finished":
            return {**result, "status": "finished", "action": "skipped"}
        if state.status == "mismatch" or (state.status == "corrupt" and state.has_results):
            msg = f"{state.detail}; holds results, left untouched: inspect or remove {d} to rerun it"
            return {**result, "status": state.status, "action": "left alone", "error": msg}
        if state.status == "corrupt":
            moved = quarantine(d, state.detail)
            attempt["restarted_from_corrupt"] = f"{state.detail} (moved to {moved})"
            state = TrialState("pending", trial=trial)
        d.mkdir(parents=True, exist_ok=True)
        (d / "error.txt").unlink(missing_ok=True)
        cfg = copy.deepcopy(trial["config"])
        cfg["train"]["threads"] = threads
        if state.status != "trained" and not state.checkpoint_ok and (d / "config.yaml").exists():
            # started, but no checkpoint: nothing worth keeping in the run files; start over
            for p in ("metrics.jsonl", "summary.json", "eval.json", "analysis.json"):
                (d / p).unlink(missing_ok=True)
            shutil.rmtree(d / "tb", ignore_errors=True)
        attempt["from_status"] = state.status
        attempt["from_step"] = state.step if state.checkpoint_ok else 0
        _write_trial_json(d, trial, attempt)
        dataset = _load_dataset(cfg)
        if state.status != "trained":
            resume = state.checkpoint_ok
            result["action"] = f"resumed from step {state.step}" if resume else "trained"
            _train(cfg, d, resume, progress, dataset)
        else:
            result["action"] = "evaluated"
        evaluate_trial(d, trial, dataset)
        result["status"] = "finished"
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - one failing trial never stops the sweep
        from factorvae.runs import atomic_write_bytes

        text = f"trial {trial['id']} failed at {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n" + traceback.format_exc()
        try:
            atomic_write_bytes(d / "error.txt", lambda f: f.write(text.encode()))
        except OSError:
            pass
        result["error"] = f"{type(e).__name__}: {e}"[:500]
    finally:
        if old_threads:
            import torch

            torch.set_num_threads(old_threads)
    result["seconds"] = round(time.time() - t0, 2)
    attempt.update({"seconds": result["seconds"], "status": result["status"], "action": result["action"]})
    if result["error"]:
        attempt["error"] = result["error"]
    try:
        _write_trial_json(d, trial, attempt)
    except OSError:
        pass
    return result


def evaluate_trial(d: Path, trial: dict, dataset) -> dict:
    """Metric suite -> eval.json; reconstruction error, true TC and log p(x) -> analysis.json
    (written last, with the eval hash: its presence marks the trial finished)."""
    import torch

    from factorvae.runs import atomic_write_json, load_run

    ev = trial["eval"]
    run = load_run(d, device=trial["config"]["train"]["device"], load_data=False)
    model = run.model
    dataset.to(next(model.parameters()).device)
    t0 = time.time()
    scores: dict = {}
    if ev["metrics"] != [] and dataset.grid is not None:
        from factorvae.metrics.suite import evaluate_model

        scores = evaluate_model(model, dataset, preset=ev["preset"], seed=ev["seed"], metrics=ev["metrics"])
    atomic_write_json(d / "eval.json", scores)
    t_metrics = time.time() - t0
    analysis: dict = {"eval_hash": trial["eval_hash"], "eval": ev, "step": run.step}
    from factorvae.methods.base import GaussianVAEBase

    if not isinstance(model, GaussianVAEBase):  # the analyses need q(z|x) Gaussian and p(x|z) Bernoulli
        analysis["note"] = f"no reconstruction / TC / log p(x) analysis for model {model.name!r}"
        ev = {**ev, "recon_images": 0, "true_tc": None, "log_likelihood": None}
    with torch.no_grad():
        if ev["recon_images"]:
            analysis.update(reconstruction_error(model, dataset, ev["recon_images"], seed=ev["seed"]))
        if ev["true_tc"]:
            from factorvae.metrics.tc import model_total_correlation

            analysis.update(model_total_correlation(model, dataset, ev["true_tc"]["samples"], ev["true_tc"]["data"],
                                                    seed=ev["seed"]))
        if ev["log_likelihood"] and ev["log_likelihood"]["images"] and ev["log_likelihood"]["samples"]:
            from factorvae.metrics.likelihood import estimate_log_likelihood

            analysis.update(estimate_log_likelihood(model, dataset, ev["log_likelihood"]["images"],
                                                    ev["log_likelihood"]["samples"], seed=ev["seed"]))
    analysis["seconds"] = {"metrics": round(t_metrics, 2), "analysis": round(time.time() - t0 - t_metrics, 2)}
    atomic_write_json(d / "analysis.json", analysis)
    return analysis


def reconstruction_error(model, dataset, num_images: int = 10000, seed: int = 0, batch: int = 256) -> dict:
    """The paper's reconstruction error on a fixed random set of images (the same for every trial
    with the same seed): Bernoulli NLL -log p(x|z), summed over pixels, mean over images, with one
    z ~ q(z|x) per image as in the training loss (``recon``) and at the encoder mean
    (``recon_at_mean``); also KL(q(z|x)||p(z)) and the ELBO = -(recon + kl), all nats per image."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from factorvae.methods.base import gaussian_kl_per_dim

    was_training = model.training
    model.eval()
    n = min(int(num_images), len(dataset))
    idx = np.sort(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False))
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed) + 3)
    tot = {"recon": 0.0, "recon_at_mean": 0.0, "kl": 0.0}
    with torch.no_grad():
        for a in range(0, n, batch):
            x = dataset.images(idx[a : a + batch]).to(device)
            mean, logvar = model.encode(x)
            z = mean + torch.randn(mean.shape, generator=gen, device=device) * torch.exp(0.5 * logvar)
            tot["recon"] += float(F.binary_cross_entropy_with_logits(model.decode(z), x, reduction="sum"))
            tot["recon_at_mean"] += float(F.binary_cross_entropy_with_logits(model.decode(mean), x, reduction="sum"))
            tot["kl"] += float(gaussian_kl_per_dim(mean, logvar).sum()) * len(x)
    if was_training:
        model.train()
    out = {k: v / n for k, v in tot.items()}
    out["elbo"] = -(out["recon"] + out["kl"])
    out["recon_images"] = n
    return out


# -- running a sweep -----------------------------------------------------------------------

def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class SweepOutcome:
    sweep: Sweep
    out: Path
    results: list[dict]  # what this invocation did, one per trial it touched
    rows: list[dict]  # the aggregated table
    seconds: float

    def counts(self) -> dict:
        c: dict = {}
        for r in self.rows:
            c[r["status"]] = c.get(r["status"], 0) + 1
        return c


def run_sweep(spec, out: str | Path, workers: int = 1, ray_address: str | None = None, cpus_per_trial: float | None = None,
              gpus_per_trial: float = 0, progress: bool = True, only: str | None = None, threads: int | None = None,
              log=print) -> SweepOutcome:
    """Run every unfinished trial of ``spec`` into ``out`` and gather the table.

    ``workers`` local processes (0: in this process), or Ray tasks when ``ray_address`` is given
    (``local``: start a local Ray instance; ``auto``: join the running cluster; else an address).
    Torch threads per trial: ``threads``, else the spec's ``train.threads``, else cores / workers
    (Ray: the trial's CPUs)."""
    t0 = time.time()
    sweep = spec if isinstance(spec, Sweep) else load_spec(spec)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    (out / "trials").mkdir(parents=True, exist_ok=True)
    with _sweep_lock(out):
        return _run_sweep_locked(sweep, out, workers, ray_address, cpus_per_trial, gpus_per_trial, progress, only,
                                 threads, log, t0)


class _sweep_lock:
    """``DIR/.sweep.lock``: refuse a second sweep on the same directory while one runs on this
    host (two runs would train the same trials at once). A lock left by a dead process is taken over."""

    def __init__(self, out: Path):
        self.path = out / ".sweep.lock"
        self.me = {"pid": os.getpid(), "host": os.uname().nodename}

    def __enter__(self):
        other = _read_json(self.path) if self.path.exists() else None
        if isinstance(other, dict) and other.get("host") == self.me["host"] and other.get("pid") != self.me["pid"]:
            try:
                os.kill(int(other["pid"]), 0)
                alive = True
            except (ProcessLookupError, ValueError, TypeError):
                alive = False
            except PermissionError:
                alive = True
            if alive:
                raise UserError(f"another sweep (pid {other['pid']}) is running on {self.path.parent}; "
                                f"wait for it or stop it (remove {self.path} if it is stale)")
        self.path.write_text(json.dumps(self.me))
        return self

    def __exit__(self, *exc):
        if _read_json(self.path) == self.me:
            self.path.unlink(missing_ok=True)
        return False


def _run_sweep_locked(sweep, out, workers, ray_address, cpus_per_trial, gpus_per_trial, progress, only, threads, log,
                      t0) -> SweepOutcome:
    from factorvae.runs import atomic_write_json

    atomic_write_json(out / "sweep.json", {
        "name": sweep.name, "description": sweep.description, "source": sweep.source, "spec": sweep.spec,
        "trials": [t.id for t in sweep.trials], "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    trials = [t for t in sweep.trials if not only or only in t.id]
    states = {t.id: inspect_trial(out / "trials" / t.id, t.to_dict()) for t in trials}
    todo = [t for t in trials if states[t.id].status != "finished"]
    done = len(trials) - len(todo)
    if log:
        by: dict = {}
        for st in states.values():
            by[st.status] = by.get(st.status, 0) + 1
        engine = f"Ray ({ray_address})" if ray_address else (f"{workers} worker process(es)" if workers else "this process")
        log(f"sweep {sweep.name}: {len(trials)} trial(s) -> {out}  [" + ", ".join(f"{v} {k}" for k, v in by.items())
            + f"]; running {len(todo)} on {engine}")
    results: list[dict] = []
    if todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(trials), initial=done, desc=f"sweep {sweep.name}", unit="trial", disable=not progress,
                   dynamic_ncols=True)

        def report(res: dict) -> None:
            results.append(res)
            bar.update(1)
            failed = sum(r["status"] not in ("finished",) for r in results)
            bar.set_postfix({"failed": failed})
            line = f"  {res['status']:<9} {res['id']}  {res.get('action', '')} ({res.get('seconds', 0):.0f} s)"
            if res.get("error"):
                line += f"\n            {res['error']}"
            if log:
                (bar.write if progress else log)(line)

        try:
            if threads:  # forced: overrides the spec's train.threads (a machine key, not in the hash)
                todo = [copy.deepcopy(t) for t in todo]
                for t in todo:
                    t.config["train"]["threads"] = int(threads)
            if ray_address:
                _run_ray(todo, out, ray_address, cpus_per_trial, gpus_per_trial, report)
            elif workers == 0:
                for t in todo:
                    report(run_trial(t.to_dict(), str(out / "trials" / t.id), threads=0, progress=progress))
            else:
                _run_pool(todo, out, workers, report)
        finally:
            bar.close()
    rows = aggregate(out, sweep)
    return SweepOutcome(sweep, out, results, rows, time.time() - t0)


def _failure(t: Trial, out: Path, message: str) -> dict:
    """Record a failure seen from outside the trial (a worker that died, a Ray error)."""
    from factorvae.runs import atomic_write_bytes

    d = out / "trials" / t.id
    try:
        d.mkdir(parents=True, exist_ok=True)
        text = f"trial {t.id} failed at {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n{message}\n"
        atomic_write_bytes(d / "error.txt", lambda f: f.write(text.encode()))
    except OSError:
        pass
    return {"id": t.id, "status": "failed", "action": "", "seconds": 0.0, "error": message.splitlines()[-1][:500]}


def _run_pool(todo: list[Trial], out: Path, workers: int, report) -> None:
    """Separate processes (spawn), at most ``workers`` trials in flight, each with
    cores/workers torch threads. A worker that dies (killed, out of memory) fails only the
    trials it held; the pool is rebuilt for the rest."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, usable_cores() // workers)
    queue = list(todo)
    ctx = multiprocessing.get_context("spawn")
    while queue:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        running: dict = {}
        broken = False
        try:
            while queue or running:
                while queue and len(running) < workers and not broken:
                    t = queue.pop(0)
                    running[pool.submit(run_trial, t.to_dict(), str(out / "trials" / t.id), threads)] = t
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    t = running.pop(f)
                    try:
                        report(f.result())
                    except BrokenProcessPool:
                        broken = True
                        report(_failure(t, out, "the worker process died (killed or out of memory) while running this "
                                                "trial; it is resumed from its checkpoint on the next run"))
                    except Exception as e:  # noqa: BLE001 - e.g. a result that could not be unpickled
                        report(_failure(t, out, f"{type(e).__name__}: {e}"))
                if broken and not running:
                    break
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(todo: list[Trial], out: Path, address: str, cpus: float | None, gpus: float, report) -> None:
    """One Ray task per trial. ``out`` must be on storage every node sees (a shared file system)."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'factorvae[ray]'") from None
    started = False
    if not ray.is_initialized():
        try:
            if address == "local":  # a new instance on this machine, even if a cluster runs here
                ray.init(address="local", include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({type(e).__name__}: {e})") from None
        started = True
    try:
        cpus = float(cpus) if cpus else 1.0
        remote = ray.remote(num_cpus=cpus, num_gpus=float(gpus or 0), max_retries=0)(run_trial)
        refs = {remote.remote(t.to_dict(), str((out / "trials" / t.id).resolve()), max(1, int(math.floor(cpus)))): t
                for t in todo}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for r in ready:
                t = refs.pop(r)
                try:
                    report(ray.get(r))
                except Exception as e:  # noqa: BLE001 - worker crashed, node lost, ...
                    report(_failure(t, out, f"Ray task failed: {type(e).__name__}: {str(e)[:2000]}"))
    finally:
        if started:
            ray.shutdown()


# -- the results table ---------------------------------------------------------------------

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
                "seconds", "recon", "dir"]


def trial_row(d: Path, trial: dict | None = None) -> dict:
    """One row of the table for trial directory ``d``: never raises (a broken directory gives a
    row with status corrupt and the reason)."""
    row: dict = {"trial_id": d.name, "dir": f"trials/{d.name}"}
    try:
        st = inspect_trial(d, trial)
    except Exception as e:  # noqa: BLE001
        return {**row, "status": "corrupt", "detail": f"{type(e).__name__}: {e}"[:300]}
    t = st.trial or {}
    row.update({"status": st.status, "detail": st.detail, "setting": t.get("setting"), "method": t.get("method"),
                "method_label": t.get("label") or t.get("method"),
                "dataset": t.get("dataset"), "seed": t.get("seed"), "step": st.step,
                "steps": (t.get("config") or {}).get("train", {}).get("steps")})
    own = _read_json(d / "trial.json")
    if isinstance(own, dict):
        row["seconds"] = round(sum(a.get("seconds", 0) or 0 for a in own.get("attempts", [])), 1)
    row.update(flatten(t.get("config") or {}))
    for k, v in (t.get("params") or {}).items():
        row[k] = v if not isinstance(v, (list, dict)) else json.dumps(v)
    row["params"] = json.dumps(t.get("params") or {}, sort_keys=True)
    summary = _read_json(d / "summary.json")
    if isinstance(summary, dict):
        row.update(flatten(summary.get("final") or {}, "final."))
        if summary.get("active_dims") is not None:
            row["active_dims"] = len(summary["active_dims"])
    ev = _read_json(d / "eval.json")
    if isinstance(ev, dict) and st.status in ("finished", "trained", "failed", "mismatch"):
        row.update(flatten({k: v for k, v in ev.items() if k not in ("settings", "seconds", "encoder")}))
        if isinstance(ev.get("seconds"), dict) and ev["seconds"].get("total") is not None:
            row["eval_seconds"] = ev["seconds"]["total"]
    an = _read_json(d / "analysis.json")
    if isinstance(an, dict):
        row.update(flatten({k: v for k, v in an.items() if k not in ("eval", "eval_hash", "seconds")}, "analysis."))
    row["recon"] = row.get("analysis.recon", row.get("final.recon"))
    return row


def aggregate(out: str | Path, sweep: Sweep | None = None, write: bool = True) -> list[dict]:
    """One row per trial directory under ``out/trials`` (and per spec trial not started yet);
    written to ``out/results.csv`` and ``out/results.parquet``."""
    out = Path(out)
    tdir = out / "trials"
    expected = {t.id: t.to_dict() for t in sweep.trials} if sweep else {}
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
    import csv
    import io

    from factorvae.runs import atomic_write_bytes

    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write_bytes(Path(csv_path), lambda f: f.write(buf.getvalue().encode()))
    if parquet_path is None:
        return
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # optional: pip install 'factorvae[ray]'
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
    atomic_write_bytes(Path(parquet_path), lambda f: pq.write_table(table, f))


def read_table(path: str | Path) -> list[dict]:
    """Rows of results.parquet (typed) or results.csv (strings)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))
