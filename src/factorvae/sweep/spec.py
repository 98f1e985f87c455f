"""Sweep specs: a YAML spec (methods x hyper-parameter grids x seeds x data sets, plus training
and evaluation settings) expanded into trials. See docs/reproduce.md for the format and
configs/sweeps/ for the paper's sweeps (Kim & Mnih 2018, Section 4).

A trial's id is readable and stable: ``<method>-<grid point>-seed<s>-<hash>`` where the hash is
over the resolved config (without machine-only keys: device, threads, cache_dir), so editing the
spec gives new trials and never silently reuses old results.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from factorvae.config import deep_update, read_yaml, resolve
from factorvae.errors import UserError, check_keys
from factorvae.methods import get_method
from factorvae.metrics.suite import METRICS, PRESETS

SPEC_KEYS = ("name", "description", "config", "base", "methods", "seeds", "datasets", "eval")
METHOD_KEYS = ("name", "label", "config", "set", "grid")
EVAL_DEFAULTS: dict = {
    # metric suite (factorvae.metrics.suite.evaluate_model): preset, metric subset (null: all), seed
    "preset": "fast",
    "metrics": None,
    "seed": 0,
    # reconstruction error as the paper reports it: Bernoulli NLL summed over pixels, mean over a
    # fixed random set of this many images (the same set for every trial)
    "recon_images": 10000,
    # true TC of the final model (metrics/tc.py): S samples, mixture over M images (0: all, exact)
    "true_tc": {"samples": 2000, "data": 0},
    # importance-sampled log p(x) (metrics/likelihood.py): images and K samples per image
    "log_likelihood": {"images": 256, "samples": 100},
    # also score sampled codes z ~ q(z|x) (dlib's postprocess "sampled"), as eval.json's "sampled"
    "sampled": False,
}
#: ``eval: {analyses: quick}``: the analyses in seconds instead of minutes on dSprites (README,
#: "What a sweep costs"): true TC over a random subset of 10,000 images (an under-estimate of the
#: exact value by 0 to ~1 nat, benchmarks/true_tc_bias.py), 2,000 images of reconstruction error,
#: log p(x) with K = 10. ``analyses: exact`` (the default) keeps EVAL_DEFAULTS, the paper's.
QUICK_ANALYSES: dict = {"recon_images": 2000, "true_tc": {"samples": 1000, "data": 10000},
                        "log_likelihood": {"images": 256, "samples": 10}}
ANALYSES = ("exact", "quick")
#: the most trials one spec may expand to (a paper sweep has hundreds): counted before expanding,
#: so a grid of millions is refused at once instead of resolving configs for minutes
MAX_TRIALS = 100_000  # the Locatello et al. study is 12,600; 2·10⁶ is a typo, refused in seconds
#: keys that describe the machine, not the experiment: left out of the trial hash
MACHINE_KEYS = (("train", "device"), ("train", "threads"), ("train", "loggers"), ("data", "cache_dir"),
                ("train", "group_strategy"), ("train", "compile"), ("train", "eval_async"))


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


    @classmethod
    def from_dict(cls, d: dict) -> "Trial":
        """The trial of a ``trial.json`` (its extra keys, e.g. ``attempts``, are left out)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


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
    if out.get("train", {}).get("precision") == "fp32":  # the default: ids of older sweeps stay valid
        out["train"].pop("precision")
    # options added later, at their defaults: older sweeps' ids and config.yaml files stay valid
    if out.get("model", {}).get("likelihood") == "bernoulli":
        out["model"].pop("likelihood")
    if "scream_path" in out.get("data", {}) and out["data"]["scream_path"] is None:
        out["data"].pop("scream_path")
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
            deep_update(out.setdefault(k, {}), v)
        else:
            _set_dotted(out, k, v)
    return out


def _grid_key(key) -> str:
    if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
        raise UserError(f"grid key must be a config path such as model.gamma, got {key!r}")
    return key if "." in key else f"model.{key}"


def _config_files(value, base_dir: Path, where: str) -> list[dict]:
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


