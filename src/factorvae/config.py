"""Run configuration: defaults (the paper's, Kim & Mnih 2018, Appendix A), YAML files and
``--set key=value`` overrides, resolved into one complete dict saved as ``config.yaml``."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from factorvae.data import get_dataset_info
from factorvae.errors import UserError, check_keys
from factorvae.io import MAX_CONFIG_BYTES, read_bounded
from factorvae.loggers import parse_loggers
from factorvae.methods import METHODS, get_method
from factorvae.methods.base import check_number
from factorvae.metrics.suite import parse_metrics, preset_params

#: everything but the model's own options, which come from the method class
DEFAULTS: dict = {
    "model": {"name": "factorvae"},
    "optim": {
        # VAE: Adam 1e-4 (0.9, 0.999); discriminator: Adam 1e-4 (0.5, 0.9) (Appendix A)
        "vae": {"lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8},
        "disc": {"lr": 1e-4, "betas": [0.5, 0.9], "eps": 1e-8},
    },
    # channels: image folders only (1, 3 or auto); recorded after loading so the run knows it
    # scream_path: the background image of scream_dsprites (data/variants.py)
    "data": {"name": "dsprites", "path": None, "cache_dir": None, "channels": None, "scream_path": None},
    "train": {
        "steps": 300_000,
        "batch_size": 64,
        "seed": 0,
        "device": "auto",
        "log_every": 100,
        "ckpt_every": 5000,
        "image_every": 20_000,
        "eval_every": 0,
        "eval_preset": "fast",
        "eval_metrics": None,  # metrics scored every eval_every steps (None: all six)
        # score them in a worker process while training goes on (factorvae.async_eval): auto (on
        # CUDA), true, false (in the training process, which waits)
        "eval_async": "auto",
        "threads": 0,
        # experiment trackers (factorvae.loggers): tensorboard, wandb, mlflow, csv
        "loggers": ["tensorboard"],
        # "true" TC of the aggregate posterior (paper Fig. 7; metrics/tc.py), logged as true_tc
        # beside the discriminator's tc every N steps (0: never; use a multiple of log_every):
        # S Monte Carlo samples, a mixture over M images (0: the whole data set, the exact
        # mixture; a subset is biased by an amount that depends on the model)
        "true_tc_every": 0,
        "true_tc_samples": 1000,
        "true_tc_data": 0,
        # fp32 or bf16 (autocast of forward/backward; weights and optimiser state stay fp32)
        "precision": "fp32",
        # how a group of runs steps (factorvae.group): auto (vmap on CUDA, loop on CPU), vmap, loop,
        # graph (the whole step as one CUDA graph: factorvae.fastpath)
        "group_strategy": "auto",
        "compile": False,  # torch.compile the grouped step (CUDA: CUDA graphs)
    },
}
#: the keys of every optimiser section (``make_adam``)
OPTIM_KEYS = ("lr", "betas", "eps")
#: what differs from DEFAULTS per data set (Kim & Mnih 2018, Appendix A; image channels are the
#: registry's, data.DATASETS): the 3D Shapes,
#: CelebA, 3D Chairs and 3D Faces networks have FC 256 where 2D Shapes has 128 (Table 2), and
#: the discriminator's learning rate, tuned over {1e-4, 1e-5}, is 1e-5 for 3D Shapes, CelebA
#: and 3D Chairs. Explicit config values win over these.
DATASET_DEFAULTS: dict = {
    "shapes3d": {"model": {"arch": {"fc": 256}}, "optim": {"disc": {"lr": 1e-5}}},
    "celeba": {"model": {"arch": {"fc": 256}}, "optim": {"disc": {"lr": 1e-5}}},
    "chairs": {"model": {"arch": {"fc": 256}}, "optim": {"disc": {"lr": 1e-5}}},
    "faces3d": {"model": {"arch": {"fc": 256}}},
    # disentanglement_lib's conv_encoder / deconv_decoder (FC 256) for the data sets only its
    # studies use; Bernoulli likelihood (dlib's reconstruction loss there) is the global default
    "smallnorb": {"model": {"arch": {"fc": 256}}},
    "cars3d": {"model": {"arch": {"fc": 256}}},
    **{f"mpi3d_{v}": {"model": {"arch": {"fc": 256}}} for v in ("toy", "realistic", "real")},
}


def deep_update(base: dict, new: dict) -> dict:
    for k, v in (new or {}).items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (``model:`` twice would
    silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


#: the most values a YAML document may hold once its aliases are expanded (a config has a few
#: hundred; nine levels of ten aliases each, "billion laughs", would be 10^9)
MAX_YAML_VALUES = 1_000_000


def _expanded_size(obj, memo: dict) -> int:
    """Values in ``obj`` counting each alias use again (memoised by identity: linear in the
    document, however far its aliases would expand)."""
    if not isinstance(obj, (dict, list)):
        return 1
    if id(obj) not in memo:
        memo[id(obj)] = 0  # a recursive alias counts once more, never loops
        items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
        memo[id(obj)] = 1 + sum(min(_expanded_size(v, memo), MAX_YAML_VALUES + 1) for v in items)
    return memo[id(obj)]


def parse_yaml(text: str | bytes, where: str):
    """The YAML document ``text`` (safe types only; a key twice in one mapping is refused; at most
    ``MAX_YAML_VALUES`` values once aliases are expanded); any problem is one ``UserError``
    starting with ``where``."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.constructor.ConstructorError as e:
        if "duplicate key" in str(e.problem):
            raise UserError(f"{where}: {e.problem}; give each key once") from None
        raise UserError(f"{where}: not a readable YAML file (ConstructorError)") from None
    except (ValueError, RecursionError, yaml.YAMLError) as e:  # ValueError: not UTF-8 (a binary file)
        raise UserError(f"{where}: not a readable YAML file ({e.__class__.__name__})") from None
    try:
        size = _expanded_size(data, {})
    except RecursionError:
        raise UserError(f"{where}: nested too deeply") from None
    if size > MAX_YAML_VALUES:
        raise UserError(f"{where}: its aliases expand to more than {MAX_YAML_VALUES:,} values; write the values out")
    return data


