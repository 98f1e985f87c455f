"""The run directory, the unit of record; ``RunDir`` is its one reader and writer:

    config.yaml       complete, resolved config
    metrics.jsonl     one JSON object per logged step
    checkpoints/      last.pt: model, optimisers, RNG states, step (atomic; weights_only load)
    tb/               TensorBoard events
    images/           reconstructions, samples, traversals (PNG + GIF), kl_per_dim.json
    eval.json         metric scores (``factorvae eval``, the sweep): the suite's result dict
    summary.json      final losses, active dimensions, where the images are
    .lock             held (flock) by the one process writing the run: train, eval, a sweep trial

Every file but metrics.jsonl (appended line by line) is written atomically (factorvae.io).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from factorvae import pretrained
from factorvae.config import dump, parse_yaml, resolve
from factorvae.data import image_channels, load_dataset
from factorvae.data.images import as_model_input
from factorvae.errors import UserError
from factorvae.io import (MAX_CONFIG_BYTES, atomic_write_bytes, atomic_write_json, atomic_write_text, check_memory,
                          check_out_dir, clean_stale_temps, exclusive_lock, load_json, read_bounded, read_json,
                          write_error)
from factorvae.methods import get_method
from factorvae.weights import MEMORY_HINT, check_checkpoint, check_finite, check_fits, memory_guard


def pick_device(name: str = "auto") -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but CUDA is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device {name!r}")
    return dev


#: what a run directory holds (RunDir, the trackers, a sweep trial): a folder with anything
#: else is not a run, and ``train`` does not write into it
RUN_ENTRIES = {"config.yaml", "metrics.jsonl", "checkpoints", "tb", "images", "summary.json", "eval.json",
               "data.json", "metrics.csv", "wandb", "mlruns", "trial.json", "analysis.json", "error.txt"}


class RunDir:
    def __init__(self, path: str | Path):
        if isinstance(path, str) and not path.strip():  # Path("") is the working directory
            raise UserError("the run directory is an empty path; name a folder")
        self.path = Path(path)
        self._resumed_at: int | None = None  # set on resume: marks the next loss record

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    ckpt_path = property(lambda self: self.path / "checkpoints" / "last.pt")
    images = property(lambda self: self.path / "images")
    tb = property(lambda self: self.path / "tb")

    summary_path = property(lambda self: self.path / "summary.json")
    eval_path = property(lambda self: self.path / "eval.json")

    def exists(self) -> bool:
        return self.config_path.exists()

    def check_new_or_ours(self, flag: str = "--out", resume: bool = False) -> None:
        """Refuse to start a run in a folder that is neither new, empty, nor a run holding only
        run files (``RUN_ENTRIES``): the user's ``summary.json`` is not overwritten, ``/`` not
        written. A run to resume may hold other files too (``traverse --out RUN/traversals``); a
        sweep's trial directory is the sweep's own (``usecases.train.train_run(out_flag=None)``)."""
        check_out_dir(self.path, lambda _, names: "config.yaml" in names and (resume or set(names) <= RUN_ENTRIES),
                      "a run directory of run files only", flag)

    def lock(self):
        """Context manager: the run's exclusive lock (factorvae.io.exclusive_lock), so two
        processes never write one run; raises ``Busy`` naming the holder."""
        return exclusive_lock(self.path / ".lock", f"run directory {self.path}")

    def clean_temps(self) -> None:
        """Remove temporary files that killed writers left in the run (factorvae.io)."""
        for d in (self.path, self.ckpt_path.parent, self.images):
            clean_stale_temps(d)

    def clear_progress(self) -> None:
        """Forget a run that never reached a checkpoint (it restarts from step 0): its metrics,
        TensorBoard events, images, summary and scores."""
        for p in (self.metrics_path, self.summary_path, self.eval_path):
            p.unlink(missing_ok=True)
        for d in (self.tb, self.images):
            shutil.rmtree(d, ignore_errors=True)

    # -- JSON records (None when missing or unreadable) ---------------------------------------
    def read_summary(self) -> dict | None:
        return _mapping(read_json(self.summary_path))

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary)

    def read_eval(self) -> dict | None:
        return _mapping(read_json(self.eval_path))

    def write_eval(self, results: dict, config: dict, step: int) -> dict:
        """``eval.json``, one schema for ``factorvae eval`` and the sweep: the metric suite's
        result dict (factorvae.metrics.suite) plus ``run``: which run and step were scored."""
        results = {**results, "run": {"dir": str(self.path), "step": step, "model": config["model"]["name"],
                                      "data": config["data"]["name"]}}
        atomic_write_json(self.eval_path, results)
        return results

    def read_config(self) -> dict:
        if not self.config_path.exists():
            raise UserError(f"{self.path} is not a run directory (no config.yaml)")
        raw = parse_yaml(read_bounded(self.config_path, MAX_CONFIG_BYTES, "config file"), f"{self.config_path}: unreadable")
        if not isinstance(raw, dict):
            raise UserError(f"{self.config_path}: not a config mapping")
        return resolve(raw)

    def write_config(self, cfg: dict) -> None:
        atomic_write_text(self.config_path, dump(cfg))

    # -- metrics.jsonl ----------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        """Append one record; the first loss record after a resume (``truncate_metrics``) gets
        ``resumed_from``: its losses average only the steps since that step, not a whole window."""
        at = self._resumed_at
        if at is not None and "steps_per_s" in record:
            record = {**record, "resumed_from": at}
            self._resumed_at = None
        try:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise write_error(self.metrics_path, e) from None

    def read_metrics(self) -> list[dict]:
        """The logged records; lines that are not a JSON object (cut by a kill mid-write) skip."""
        try:
            lines = self.metrics_path.read_text().splitlines()
        except OSError:  # missing or unreadable: nothing logged
            return []
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def last_step(self) -> int | None:
        """The highest step logged (None: nothing logged); not the last record's, since scores
        from an asynchronous evaluation (``train.eval_async``) arrive after later steps' records."""
        step = None
        for rec in self.read_metrics():
            try:
                at = int(rec["step"])
            except (KeyError, ValueError, TypeError):
                continue
            step = at if step is None else max(step, at)
        return step

    def truncate_metrics(self, step: int) -> None:
        """Drop records after ``step`` (a resumed run re-logs them)."""
        self._resumed_at = int(step)
        if not self.metrics_path.exists():
            return
        keep = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        atomic_write_text(self.metrics_path, text)

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, model, step: int, generators: dict[str, torch.Generator]) -> None:
        state = {
            "step": int(step),
            "model_name": model.name,
            "model": model.state_dict(),
            "optim": {k: o.state_dict() for k, o in model.optimizers().items()},
            "rng": {k: g.get_state() for k, g in generators.items()},
        }
        noise = model.noise_checkpoint(step)  # mid-block: where the block's noise was drawn from
        if noise is not None:
            state["noise_rng"] = noise
        # serialised in memory first: torch.save straight to a file turns a full disk into a
        # RuntimeError ("unexpected pos ..."); a plain write names ENOSPC and the path
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.ckpt_path, buf.getbuffer())

    def checkpoint_readable(self) -> bool:
        """Cheap check of the checkpoint (a zip file): a truncated one has no central directory."""
        try:
            with zipfile.ZipFile(self.ckpt_path) as z:
                return bool(z.namelist())
        except (OSError, zipfile.BadZipFile, ValueError):
            return False

    def load_checkpoint(self, map_location="cpu") -> dict:
        path = self.ckpt_path
        if not path.exists():
            raise UserError(f"{self.path}: no checkpoint yet ({path} missing; training writes one every "
                            "train.ckpt_every steps): nothing to load, score or resume")
        try:
            # weights_only: tensors and plain containers only, never arbitrary objects
            with memory_guard(f"loading {path}"):
                state = torch.load(path, map_location=map_location, weights_only=True)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"{path}: unreadable checkpoint ({type(e).__name__}); it may be truncated or not ours") from None
        check_checkpoint(state, path)
        return state

    @staticmethod
    def restore(model, state: dict, generators: dict[str, torch.Generator]) -> int:
        if state.get("model_name") != model.name:
            raise UserError(f"checkpoint does not fit this model: it is of model {state.get('model_name')!r}, "
                            f"this run's is {model.name!r}")
        check_fits(state.get("model"), model.state_dict(), "checkpoint")
        try:
            model.load_state_dict(state["model"])
            for k, opt in model.optimizers().items():
                opt.load_state_dict(state["optim"][k])
            for k, g in generators.items():
                g.set_state(state["rng"][k].cpu())  # generator states are CPU byte tensors
            model.resume_noise(int(state["step"]), state.get("noise_rng"))
            return int(state["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            detail = " ".join(str(e).split())[:200]  # one line: load_state_dict lists keys on many
            raise UserError(f"checkpoint does not fit this model ({type(e).__name__}: {detail})") from None


@dataclass(repr=False)
class Run:
    """A trained model (eval mode) with its config, data set (None if not loaded), the step
    it was saved at and where it came from (run directory, export or pretrained folder)."""

    dir: Path
    config: dict
    model: torch.nn.Module
    dataset: object
    step: int

    def __repr__(self) -> str:
        data = self.config.get("data", {}).get("name", "?") if self.dataset is None else repr(self.dataset)
        return f"Run({self.config['model']['name']}, step {self.step:,}, data {data}, dir '{self.dir}')"

    def encode(self, images, batch_size: int = 256):
        """The model's representation (encoder means for the VAEs) of a user's images, as numpy
        (N, codes). The data set's own preprocessing is applied (``data.images.as_model_input``):
        its channels (greyscale or RGB), 64x64 (largest centred square, Lanczos), pixel values
        scaled to [0, 1]. ``images``: a path (file or folder), a PIL image, a numpy array or
        tensor (uint8, or floats in [0, 1]; a stack of 3 or 4 greyscale images must be
        (N, 1, H, W) or a list: (3, H, W) reads as one RGB image), or a list of these."""
        channels = image_channels(self.config["data"]["name"], self.config["data"].get("channels"))
        x = torch.from_numpy(as_model_input(images, channels))
        device = next(self.model.parameters()).device
        out = []
        with torch.no_grad():
            for a in range(0, len(x), batch_size):
                out.append(self.model.representation(x[a:a + batch_size].to(device).float().div_(255)).cpu())
        return torch.cat(out).numpy()


def lock_for_output(out: str | Path):
    """The lock of the run directory that output folder ``out`` is (or whose ``images/`` it is),
    so nothing is written into a run another process trains; a null context elsewhere."""
    out = Path(out)
    for d in (out, out.parent):
        if RunDir(d).exists() and (d / "checkpoints").is_dir():
            return RunDir(d).lock()
    return contextlib.nullcontext()


def build_model(cfg: dict, in_channels: int, device: torch.device, seed: int | None = None):
    """The config's method, seeded; its size is measured first (on the meta device: no memory)
    and refused when the machine cannot hold its weights (``io.check_memory``)."""
    method = get_method(cfg["model"]["name"])
    with memory_guard():
        with torch.device("meta"):
            numel = sum(t.numel() for t in method(cfg["model"], cfg["optim"], in_channels, torch.Generator()).state_dict().values())
    check_memory(4 * numel, f"model {method.name} ({numel:,} weights)", MEMORY_HINT)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg["train"]["seed"] if seed is None else seed)
    # Parameters are initialised from torch's global RNG; seed it so a seed means one model.
    torch.manual_seed(cfg["train"]["seed"])
    with memory_guard():
        model = method(cfg["model"], cfg["optim"], in_channels, gen).to(device)
    return model, gen


def load_run(run_dir: str | Path, device: str = "cpu", load_data: bool = True, progress: bool = False) -> Run:
    """A trained model (eval mode), its data set and config, from a run directory (its last
    checkpoint), an export folder (``factorvae export``) or the name of a pretrained model
    (``factorvae pretrained``; its weights' checksum is checked first)."""
    run_dir = pretrained.locate(run_dir)  # a pretrained name -> its verified export folder
    if is_export(run_dir) or (not RunDir(run_dir).exists() and (Path(run_dir) / EXPORT_CONFIG).exists()):
        # a damaged export's config.json is named as such, not "not a run directory"
        return load_exported(run_dir, device, load_data, progress)
    rd = RunDir(run_dir)
    cfg = rd.read_config()
    dev = pick_device(device)
    dataset = None
    if load_data:
        dataset = open_dataset(cfg, progress)
        channels = dataset.channels
    else:
        channels = image_channels(cfg["data"]["name"], cfg["data"].get("channels"))
    model, gen = build_model(cfg, channels, dev)
    state = rd.load_checkpoint(map_location=dev)
    try:
        step = RunDir.restore(model, state, {})
    except UserError as e:
        raise UserError(f"{rd.ckpt_path}: {e}") from None
    model.eval()
    return Run(rd.path, cfg, model, dataset, step)


# -- exports (factorvae.export writes them): the reading side, here so load_run can dispatch --
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"
#: the largest export weights file read (the paper's encoder and decoder: a few MB)
MAX_WEIGHTS_BYTES = 4 << 30
#: the networks an export keeps, per method (state-dict prefixes): the encoder and decoder; for
#: InfoWGAN-GP the generator and the critic, whose Q head is its encoder
EXPORT_KEEP = {"infowgan_gp": ("generator_net.", "critic.")}


def kept_prefixes(model_name: str) -> tuple[str, ...]:
    return EXPORT_KEEP.get(model_name, ("encoder.", "decoder."))


def is_export(path: str | Path) -> bool:
    """Whether ``path`` holds an export (its config.json carries the "export" record)."""
    raw = read_json(Path(path) / EXPORT_CONFIG)
    return isinstance(raw, dict) and "export" in raw


def load_exported(path: str | Path, device: str = "cpu", load_data: bool = True, progress: bool = False) -> Run:
    """The model of an export folder (eval mode; networks not exported keep their initial
    values), with its config and, if ``load_data``, its data set: what ``load_run`` returns
    for a run directory. Reads JSON and safetensors only: nothing is unpickled."""
    path = Path(path)
    raw = load_json(path / EXPORT_CONFIG, "export config") if (path / EXPORT_CONFIG).exists() else None
    if not isinstance(raw, dict) or "export" not in raw:
        raise UserError(f"{path} is not an export folder ({EXPORT_CONFIG} with an 'export' record missing)")
    info = raw.pop("export")
    if isinstance(raw.get("data"), dict):  # the exporter's cache folder is not this machine's to write into
        raw["data"]["cache_dir"] = None
    cfg = resolve(raw)
    if not (path / EXPORT_WEIGHTS).exists():
        raise UserError(f"{path}: {EXPORT_WEIGHTS} missing")
    try:
        with memory_guard(f"loading {path / EXPORT_WEIGHTS}"):
            state = st_load(read_bounded(path / EXPORT_WEIGHTS, MAX_WEIGHTS_BYTES, "export weights"))
    except (OSError, SafetensorError) as e:
        raise UserError(f"{path / EXPORT_WEIGHTS}: unreadable ({type(e).__name__}); it may be truncated") from None
    dataset = open_dataset(cfg, progress) if load_data else None
    channels = dataset.channels if load_data else image_channels(cfg["data"]["name"], cfg["data"].get("channels"))
    model, _ = build_model(cfg, channels, pick_device(device))
    wanted = {k: v for k, v in model.state_dict().items() if k.startswith(kept_prefixes(model.name))}
    check_fits(state, wanted, f"{path / EXPORT_WEIGHTS} (model {model.name})")
    check_finite(list(state.items()), path / EXPORT_WEIGHTS)
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise UserError(f"{path / EXPORT_WEIGHTS} does not fit model {model.name}: {str(e)[:200]}") from None
    model.eval()
    step = info.get("step", 0) if isinstance(info, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"{path / EXPORT_CONFIG}: export.step {step!r} is not a whole number >= 0")
    return Run(path, cfg, model, dataset, step)


def _mapping(obj) -> dict | None:
    return obj if isinstance(obj, dict) else None


def open_dataset(cfg: dict, progress: bool = False):
    """The data set of a resolved config: the one call train, eval and the sweep load data with."""
    d = cfg["data"]
    return load_dataset(d["name"], d.get("path"), d.get("cache_dir"), progress=progress, channels=d.get("channels"),
                        scream_path=d.get("scream_path"))
