"""The use-case layer (factorvae.usecases): the Python API and the command line train and
evaluate through the same two functions, so ``factorvae.evaluate(run_dir)`` writes eval.json
under the run's lock exactly as ``factorvae eval`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import factorvae
from factorvae.errors import UserError
from factorvae.io import Busy
from factorvae.usecases.train import train_run

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = {"model": {"name": "betavae", "z_dim": 3, "arch": {"channels": [4, 4, 4, 4], "fc": 8}},
        "data": {"name": "toy"},
        "train": {"steps": 2, "log_every": 1, "ckpt_every": 2, "image_every": 10_000, "threads": 1, "device": "cpu"}}
SCORE = {"preset": "fast", "metrics": "mig", "overrides": {"mig": {"num_train": 300}}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("uc") / "run"
    factorvae.train(TINY, out, progress=False)
    return out


def without_seconds(d: dict) -> dict:
    return {k: without_seconds(v) if isinstance(v, dict) else v for k, v in d.items() if k != "seconds"}


def test_api_evaluate_of_a_run_dir_writes_eval_json_as_the_command(tiny_run, cli):
    r = factorvae.evaluate(tiny_run, **SCORE)
    api = json.loads((tiny_run / "eval.json").read_text())
    assert api == json.loads(json.dumps(r)) and api["run"]["step"] == 2 and "mig" in api
    (tiny_run / "eval.json").unlink()
    code, out, err = cli("eval", tiny_run, "--preset", "fast", "--metrics", "mig", "--set", "mig.num_train=300",
                         "--no-progress")
    assert code == 0, err
    assert without_seconds(json.loads((tiny_run / "eval.json").read_text())) == without_seconds(api)


def test_api_evaluate_of_a_run_in_use_is_refused(tiny_run):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom factorvae.runs import RunDir\n"
         f"with RunDir({str(tiny_run)!r}).lock():\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (tiny_run / "eval.json").read_bytes() if (tiny_run / "eval.json").exists() else None
        with pytest.raises(Busy, match="in use"):
            factorvae.evaluate(tiny_run, **SCORE)
        after = (tiny_run / "eval.json").read_bytes() if (tiny_run / "eval.json").exists() else None
        assert after == before  # nothing written while another process holds the run
    finally:
        holder.kill()
        holder.wait()


def test_api_and_command_train_through_the_same_checks(tiny_run):
    with pytest.raises(UserError, match="already holds a run"):
        factorvae.train(TINY, tiny_run, progress=False)
    with pytest.raises(UserError, match="resumed to fewer"):
        train_run(tiny_run, resume=True, given={"train.steps": 1}, progress=False)
    with pytest.raises(UserError, match="model.seed is not in the saved config"):
        train_run(tiny_run, resume=True, given={"model.seed": 1}, progress=False)


def test_api_evaluate_scores_the_sampled_representation(tiny_run):
    """factorvae.evaluate(..., representation=) reaches a run directory, a loaded run and a
    model: ``both`` = the means' result plus ``sampled`` (one draw z ~ q(z|x) per image)."""
    run = factorvae.load_run(tiny_run)
    mean = factorvae.evaluate(model=run.model, dataset="toy", **SCORE)
    both = factorvae.evaluate(tiny_run, representation="both", **SCORE)
    assert both["settings"]["representation"] == "both"
    assert both["mig"] == mean["mig"]  # the means' scores are unchanged
    sampled = factorvae.evaluate(model=run.model, dataset="toy", representation="sampled", **SCORE)
    assert sampled["settings"]["representation"] == "sampled"
    assert sampled["mig"] == both["sampled"]["mig"] and sampled["mig"] != mean["mig"]
    with pytest.raises(UserError, match="representation"):
        factorvae.evaluate(tiny_run, representation="median", **SCORE)
    with pytest.raises(UserError, match="codes are scored as given"):
        factorvae.evaluate(codes=[[0.0], [1.0]], factors=[[0], [1]], sizes=[2], representation="sampled")