def _narrow_datasets(spec_value, value) -> list:
    """``--set datasets=[a, b]``: the spec's entries of those names (their paths kept), or
    the entries given in full (mappings); a name the spec lacks becomes ``{name: ...}``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UserError(f"--set datasets: a data set name or a list of them, got {value!r}")
    known = {}
    for d in spec_value or []:
        known.setdefault(d if isinstance(d, str) else (d.get("name") if isinstance(d, dict) else None), d)
    return [known.get(v, v) if isinstance(v, str) else v for v in value]


def resolve_eval(value) -> dict:
    ev = copy.deepcopy(EVAL_DEFAULTS)
    if value is None:
        return ev
    if not isinstance(value, dict):
        raise UserError(f"eval must be a mapping, got {type(value).__name__}")
    value = dict(value)
    analyses = value.pop("analyses", "exact")
    if analyses not in ANALYSES:
        close = difflib.get_close_matches(str(analyses), ANALYSES, n=1)
        raise UserError(f"eval.analyses must be one of {', '.join(ANALYSES)}, got {analyses!r}"
                        + (f" (did you mean {close[0]}?)" if close else ""))
    if analyses == "quick":  # explicit keys beside it still win
        ev.update(copy.deepcopy(QUICK_ANALYSES))
    check_keys("eval option", value, [*ev, "analyses"])
    for k, v in value.items():
        if k in ("true_tc", "log_likelihood"):
            if v in (None, False):
                ev[k] = None
                continue
            if not isinstance(v, dict):
                raise UserError(f"eval.{k} must be null or a mapping with keys {', '.join(EVAL_DEFAULTS[k])}, got {v!r}")
            check_keys(f"eval.{k} option", v, EVAL_DEFAULTS[k])
            ev[k].update(v)
            for kk, vv in ev[k].items():
                if isinstance(vv, bool) or not isinstance(vv, int) or vv < 0:
                    raise UserError(f"eval.{k}.{kk} must be a whole number >= 0, got {vv!r}")
        else:
            ev[k] = v
    if ev["preset"] not in PRESETS:
        raise UserError(f"eval.preset must be one of {', '.join(PRESETS)}, got {ev['preset']!r}")
    m = ev["metrics"]
    if isinstance(m, str) and m != "all":
        m = [s.strip() for s in m.split(",") if s.strip()]
    if m is not None and m != "all":
        if not isinstance(m, list) or any(x not in METRICS for x in m):
            raise UserError(f"eval.metrics must be null (the default set), all (every metric) or a list from "
                            f"{', '.join(METRICS)}, got {ev['metrics']!r}")
    ev["metrics"] = m
    if isinstance(ev["seed"], bool) or not isinstance(ev["seed"], int) or ev["seed"] < 0:
        raise UserError(f"eval.seed must be a whole number >= 0, got {ev['seed']!r}")
    if not isinstance(ev["sampled"], bool):
        raise UserError(f"eval.sampled must be true or false, got {ev['sampled']!r}")
    if isinstance(ev["recon_images"], bool) or not isinstance(ev["recon_images"], int) or ev["recon_images"] < 0:
        raise UserError(f"eval.recon_images must be a whole number >= 0, got {ev['recon_images']!r}")
    return ev


def trial_count(methods: list, seeds, datasets) -> int:
    """How many trials the spec's methods x grid points x seeds x data sets make, counted from
    the list lengths alone (nothing expanded; malformed entries count 1 and fail later)."""
    n_seeds = seeds if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0 else \
        len(seeds) if isinstance(seeds, list) and seeds else 1
    n_data = len(datasets) if isinstance(datasets, list) and datasets else 1
    points = 0
    for m in methods:
        grid = m.get("grid") if isinstance(m, dict) else None
        points += math.prod(len(v) for v in grid.values() if isinstance(v, list) and v) if isinstance(grid, dict) else 1
    return points * n_seeds * n_data


def load_spec(source: str | Path | dict, base_dir: str | Path | None = None, sets: dict | None = None) -> Sweep:
    """Read and expand a sweep spec (a YAML file or a dict) into its trials; every bad value is
    a UserError naming where it is. ``sets`` (``factorvae sweep --set``, as ``config.parse_set``
    gives them) override the spec: ``seeds`` and ``eval`` its own keys, anything else its
    ``base`` config (e.g. ``train.steps``), so a paper spec can be tried at a small budget."""
    if isinstance(source, dict):
        spec, where, base = copy.deepcopy(source), "sweep spec", Path(base_dir or ".")
        src = None
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(f"sweep spec not found: {path}")
        spec, where, base = read_yaml(path), str(path), Path(base_dir or path.parent)
        src = str(path)
    for key, value in (sets or {}).items():
        if key == "seeds":
            spec["seeds"] = value
        elif key == "datasets":
            spec["datasets"] = _narrow_datasets(spec.get("datasets"), value)
        elif key == "eval" and isinstance(value, dict):
            spec["eval"] = deep_update(copy.deepcopy(spec.get("eval") or {}), value)
        else:
            spec["base"] = deep_update(copy.deepcopy(spec.get("base") or {}), {key: value})
    try:
        check_keys("spec key", spec, SPEC_KEYS)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    name = str(spec.get("name") or (Path(src).stem if src else "sweep"))
    methods = spec.get("methods")
    if isinstance(methods, dict):  # {factorvae: {grid: ...}} shorthand
        methods = [{"name": k, **(v or {})} for k, v in methods.items()]
    if not isinstance(methods, list) or not methods:
        raise UserError(f"{where}: 'methods' must be a non-empty list, e.g. [{{name: factorvae, grid: {{gamma: [10, 40]}}}}]")
    count = trial_count(methods, spec.get("seeds"), spec.get("datasets"))
    if count > MAX_TRIALS:
        raise UserError(f"{where}: the spec expands to {count:,} trials (grid x seeds x data sets), more than the limit "
                        f"of {MAX_TRIALS:,}; split it into several sweeps")
    top_layers = _config_files(spec.get("config"), base, f"{where}: config")
    base_layer = _as_layer(spec.get("base"), f"{where}: base")
    seeds = _seeds(spec.get("seeds"))
    datasets = _datasets(spec.get("datasets"))
    ev = resolve_eval(spec.get("eval"))
    # eval.sampled came later: at its default the hash of older sweeps' evaluations stays valid
    eval_hash = stable_hash({k: v for k, v in ev.items() if not (k == "sampled" and v is False)})
    trials: dict[str, Trial] = {}
    for i, m in enumerate(methods):
        mw = f"{where}: methods[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise UserError(f"{mw} must be a mapping with a method name")
        try:
            check_keys("method key", m, METHOD_KEYS)
        except UserError as e:
            raise UserError(f"{mw}: {e}") from None
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
