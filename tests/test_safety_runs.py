"""Run directories under stress: one writer at a time (train, --resume, eval, sweep trials),
runs stopped before their first checkpoint or by a signal, strict --resume, and bad options,
full disks and read-only directories that end in one line (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from test_safety_io import SRC, lock_held_elsewhere

TINY = ["--dataset", "toy", "--model", "vae", "--no-progress", "--set", "model.z_dim=3",
        "--set", "model.arch.channels=[4,4,4,4]", "--set", "model.arch.fc=8", "--set", "train.log_every=1",
        "--set", "train.image_every=100000"]


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


def ckpt_step(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 4-step VAE on the toy discs (checkpoints every 2 steps), copied by the tests that change it."""
    from factorvae.cli import main

    out = tmp_path_factory.mktemp("safety") / "run"
    assert main(["train", *TINY, "--steps", "4", "--seed", "2", "--set", "train.ckpt_every=2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(tiny_run, dest)
    return dest


def snapshot(run: Path) -> dict:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


# -- item 3: one writer per run directory -----------------------------------------------------

def test_a_run_in_use_is_refused_naming_its_holder(run_copy, tmp_path, cli):
    before = snapshot(run_copy)
    with lock_held_elsewhere(run_copy / ".lock") as holder:
        for argv in (["train", "--out", run_copy, "--resume", "--steps", "6", "--no-progress"],
                     ["eval", run_copy, "--preset", "fast", "--no-progress"]):
            code, _, err = cli(*argv)
            one_line_error(code, err, f"{run_copy} is in use by pid {holder.pid}")
        fresh = tmp_path / "fresh"
        with lock_held_elsewhere(fresh / ".lock") as other:
            code, _, err = cli("train", *TINY, "--steps", "2", "--out", fresh)
            one_line_error(code, err, f"in use by pid {other.pid}")
        assert not (fresh / "config.yaml").exists()
    assert snapshot(run_copy) == before


def test_a_sweep_rerun_skips_a_trial_another_process_trains(tmp_path):
    from factorvae.sweep import load_spec, run_sweep
    from factorvae.sweep.backends.local import LocalBackend
    from test_sweep import micro_spec

    sweep = load_spec(micro_spec(steps=4, gammas=(), betas=(1,)))
    (trial,) = sweep.trials
    tdir = tmp_path / "s" / "trials" / trial.id
    with lock_held_elsewhere(tdir / ".lock") as holder:  # a worker of a killed driver, still training
        outcome = run_sweep(sweep, tmp_path / "s", LocalBackend(progress=False), progress=False, log=None)
    (res,) = outcome.results
    assert res["status"] == "busy" and res["action"] == "skipped" and f"pid {holder.pid}" in res["error"]
    assert [p.name for p in tdir.iterdir()] == [".lock"]  # nothing written into it


# -- item 5: no dead ends before the first checkpoint; checkpoints on signals -------------------

@pytest.mark.parametrize("resume", [False, True])
def test_a_run_without_checkpoint_restarts_from_step_zero(run_copy, cli, resume):
    shutil.rmtree(run_copy / "checkpoints")  # killed before its first checkpoint
    argv = ["--resume", "--no-progress"] if resume else [*TINY, "--steps", "4", "--seed", "2"]
    code, _, err = cli("train", *argv, "--out", run_copy)
    assert code == 0, err
    assert "holds no checkpoint" in err and "starting it again from step 0" in err
    assert logged_steps(run_copy) == [1, 2, 3, 4] and ckpt_step(run_copy) == 4


def test_sigint_saves_a_checkpoint_between_steps(tmp_path, cli, monkeypatch):
    from factorvae.data.store import ImageData

    calls = []
    sample = ImageData.sample_batch

    def interrupted_at_step_3(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return sample(self, *a, **k)

    monkeypatch.setattr(ImageData, "sample_batch", interrupted_at_step_3)
    # the handler a fresh `factorvae train` process starts with (a library imported by an
    # earlier test may have installed its own, which train leaves alone)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "r"
    try:
        # 40 steps: too short for the expected-time line, whose timing steps would count here
        code, _, err = cli("train", *TINY, "--steps", "40", "--set", "train.ckpt_every=1000", "--out", out)
    finally:
        signal.signal(signal.SIGINT, old)
    assert code == 130 and "SIGINT at step 3" in err and f"factorvae train --out {out} --resume" in err
    assert len(err.strip().splitlines()) == 1 and ckpt_step(out) == 3
    monkeypatch.undo()
    code, _, err = cli("train", "--out", out, "--resume", "--steps", "5", "--no-progress")
    assert code == 0, err
    assert logged_steps(out) == [1, 2, 3, 4, 5] and ckpt_step(out) == 5


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "factorvae", "train", *TINY, "--steps", "100000",
                          "--set", "train.ckpt_every=100000", "--out", str(out)],
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if (out / "metrics.jsonl").exists() and len(logged_steps(out)) >= 2:
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert ckpt_step(out) == logged_steps(out)[-1] >= 2


def test_the_demo_resumes_only_from_a_checkpoint():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    demo = makefile[makefile.index("\ndemo:"):].split("\n\n")[0]
    assert "DEMO_CKPT = $(DEMO_DIR)/checkpoints/last.pt" in makefile
    assert "[ -f $(DEMO_CKPT) ]" in demo and "config.yaml ]" not in demo


# -- item 9: strict --resume --------------------------------------------------------------------

def test_resume_writes_the_config_only_once_the_checkpoint_fits(run_copy, cli):
    cfg = (run_copy / "config.yaml").read_text()
    torch.save({"step": 2, "model_name": "vae", "model": {}, "optim": {}, "rng": {}},
               run_copy / "checkpoints" / "last.pt")
    code, _, err = cli("train", "--out", run_copy, "--resume", "--steps", "8", "--no-progress")
    one_line_error(code, err, "checkpoint does not fit this model")
    assert (run_copy / "config.yaml").read_text() == cfg


def test_resume_to_fewer_steps_than_done_is_refused(run_copy, cli):
    before = snapshot(run_copy)
    code, _, err = cli("train", "--out", run_copy, "--resume", "--steps", "3", "--no-progress")
    one_line_error(code, err, "already trained 4 steps")
    assert snapshot(run_copy) == before


def test_resume_accepts_the_runs_own_options_and_names_a_differing_one(run_copy, cli):
    before = snapshot(run_copy)
    for extra, key in ((["--seed", "3"], "train.seed"), (["--set", "model.z_dim=4"], "model.z_dim"),
                       (["--set", "optim.vae.lr=0.1"], "optim.vae.lr"), (["--dataset", "dsprites"], "data.name")):
        code, _, err = cli("train", "--out", run_copy, "--resume", "--steps", "6", *extra, "--no-progress")
        one_line_error(code, err, key)
    assert snapshot(run_copy) == before
    code, _, err = cli("train", *TINY, "--seed", "2", "--set", "train.ckpt_every=2", "--steps", "6",
                       "--out", run_copy, "--resume")
    assert code == 0, err
    assert logged_steps(run_copy) == [1, 2, 3, 4, 5, 6]


# -- item 10: modes ------------------------------------------------------------------------------

def test_run_files_follow_the_umask(tmp_path, cli):
    old = os.umask(0o002)
    try:
        assert cli("train", *TINY, "--steps", "2", "--out", tmp_path / "r")[0] == 0
    finally:
        os.umask(old)
    run = tmp_path / "r"
    for p in ("config.yaml", "summary.json", "checkpoints/last.pt", "images/samples.png", "images/kl_per_dim.json"):
        assert stat.S_IMODE((run / p).stat().st_mode) == 0o664, p


# -- item 8: bad values, one line ---------------------------------------------------------------

def test_bad_values_end_in_one_line(run_copy, tmp_path, cli):
    code, _, err = cli("train", *TINY, "--steps", "2", "--set", "model.arch.channels=[]", "--out", tmp_path / "a")
    one_line_error(code, err, "channels a non-empty list")
    for key, value in (("model.z_dim", 2**40), ("train.batch_size", 2**45)):  # beyond any address space
        code, _, err = cli("train", *TINY, "--steps", "2", "--set", f"{key}={value}", "--out", tmp_path / key)
        one_line_error(code, err, "out of memory", "train.batch_size")
    (run_copy / "config.yaml").write_bytes(bytes(range(256)) * 4)
    for argv in (["train", "--out", run_copy, "--resume", "--no-progress"], ["eval", run_copy, "--no-progress"],
                 ["traverse", run_copy]):
        code, _, err = cli(*argv)
        one_line_error(code, err, "config.yaml: unreadable")


def test_traverse_rejects_unbounded_options(tiny_run, tmp_path, cli):
    for argv, needle in ((["--limit", "inf"], "--limit must be a finite number > 0"),
                         (["--limit", "nan"], "--limit must be a finite number > 0"),
                         (["--limit", "-1"], "--limit must be a finite number > 0"),
                         (["--references", "100000"], "--references 1..100"),
                         (["--steps", "100000"], "--steps 2..100")):
        code, _, err = cli("traverse", tiny_run, "--out", tmp_path / "t", *argv)
        one_line_error(code, err, needle)
    assert not (tmp_path / "t").exists()


def test_outputs_of_the_wrong_kind(tiny_run, tmp_path, cli):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    grid = tmp_path / "g.npz"
    f = np.array([[i, j] for i in range(2) for j in range(3)])
    np.savez(grid, factors=f, codes=f.astype(float), sizes=np.array([2, 3]))
    code, _, err = cli("metrics", grid, "--metrics", "mig", "--out", tmp_path)
    one_line_error(code, err, f"{tmp_path}: it is a directory")
    code, _, err = cli("traverse", tiny_run, "--out", a_file)
    one_line_error(code, err, f"--out {a_file} exists and is not a directory")
    sweep = tmp_path / "sweep"
    (sweep / "trials" / "x").mkdir(parents=True)
    (sweep / "trials" / "x" / "config.yaml").write_text("model: [")
    code, _, err = cli("report", sweep, "--out", a_file)
    one_line_error(code, err, str(a_file))
    assert a_file.read_text() == "mine"


def test_a_grid_of_two_to_the_forty_points_is_scored_as_a_sample(tmp_path, cli):
    path = tmp_path / "huge.npz"  # 4 rows of a 2^40-point grid: a sample, never a 2^40 table
    np.savez(path, factors=np.zeros((4, 40), int), codes=np.arange(12.0).reshape(4, 3), sizes=np.full(40, 2))
    code, out, err = cli("metrics", path, "--json")
    assert code == 0 and "Traceback" not in err, err
    assert "sample of 4 grid points" in err and json.loads(out)["dci"]["disentanglement"] == 0.0


# -- item 7: full disks and read-only directories -------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """``mount(name, size)``: a small tmpfs (root only; skipped elsewhere), unmounted after."""
    mounted = []

    def mount(name: str, size: str = "8m") -> Path:
        d = tmp_path / name
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True)
        if r.returncode:
            pytest.skip("mounting a tmpfs needs root")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(d: Path, leave: int = 0) -> None:
    """Fill the file system of ``d`` but ``leave`` bytes."""
    (d / "filler").unlink(missing_ok=True)
    st = os.statvfs(d)
    with open(d / "filler", "wb", buffering=0) as f:
        try:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
            while not leave:
                f.write(b"\0" * 65536)
        except OSError:
            pass


def read_only(d: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)


def test_full_disk_is_one_line_for_train_resume_and_eval(tiny_run, tmpfs, cli, monkeypatch):
    disk = tmpfs("disk")
    run = disk / "run"
    shutil.copytree(tiny_run, run)
    (run / "eval.json").unlink(missing_ok=True)
    fill(disk)
    code, _, err = cli("train", *TINY, "--steps", "2", "--out", disk / "new")
    one_line_error(code, err, "ENOSPC", str(disk / "new"))
    code, _, err = cli("train", "--out", run, "--resume", "--steps", "6", "--no-progress")
    one_line_error(code, err, "ENOSPC", str(run))
    import factorvae.metrics.suite

    def scored(*a, **k):
        raise AssertionError("scored before checking that eval.json can be written")

    monkeypatch.setattr(factorvae.metrics.suite, "evaluate_model", scored)
    code, _, err = cli("eval", run, "--preset", "fast", "--no-progress")
    one_line_error(code, err, "ENOSPC", str(run / "eval.json"))
    monkeypatch.undo()
    assert not (run / "eval.json").exists()
    from factorvae.config import resolve
    from factorvae.errors import UserError
    from factorvae.runs import RunDir, build_model

    ckpt = (run / "checkpoints" / "last.pt").read_bytes()
    cfg = RunDir(run).read_config()
    cfg["model"]["arch"]["fc"] = 2048  # one 512 KiB weight: a single write that only partly fits
    model, _ = build_model(resolve(cfg), 1, torch.device("cpu"))
    fill(disk, leave=40_000)  # torch.save straight to the file said "unexpected pos ..." here
    with pytest.raises(UserError, match="ENOSPC"):
        RunDir(run).save_checkpoint(model, 9, {})
    assert (run / "checkpoints" / "last.pt").read_bytes() == ckpt
    assert not [p for p in run.rglob("*.tmp")]


def test_read_only_directories_are_one_line_for_every_command(tiny_run, tmp_path, tmpfs, cli):
    from test_sweep import micro_spec, write_spec

    ro = tmpfs("ro")
    run = ro / "run"
    shutil.copytree(tiny_run, run)
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("L", (64, 64), 40 * i).save(images / f"{i}.png")
    grid = tmp_path / "g.npz"
    f = np.array([[i, j] for i in range(2) for j in range(3)])
    np.savez(grid, factors=f, codes=f.astype(float), sizes=np.array([2, 3]))
    sweep = tmp_path / "sweep"
    (sweep / "trials" / "x").mkdir(parents=True)
    (sweep / "trials" / "x" / "config.yaml").write_text("model: [")
    spec = write_spec(tmp_path / "spec.yaml", micro_spec(steps=2, gammas=()))
    read_only(ro)
    before = snapshot(run)
    for argv in (["train", *TINY, "--steps", "2", "--out", ro / "new"],
                 ["train", "--out", run, "--resume", "--steps", "6", "--no-progress"],
                 ["eval", run, "--preset", "fast", "--no-progress"],
                 ["traverse", run],
                 ["traverse", tiny_run, "--out", ro / "t"],
                 ["metrics", grid, "--metrics", "mig", "--out", ro / "m.json"],
                 ["report", sweep, "--out", ro / "rep"],
                 ["data", "generate", "folder", "--data-path", images, "--cache-dir", ro / "cache", "--no-progress"],
                 ["sweep", spec, "--out", ro / "s", "--no-progress"]):
        code, _, err = cli(*argv)
        one_line_error(code, err, "Read-only file system", str(ro))
    assert snapshot(run) == before


def test_stale_temps_in_a_run_are_removed_on_the_next_run(run_copy, cli):
    from factorvae.io import HOST

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    stale = run_copy / "checkpoints" / f".last.pt~{HOST}~{p.pid}~x1.tmp"
    live = run_copy / "checkpoints" / f".last.pt~{HOST}~{os.getpid()}~x2.tmp"
    stale.write_bytes(b"\0" * 1000)
    live.write_bytes(b"\0" * 1000)
    code, _, err = cli("train", "--out", run_copy, "--resume", "--steps", "4", "--no-progress")
    assert code == 0, err
    assert not stale.exists() and live.exists()
    assert yaml.safe_load((run_copy / "config.yaml").read_text())["train"]["steps"] == 4
