"""Run a set of metrics on one Codes cache: presets, seeds, timing, JSON.

Presets (docs/metrics.md explains each number):
- ``dlib`` (default): disentanglement_lib's unsupervised-study settings for every metric
  (Locatello et al. 2019). Scores are comparable with that study and with the parity references.
- ``paper``: the FactorVAE paper's settings as far as they are known (§4, Appendix B;
  Kim & Mnih 2018, Appendix B: L = 100, 800 training and 800 evaluation votes); the open points
  (pruning rule, std estimation set, Higgins classifier) are documented; the other metrics
  keep the dlib settings.
- ``fast``: fewer points for quick looks during training (``train --eval-every``).

Each metric draws from a fresh generator seeded with ``seed``, as disentanglement_lib gives each
metric a fresh ``RandomState(seed)``: adding or removing a metric never changes another
metric's numbers, and metrics whose first draw is the same training set (DCI, fairness, the
boosted-tree downstream task's largest size) fit their classifiers once (``Codes.fits``).
"""

from __future__ import annotations

import copy
import inspect
import math
import time

import numpy as np
import torch
import yaml

from factorvae.data import require_grid
from factorvae.errors import UserError
from factorvae.metrics.codes import FIXES_FACTORS, Codes
from factorvae.metrics.record import PRESET_NAMES
from factorvae.metrics.registry import RECORDS

#: every registered metric, in table order (metrics/registry.py)
METRICS: tuple[str, ...] = tuple(RECORDS)
#: what ``metrics=None`` runs: the records marked ``default``
DEFAULT_METRICS: tuple[str, ...] = tuple(n for n, r in RECORDS.items() if r.default)
#: metrics that hold one factor fixed (paper §4): they need codes of chosen grid points
FIXED_FACTOR_METRICS = tuple(n for n, r in RECORDS.items() if r.fixes_factor)
#: metrics that only draw random grid points: a random sample of codes serves them
SAMPLE_METRICS = tuple(m for m in METRICS if m not in FIXED_FACTOR_METRICS)

PRESETS: dict[str, dict[str, dict]] = {p: {n: r.presets[p] for n, r in RECORDS.items()} for p in PRESET_NAMES}


def parse_metrics(metrics) -> list[str]:
    """None -> the default metrics; "all" -> every registered one; "a,b" or a list -> those,
    validated, in canonical order."""
    if metrics is None:
        return list(DEFAULT_METRICS)
    if metrics == "all" or metrics == ["all"]:
        return list(METRICS)
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",")]
    names = [m for m in metrics if m]
    if not names:
        raise UserError(f"no metric named; choose from {', '.join(METRICS)}")
    unknown = [m for m in names if m not in RECORDS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    return [m for m in METRICS if m in names]


def preset_params(preset: str) -> dict[str, dict]:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[preset])


def check_overrides(overrides: dict | None) -> dict[str, dict]:
    """Validate {metric: {param: value}}: known metrics and parameters only."""
    out: dict[str, dict] = {}
    for name, params in (overrides or {}).items():
        if name not in RECORDS:
            raise UserError(f"unknown metric {name!r} in a setting; choose from {', '.join(METRICS)}")
        if not isinstance(params, dict):
            raise UserError(f"settings of {name} must be param=value pairs")
        signature = inspect.signature(RECORDS[name].function).parameters
        allowed = [p for p in signature if p not in ("codes", "rng")]
        for key, value in params.items():
            if key not in allowed:
                raise UserError(f"{name} has no parameter {key!r}; its parameters are {', '.join(allowed)}")
            if not (value is None and "None" in str(signature[key].annotation)):
                _check_setting(name, key, value, signature[key].default)
        out[name] = dict(params)
    return out