def read_yaml(path: str | Path) -> dict:
    """A config or spec file: a regular file of at most ``io.MAX_CONFIG_BYTES``, a YAML mapping."""
    path = Path(path)
    data = parse_yaml(read_bounded(path, MAX_CONFIG_BYTES, "config file"), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def parse_set(items: list[str]) -> dict:
    """``["model.gamma=10", "train.batch_size=32"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            raise UserError(f"--set expects key.path=value, got {item!r}")
        value = parse_yaml(raw, f"--set {key}")
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = value
    return out


def resolve(*layers: dict) -> dict:
    """Merge layers over the defaults (those of the layers' data set first) and validate;
    returns the complete config."""
    merged: dict = {}
    for layer in layers:
        deep_update(merged, layer)
    data = merged.get("data")
    name = data.get("name", DEFAULTS["data"]["name"]) if isinstance(data, dict) else None
    cfg = copy.deepcopy(DEFAULTS)
    deep_update(cfg, DATASET_DEFAULTS.get(name, {}) if isinstance(name, str) else {})
    deep_update(cfg, merged)
    check_keys("config section", cfg, DEFAULTS)
    for section in ("train", "data", "model", "optim"):
        if not isinstance(cfg[section], dict):
            raise UserError(f"config section {section!r} must be a mapping, got {cfg[section]!r}")
    check_keys("train option", cfg["train"], DEFAULTS["train"])
    check_keys("data option", cfg["data"], DEFAULTS["data"])
    method = get_method(str(cfg["model"].get("name")))
    cfg["model"] = {"name": method.name, **method.resolve(cfg["model"])}
    t = cfg["train"]
    t["steps"] = check_number("train", "steps", t["steps"], minimum=0, integer=True)
    t["batch_size"] = check_number("train", "batch_size", t["batch_size"], minimum=2, integer=True)
    t["seed"] = check_number("train", "seed", t["seed"], minimum=0, integer=True)
    for key in ("log_every", "ckpt_every", "image_every"):
        t[key] = check_number("train", key, t[key], minimum=1, integer=True)
    t["eval_every"] = check_number("train", "eval_every", t["eval_every"], minimum=0, integer=True)
    try:
        preset_params(str(t["eval_preset"]))
    except UserError as e:
        raise UserError(f"train.eval_preset: {e}") from None
    if t["eval_metrics"] is not None:
        try:
            t["eval_metrics"] = parse_metrics(t["eval_metrics"])
        except UserError as e:
            raise UserError(f"train.eval_metrics: {e}") from None
    if not (t["eval_async"] == "auto" or isinstance(t["eval_async"], bool)):
        raise UserError(f"train.eval_async must be auto, true or false, got {t['eval_async']!r}")
    t["threads"] = check_number("train", "threads", t["threads"], minimum=0, integer=True)
    t["loggers"] = parse_loggers(t["loggers"])
    for key in ("true_tc_every", "true_tc_samples", "true_tc_data"):
        t[key] = check_number("train", key, t[key], minimum=0, integer=True)
    for key, allowed in (("precision", ("fp32", "bf16")), ("group_strategy", ("auto", "vmap", "loop", "graph")),
                         ("compile", (False, True))):
        if t[key] not in allowed:
            raise UserError(f"train.{key} must be one of {', '.join(map(str, allowed))}, got {t[key]!r}")
    info = get_dataset_info(str(cfg["data"]["name"]))
    ch = cfg["data"]["channels"]
    if ch is not None and (ch not in (1, 3, "auto") or info.grid is not None):
        raise UserError(f"data.channels must be 1, 3 or auto, and only for image folders; got {ch!r} for {info.name!r}")
    if info.options and cfg["data"]["scream_path"] is None:
        raise UserError(f"data set {info.name!r} needs data.scream_path: an image to cut its backgrounds from "
                        "(dlib uses Munch's The Scream); --set data.scream_path=FILE")
    if not info.options and cfg["data"]["scream_path"] is not None:
        raise UserError(f"data.scream_path applies to scream_dsprites only, not to {info.name!r}")
    # a section another method reads is allowed (one optim layer may serve several methods)
    check_keys("optim section", cfg["optim"], dict.fromkeys([*DEFAULTS["optim"], *method.optim_sections,
                                                             *(s for m in METHODS.values() for s in m.optim_sections)]))
    for name in method.optim_sections:
        if name in getattr(method, "optim_defaults", {}) and isinstance(cfg["optim"].get(name, {}), dict):
            # the method's defaults under what the layers give (optim.gen.lr alone keeps its betas)
            cfg["optim"][name] = deep_update(copy.deepcopy(method.optim_defaults[name]), cfg["optim"].get(name, {}))
        if not isinstance(cfg["optim"].get(name), dict):
            raise UserError(f"model {method.name!r} needs an optim.{name} section (lr, betas, eps)")
    for name, section in cfg["optim"].items():
        if not isinstance(section, dict):
            raise UserError(f"optim.{name} must be a mapping with keys {', '.join(OPTIM_KEYS)}, got {section!r}")
        check_keys(f"optim.{name} option", section, OPTIM_KEYS)
    method.validate(cfg["model"], cfg["optim"])  # builds nothing (Method.check_options)
    return cfg


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
