"""Experiment trackers behind one interface: TensorBoard (the default), Weights & Biases, MLflow
and a CSV file, one or several per run (``train.loggers``, ``factorvae train --logger``).

Every tracker gets the training scalars and the run's images (traversals, reconstructions,
samples) as training writes them, then the run's hyper-parameters and final scores (TensorBoard:
its HParams dashboard; a sweep adds each trial's metric scores after evaluating it). Nothing
leaves the machine unless the user asked for it: W&B runs offline unless ``WANDB_MODE`` is set;
MLflow writes to a file store in the run directory unless ``MLFLOW_TRACKING_URI`` is set. The
run's own record stays ``metrics.jsonl`` (factorvae.runs); trackers are views of it.

A tracker that fails while training (a W&B service crash, a full disk under ``mlruns/``) is
dropped with a warning: a tracker never costs the run.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from factorvae.errors import UserError
from factorvae.io import atomic_write_text

LOGGERS = ("tensorboard", "wandb", "mlflow", "csv")
#: the package each tracker needs, and the extra that installs it
PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
#: config sections whose values are hyper-parameters (train.* only those below)
HPARAM_TRAIN_KEYS = ("steps", "batch_size", "seed")


def parse_loggers(value) -> list[str]:
    """``"tensorboard,wandb"``, a list of names, or ``"none"`` / ``[]`` -> validated names."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise UserError(f"train.loggers must be a list of names from {', '.join(LOGGERS)}; got {value!r}")
    names = [v.strip().lower() for v in value]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in LOGGERS]
    if bad:
        raise UserError(f"unknown logger(s) {', '.join(map(repr, bad))}; choose from {', '.join(LOGGERS)} "
                        "(several: --logger tensorboard,wandb; none: --logger none)")
    return list(dict.fromkeys(names))


def check_loggers(names: list[str]) -> None:
    """Fail before training when a tracker's package is missing (checked without importing it)."""
    for name in names:
        if name in PACKAGES and importlib.util.find_spec(PACKAGES[name][0]) is None:
            raise UserError(f"--logger {name} needs the {PACKAGES[name][0]} package: "
                            f"pip install 'factorvae[{PACKAGES[name][1]}]'")


def hparams_of(cfg: dict) -> dict:
    """The hyper-parameters of a config, flat ("model.gamma": 40): the model, the optimisers,
    the data set and the training length, batch size and seed."""
    out = _flat({k: cfg.get(k) for k in ("model", "optim")})
    out["data.name"] = cfg.get("data", {}).get("name")
    out.update({f"train.{k}": cfg.get("train", {}).get(k) for k in HPARAM_TRAIN_KEYS})
    return {k: v for k, v in out.items() if v is not None}