def _check_setting(metric: str, key: str, value, default) -> None:
    """A setting of the type of its default: a count (int default) a whole number >= 1 (>= 0
    when the default is 0), a float a finite number >= 0; refused before any plan or work."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int) and not isinstance(default, bool):
        if not (number and float(value).is_integer() and value >= min(1, default)):
            raise UserError(f"{metric}.{key} must be a whole number >= {min(1, default)}, got {value!r}")
    elif isinstance(default, float) and not (number and math.isfinite(value) and value >= 0):
        raise UserError(f"{metric}.{key} must be a finite number >= 0, got {value!r}")


def parse_settings(items: list[str] | None) -> dict[str, dict]:
    """``["factor_vae.num_train=800", ...]`` -> {metric: {param: value}} (values as YAML)."""
    out: dict[str, dict] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        metric, dot, param = key.partition(".")
        if not sep or not dot or not metric or not param:
            raise UserError(f"--set expects metric.param=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UserError(f"--set {key}: cannot parse value {raw!r}") from None
        out.setdefault(metric, {})[param] = value
    return check_overrides(out)


def metric_rng(seed: int) -> np.random.Generator:
    """A metric's generator: fresh for each metric, the same stream for every metric (dlib's
    ``evaluate.py``), independent of which other metrics run."""
    return np.random.default_rng(int(seed))


def evaluate(codes: Codes, metrics=None, preset: str = "dlib", seed: int = 0, progress: bool = False,
             overrides: dict[str, dict] | None = None) -> dict:
    """Score ``codes`` with ``metrics`` (default: all) at ``preset``; returns the JSON-ready
    dict: one entry per metric (disentanglement_lib's keys plus extras), ``settings`` and
    ``seconds`` (per metric and total); ``encoder`` when the codes come from a model.

    For a random sample of codes (``Codes.from_sample``) the default is the metrics it can
    serve (MIG, DCI, SAP, modularity/explicitness; ``settings.sample.skipped`` names the others);
    naming FactorVAE or Higgins raises a UserError that says how to score them."""
    names = sample_metrics(codes, metrics)
    params = preset_params(preset)
    overrides = check_overrides(overrides)
    for name, extra in overrides.items():
        params.setdefault(name, {}).update(extra)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise UserError(f"seed must be a whole number, got {seed!r}") from None
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    out: dict = {}
    seconds: dict[str, float] = {}
    draws: dict[str, list] = {}
    start = time.perf_counter()
    for name in names:
        if progress:
            print(f"  {name} ...", flush=True)
        if codes.is_sample:
            codes.draws.clear()
        t = time.perf_counter()
        try:
            result = RECORDS[name].function(codes, metric_rng(seed), **params[name])
        except TypeError as e:
            if name not in overrides:
                raise
            raise UserError(f"{name}: a setting has the wrong type ({e}); given {overrides[name]}") from None
        out[name] = _jsonable(result)
        seconds[name] = round(time.perf_counter() - t, 3)
        if codes.is_sample:
            draws[name] = list(codes.draws)
    seconds["total"] = round(time.perf_counter() - start, 3)
    out["settings"] = {
        "preset": preset,
        "seed": seed,
        "params": {n: params[n] for n in names},
        "factors": list(codes.grid.names),
        # labels of every latent x factor matrix (mig's mutual_info, dci's importance_matrix, sap's score_matrix)
        "latents": [f"z{j}" for j in range(codes.num_codes)],
        "factor_sizes": list(codes.grid.sizes),
        "dropped_factors": codes.dropped_factors,
        "num_codes": codes.num_codes,
    }
    if codes.is_sample:
        out["settings"]["sample"] = sample_notes(codes, metrics, draws)
    out["seconds"] = seconds
    if hasattr(codes, "encode_fn"):
        out["encoder"] = {"images_encoded": codes.images_encoded, "encoder_calls": codes.encoder_calls,
                          "distinct_points": codes.num_encoded, "grid_points": len(codes.grid),
                          "cache": codes.cache}
    return out


def evaluate_model(model, dataset, preset: str = "fast", seed: int = 0, metrics=None, batch_size: int = 256,
                   progress: bool = False, overrides: dict[str, dict] | None = None) -> dict:
    """Score a model's representation (``model.representation``: encoder means for VAEs) on
    the data set's factor grid; what ``train --eval-every`` and ``factorvae eval`` call. The
    caller prints the plan (``plan.describe``) if it wants one; ``progress``: a progress bar."""
    grid = require_grid(dataset)
    parse_metrics(metrics), preset_params(preset), check_overrides(overrides)  # fail before encoding
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = torch.device("cpu")

    def encode(x):
        return model.representation(x.to(device))

    was_training = getattr(model, "training", False)
    model.eval()
    try:
        codes = Codes.from_encoder(encode, dataset.images, grid, batch_size=batch_size, progress=progress)
        return evaluate(codes, metrics=metrics, preset=preset, seed=seed, overrides=overrides)
    finally:
        if was_training:
            model.train()


def sample_metrics(codes: Codes, metrics) -> list[str]:
    """The metrics to run on ``codes``: all by default, those a sample serves for a sample."""
    names = parse_metrics(metrics)
    if not codes.is_sample:
        return names
    if metrics is None or metrics == "all" or metrics == ["all"]:
        return [m for m in names if m in SAMPLE_METRICS]
    fixed = [m for m in names if m in FIXED_FACTOR_METRICS]
    if fixed:
        raise UserError(FIXES_FACTORS.format(metric=fixed[0], n=codes.num_points))
    return names


def sample_notes(codes: Codes, metrics, draws: dict[str, list]) -> dict:
    """What scoring a sample did differently from scoring the grid: skipped metrics, points
    used where the sample was smaller than asked, factor classes the sample never shows."""
    out = {"points": codes.num_points,
           "skipped": [m for m in parse_metrics(metrics) if m in FIXED_FACTOR_METRICS],
           "short": {m: d for m, d in draws.items() if any(x["asked"] != x["got"] for x in d)},
           "missing_classes": codes.missing_classes()}
    return out


def sample_warnings(results: dict) -> list[str]:
    """One line per thing a user should know about a score from a sample."""
    s = results.get("settings", {}).get("sample")
    if not s:
        return []
    lines = []
    if s["skipped"]:
        lines.append(f"skipped {', '.join(s['skipped'])}: they fix one factor at a time and need a model "
                     "(factorvae.evaluate(model=...) or `factorvae eval RUN_DIR`), not a sample")
    for m, d in s["short"].items():
        got = d[0]["got"]
        got = "+".join(str(g) for g in got) if isinstance(got, list) else str(got)
        lines.append(f"{m}: the sample has {s['points']} points, fewer than the preset asks; used {got} "
                     "(scores are noisier: encode more points)")
    if s["missing_classes"]:
        lines.append("the sample never shows " + ", ".join(f"{n} class(es) of {f}" for f, n in s["missing_classes"].items())
                     + ": is it a uniform random sample of the grid?")
    return lines


def headline(results: dict) -> dict[str, float]:
    """{metric: headline value} of the metrics that could score (an unscorable one is None)."""
    return {m: results[m][RECORDS[m].headline] for m in METRICS if m in results and results[m].get(RECORDS[m].headline) is not None}


def not_scored(value, result: dict) -> str:
    """A value for a table: "n/a (reason)" for a metric that could not score, else ''."""
    if value is None and isinstance(result, dict) and result.get("unscorable"):
        return f"n/a ({result['unscorable']})"
    return ""


def format_table(results: dict) -> str:
    """A plain-text table: one line per reported value, with each metric's seconds."""
    lines = []
    seconds = results.get("seconds", {})
    width = max(len(f"{m}.{k}") for m in METRICS for k in RECORDS[m].keys)
    for m in METRICS:
        if m not in results:
            continue
        for i, k in enumerate(RECORDS[m].keys):
            v = results[m].get(k)
            val = f"{v:.4f}" if isinstance(v, float) else ("n/a" if not_scored(v, results[m]) else str(v))
            t = f"{seconds[m]:7.1f}s" if i == 0 and m in seconds else ""
            lines.append(f"{m + '.' + k:<{width}}  {val:>8}  {t}")
    lines += [f"{m}: {not_scored(None, results[m])}" for m in METRICS if not_scored(None, results.get(m))]
    fv = results.get("factor_vae")
    if fv and fv.get("latent_factor"):
        lines.append("factor_vae: latent -> factor  " + ", ".join(
            f"z{d}:{f if f is not None else '-'}" for d, f in enumerate(fv["latent_factor"])))
    s = results.get("settings", {})
    foot = f"preset {s.get('preset')}, seed {s.get('seed')}, total {seconds.get('total', 0):.1f}s"
    enc = results.get("encoder")
    if enc:
        foot += f", {enc['images_encoded']} images encoded ({enc['distinct_points']} distinct grid points)"
    lines.append(foot)
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
