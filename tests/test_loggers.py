"""Experiment trackers (factorvae.loggers): TensorBoard scalars, images and HParams; CSV; W&B in
its real offline mode; MLflow in a file store. Nothing leaves the machine: W&B offline, MLflow
telemetry off, every store under tmp_path."""

from __future__ import annotations

import csv
import importlib.util
import json
import os

import pytest

# MLflow reads this when imported (usage telemetry would go to the network)
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

TINY = {"data": {"name": "toy"},
        "model": {"name": "factorvae", "z_dim": 3, "gamma": 7, "arch": {"channels": [4, 4, 4, 4], "fc": 8},
                  "disc": {"hidden": 16, "layers": 2}},
        "train": {"steps": 6, "batch_size": 8, "log_every": 2, "image_every": 4, "ckpt_every": 3}}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No user settings, no home directory writes; WANDB_MODE unset: the library picks offline."""
    names = {k for k in os.environ if k.startswith("WANDB_")} | {
        "WANDB_MODE", "WANDB_DISABLED", "WANDB_ERROR_REPORTING", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"}
    for k in names:  # set, then unset: whatever the library sets is undone after the test
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    for k in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(k, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def tiny_cfg(**train):
    from factorvae.config import resolve

    return resolve(TINY, {"train": train})


def events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_logger_names_from_flag_and_config(tmp_path, cli):
    from factorvae.config import resolve
    from factorvae.errors import UserError
    from factorvae.loggers import parse_loggers

    assert resolve({})["train"]["loggers"] == ["tensorboard"]
    assert parse_loggers("tensorboard, wandb,csv") == ["tensorboard", "wandb", "csv"]
    assert parse_loggers("none") == [] and parse_loggers([]) == []
    with pytest.raises(UserError, match="unknown logger.*'tensorbard'"):
        resolve({"train": {"loggers": ["tensorbard"]}})
    code, _, err = cli("train", "--dataset", "toy", "--logger", "tensorboard,nope", "--out", tmp_path / "r")
    assert code == 2 and "'nope'" in err and not (tmp_path / "r").exists()


def test_missing_tracker_package_fails_before_anything_is_written(tmp_path, cli, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, _, err = cli("train", "--dataset", "toy", "--logger", "wandb", "--out", tmp_path / "r", "--no-progress")
    assert code == 2 and "pip install 'factorvae[wandb]'" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_training_logs_scalars_images_and_hparams_to_tensorboard_and_csv(tmp_path):
    from factorvae.loggers import log_scores
    from factorvae.runs import RunDir
    from factorvae.trainer import train
    from tensorboard.plugins.hparams import metadata

    run = tmp_path / "run"
    cfg = tiny_cfg(loggers=["tensorboard", "csv"])
    train(cfg, run, progress=False)
    recs = RunDir(run).read_metrics()
    # csv: one row per logged step, a column per scalar, the values of metrics.jsonl
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [r["step"] for r in recs] == [2, 4, 6]
    assert [float(r["train/recon"]) for r in rows] == pytest.approx([r["recon"] for r in recs])
    acc = events(run)
    tags = acc.Tags()
    assert {"train/recon", "train/tc", "score/recon", "score/active_dims_kl"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/recon")] == [2, 4, 6]
    for name in ("images/reconstructions", "images/samples", "images/traversal_ref0"):
        assert [e.step for e in acc.Images(name)] == [4, 6]  # image_every and the end
    # HParams: a session per run with its hyper-parameters (no experiment summary: a sweep's
    # trials with different keys make one table)
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.EXPERIMENT_TAG not in content
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hp = {k: v for k, v in start.hparams.items()}
    assert hp["model.gamma"].number_value == 7 and hp["data.name"].string_value == "toy"
    assert hp["train.seed"].number_value == 0 and "train.device" not in hp
    # a sweep adds each trial's scores after evaluating it, to the same run, nothing purged
    log_scores(run, cfg, 6, {"factor_vae": 0.75, "mig": 0.25})
    acc = events(run)
    assert acc.Scalars("score/factor_vae")[-1].value == pytest.approx(0.75)
    assert [e.step for e in acc.Scalars("train/recon")] == [2, 4, 6]


def test_csv_resume_drops_the_steps_after_the_checkpoint(tmp_path):
    from factorvae.loggers import CsvLogger

    lg = CsvLogger(tmp_path, None)
    for s in range(1, 6):
        lg.scalars({"train/recon": 10.0 - s}, s)
    lg.scalars({"eval/mig": 0.5}, 5)  # same step, new column: merged into the step's row
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv", newline="")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5"] and rows[-1]["eval/mig"] == "0.5"
    lg = CsvLogger(tmp_path, 3)  # killed after step 5, resumed from the checkpoint at step 3
    lg.scalars({"train/recon": 0.0}, 4)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv", newline="")))
    assert [(r["step"], r["train/recon"]) for r in rows] == [("1", "9.0"), ("2", "8.0"), ("3", "7.0"), ("4", "0.0")]


def test_a_failing_tracker_is_dropped_not_the_run(tmp_path):
    from factorvae.loggers import Logger, Loggers

    class Broken(Logger):
        name = "broken"
        calls = 0

        def scalars(self, values, step):
            Broken.calls += 1
            raise OSError("disk full")

    class Fine(Logger):
        name = "fine"
        seen: list = []

        def scalars(self, values, step):
            Fine.seen.append(step)

    lg = Loggers([Broken(), Fine()])
    with pytest.warns(RuntimeWarning, match="broken: scalars failed.*disk full"):
        lg.scalars({"a": 1.0}, 1)
    lg.scalars({"a": 1.0}, 2)
    assert Broken.calls == 1 and Fine.seen == [1, 2]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed (factorvae[wandb])")
def test_wandb_runs_offline_unless_configured(tmp_path, monkeypatch):
    import wandb

    from factorvae.loggers import open_loggers

    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_cfg(loggers=["wandb"])
    with open_loggers(["wandb"], run, cfg) as lg:
        assert lg.loggers[0].run.settings.mode == "offline"
        lg.scalars({"train/recon": 3.5}, 2)
        lg.images({"reconstructions": str(_png(tmp_path))}, 2)
        lg.hparams({"model.gamma": 7}, {"factor_vae": 0.5}, 2)
    wandb.teardown()  # finish() leaves the service writing the run's file; this waits for it
    logs = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    # the run's record (protobuf records in a log file, read by `wandb sync`)
    data = logs[0].read_bytes()
    for key in (b"train/recon", b"images/reconstructions", b"score/factor_vae", b"model.gamma"):
        assert key in data
    assert list(logs[0].parent.glob("files/media/images/images/reconstructions_2_*.png"))
    # a user's own setting wins: disabled writes no run at all
    monkeypatch.setenv("WANDB_MODE", "disabled")
    other = tmp_path / "other"
    other.mkdir()
    with open_loggers(["wandb"], other, cfg) as lg:
        lg.scalars({"train/recon": 1.0}, 1)
    assert not [p for p in (other / "wandb").iterdir() if p.is_dir()]  # no offline-run-*, no run-*


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed (factorvae[mlflow])")
def test_mlflow_writes_a_file_store_in_the_run_dir_unless_configured(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from factorvae.loggers import open_loggers

    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_cfg(loggers=["mlflow"])
    with open_loggers(["mlflow"], run, cfg) as lg:
        lg.scalars({"train/recon": 3.5}, 2)
        lg.scalars({"train/recon": 2.5}, 4)
        lg.images({"reconstructions": str(_png(tmp_path))}, 4)
        lg.hparams({"model.gamma": 7}, {"factor_vae": 0.5}, 4)
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    run_id = (run / "mlruns-run-id").read_text().strip()
    got = client.get_run(run_id)
    assert got.data.params["model.gamma"] == "7" and got.data.params["data.name"] == "toy"
    assert got.data.metrics["score/factor_vae"] == 0.5 and got.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train/recon")] == [(2, 3.5), (4, 2.5)]
    assert [a.path for a in client.list_artifacts(run_id, "images/step_00000004")] == [
        "images/step_00000004/recon.png"]
    # resuming continues the same MLflow run
    with open_loggers(["mlflow"], run, cfg, resume_step=4) as lg:
        lg.scalars({"train/recon": 1.5}, 6)
    assert len(client.get_metric_history(run_id, "train/recon")) == 3
    # MLFLOW_TRACKING_URI set: that store, nothing in the run directory
    store = tmp_path / "store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    other = tmp_path / "other"
    other.mkdir()
    with open_loggers(["mlflow"], other, cfg) as lg:
        lg.scalars({"train/recon": 1.0}, 1)
    assert not (other / "mlruns").exists() and store.is_dir()


def _png(d):
    from PIL import Image

    p = d / "recon.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(p)
    return p


def test_logger_flag_is_allowed_on_resume(tmp_path, cli):
    run = tmp_path / "r"
    args = ["--dataset", "toy", "--set", "model.z_dim=3", "--set", "model.arch.channels=[4,4,4,4]",
            "--set", "model.arch.fc=8", "--set", "model.disc.hidden=16", "--set", "model.disc.layers=2",
            "--set", "train.batch_size=8", "--set", "train.log_every=2"]
    assert cli("train", *args, "--steps", "4", "--logger", "none", "--out", run, "--no-progress")[0] == 0
    assert not (run / "tb").exists() and not (run / "metrics.csv").exists()
    code, _, err = cli("train", "--resume", "--steps", "6", "--logger", "csv", "--out", run, "--no-progress")
    assert code == 0, err
    rows = list(csv.DictReader(open(run / "metrics.csv", newline="")))
    assert [r["step"] for r in rows] == ["6"]  # logged from the resume on