class Logger:
    """One tracker. ``scalars`` and ``images`` at a training step; ``hparams`` once the run's
    scores are known (``params`` None: scores only, e.g. a sweep's metrics after training)."""

    name = ""

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def images(self, images: dict[str, Path], step: int) -> None: ...

    def hparams(self, params: dict | None, scores: dict[str, float], step: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger(Logger):
    """Events under ``RUN/tb``. Hyper-parameters go in as the HParams plugin's session summaries
    without an experiment summary, so TensorBoard pointed at a sweep's ``trials/`` builds one
    table from every trial (each with its own keys), scores as ``score/*`` scalars."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, resume_step: int | None):
        # a resumed run re-logs the steps after its checkpoint: drop the old ones
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=None if resume_step is None else resume_step + 1)

    def scalars(self, values, step):
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def images(self, images, step):
        for k, path in images.items():
            with Image.open(path) as im:
                self.writer.add_image(k, np.asarray(im.convert("RGB")), step, dataformats="HWC")

    def hparams(self, params, scores, step):
        if params is not None:
            _, start, end = hparams_summaries({k: _hparam_value(v) for k, v in params.items()},
                                              {f"score/{k}": v for k, v in scores.items()})
            self.writer.file_writer.add_summary(start)
            self.writer.file_writer.add_summary(end)
        self.scalars({f"score/{k}": v for k, v in scores.items()}, step)
        self.writer.flush()

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbLogger(Logger):
    """A W&B run in ``RUN/wandb``: offline unless ``WANDB_MODE`` says otherwise (upload later with
    ``wandb sync RUN/wandb/offline-run-*``); project ``$WANDB_PROJECT`` or factorvae. The run id
    is kept in ``RUN/wandb/factorvae-run-id`` so a resumed run continues the same W&B run."""

    name = "wandb"

    def __init__(self, run_dir: Path, cfg: dict, resume_step: int | None):
        if not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_DISABLED"):
            # offline for the whole process, before W&B reads its environment (once): its usage
            # telemetry and error reports otherwise still go out from an offline run
            os.environ["WANDB_MODE"] = "offline"
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        import wandb  # optional dependency: pip install 'factorvae[wandb]'

        self.wandb = wandb
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        id_file = run_dir / "wandb" / "factorvae-run-id"
        run_id = id_file.read_text().strip() if resume_step is not None and id_file.exists() else None
        if run_id is None:
            run_id = os.urandom(6).hex()
            atomic_write_text(id_file, run_id + "\n")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "factorvae", name=run_dir.name, dir=str(run_dir),
            id=run_id, resume="allow", config=_flat(cfg), reinit="create_new",
            mode=_wandb_mode(),
            settings=wandb.Settings(console="off"))  # stdout stays the terminal's (progress bar)

    def scalars(self, values, step):
        self.run.log(dict(values), step=step)

    def images(self, images, step):
        self.run.log({k: self.wandb.Image(str(p)) for k, p in images.items()}, step=step)

    def hparams(self, params, scores, step):
        if params:
            self.run.config.update(params, allow_val_change=True)
        self.run.summary.update({f"score/{k}": v for k, v in scores.items()})

    def close(self):
        self.run.finish()


class MlflowLogger(Logger):
    """An MLflow run: in ``$MLFLOW_TRACKING_URI`` if set, else a file store ``RUN/mlruns``
    (``mlflow ui --backend-store-uri RUN/mlruns``); experiment ``$MLFLOW_EXPERIMENT_NAME`` or
    factorvae. The run id is kept in ``RUN/mlruns-run-id`` for resuming."""

    name = "mlflow"

    def __init__(self, run_dir: Path, cfg: dict, resume_step: int | None):
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # a local store is an offline set-up: no usage telemetry (read when mlflow is
            # imported), and MLflow 3 keeps its file store only behind this switch
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Metric, Param  # optional dependency: pip install 'factorvae[mlflow]'
        from mlflow.tracking import MlflowClient  # optional, as above

        self.Metric, self.Param = Metric, Param
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        try:
            self.client = MlflowClient(tracking_uri=uri)
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "factorvae"
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(name)
            id_file = run_dir / "mlruns-run-id"
            run_id = id_file.read_text().strip() if resume_step is not None and id_file.exists() else None
            if run_id is None:
                self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
                atomic_write_text(id_file, self.run_id + "\n")
                self._params(_flat(cfg))
            else:
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
        except Exception as e:  # noqa: BLE001 - MlflowException, OSError: one line for the user
            raise UserError(f"--logger mlflow: cannot open an MLflow run at {uri} ({type(e).__name__}: "
                            f"{str(e)[:200]})") from None

    def _params(self, params: dict) -> None:
        """Params not logged yet (MLflow refuses to change a logged one)."""
        logged = self.client.get_run(self.run_id).data.params
        new = [self.Param(k, str(v)[:6000]) for k, v in params.items() if k not in logged]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def scalars(self, values, step):
        ms = int(1000 * time.time())
        self.client.log_batch(self.run_id, metrics=[self.Metric(k, float(v), ms, step) for k, v in values.items()])

    def images(self, images, step):
        for p in images.values():
            self.client.log_artifact(self.run_id, str(p), artifact_path=f"images/step_{step:08d}")

    def hparams(self, params, scores, step):
        if params:
            self._params(params)
        self.scalars({f"score/{k}": v for k, v in scores.items()}, step)

    def close(self):
        self.client.set_terminated(self.run_id)


class CsvLogger(Logger):
    """``RUN/metrics.csv``: one row per logged step, one column per scalar (a spreadsheet view
    of metrics.jsonl). Rows are appended; a new column or a second call at the same step
    rewrites the file (atomically)."""

    name = "csv"

    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = run_dir / "metrics.csv"
        self.rows: list[dict] = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if _int(r.get("step")) <= resume_step]
        self.columns = list(dict.fromkeys(["step"] + [k for r in self.rows for k in r]))
        self._rewrite()

    def scalars(self, values, step):
        new_cols = [k for k in values if k not in self.columns]
        self.columns += new_cols
        if self.rows and _int(self.rows[-1].get("step")) == step:
            self.rows[-1].update(values)
            self._rewrite()
            return
        self.rows.append({"step": step, **values})
        if new_cols:
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns).writerow(self.rows[-1])

    def _rewrite(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


class Loggers:
    """The trackers of one run, called as one; a tracker that raises is dropped with a warning."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def _each(self, method: str, *args) -> None:
        for lg in list(self.loggers):
            try:
                getattr(lg, method)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker never costs the run
                warnings.warn(f"logger {lg.name}: {method} failed ({type(e).__name__}: {str(e)[:200]}); "
                              f"no more logging to {lg.name} in this run", RuntimeWarning, stacklevel=3)
                self.loggers.remove(lg)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._each("scalars", values, step)

    def images(self, written: dict, step: int) -> None:
        """The PNGs of ``viz.traversals.write_run_images``'s result, named by kind."""
        self._each("images", run_images(written), step)

    def hparams(self, params: dict | None, scores: dict[str, float], step: int) -> None:
        self._each("hparams", params, {k: float(v) for k, v in scores.items()}, step)

    def finish(self, cfg: dict, summary: dict) -> None:
        """End of training: the run's hyper-parameters with its final losses and number of active
        dimensions as scores (a sweep adds its metric scores later: ``log_scores``); closes."""
        final = {k: v for k, v in (summary.get("final") or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        if summary.get("active_dims_kl") is not None:
            final["active_dims_kl"] = len(summary["active_dims_kl"])
        self.hparams(hparams_of(cfg), final, summary["steps"])
        self.close()

    def flush(self) -> None:
        self._each("flush")

    def close(self) -> None:
        self._each("close")
        self.loggers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_loggers(names: list[str], run_dir: str | Path, cfg: dict, resume_step: int | None = None) -> Loggers:
    """The trackers ``names`` for run directory ``run_dir`` (``resume_step``: continuing a run
    from its checkpoint at that step; None: a new run)."""
    run_dir = Path(run_dir)
    check_loggers(names)
    made: list[Logger] = []
    try:
        for name in names:
            if name == "tensorboard":
                made.append(TensorBoardLogger(run_dir, resume_step))
            elif name == "wandb":
                made.append(WandbLogger(run_dir, cfg, resume_step))
            elif name == "mlflow":
                made.append(MlflowLogger(run_dir, cfg, resume_step))
            elif name == "csv":
                made.append(CsvLogger(run_dir, resume_step))
    except BaseException:
        Loggers(made).close()
        raise
    return Loggers(made)


def log_scores(run_dir: str | Path, cfg: dict, step: int, scores: dict[str, float]) -> None:
    """Add scores computed after training (a sweep trial's metrics) to the run's trackers."""
    names = cfg.get("train", {}).get("loggers") or []
    if names:
        with open_loggers(names, run_dir, cfg, resume_step=step) as loggers:
            loggers.hparams(None, scores, step)


def run_images(written: dict) -> dict[str, Path]:
    """{name: png} from ``write_run_images``'s {kind: path or [paths]}: reconstructions, samples
    and one traversal per reference image (named without the step, so each is one series)."""
    out = {}
    for kind in ("reconstructions", "samples"):
        if written.get(kind):
            out[f"images/{kind}"] = Path(written[kind])
    for i, p in enumerate(written.get("traversals") or []):
        out[f"images/traversal_ref{i}"] = Path(p)
    return out


def _wandb_mode() -> str:
    """The user's WANDB_MODE (or WANDB_DISABLED), else offline. Passed explicitly: W&B reads its
    environment once per process."""
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1", "yes"):
        return "disabled"
    return os.environ.get("WANDB_MODE") or "offline"


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (tree or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _hparam_value(v):
    """TensorBoard's HParams take numbers, strings and booleans only."""
    return v if isinstance(v, (bool, int, float, str)) else json.dumps(v)


def _int(v) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return -1
