"""The Python API a researcher finds from `import factorvae` (exports, help, short reprs, the
README's ten-line snippet), `load_run` on export folders (and the commands that use it),
`eval --dry-run`, `train --threads` and the expected-time line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import factorvae
from factorvae.usecases import train as train_case
from factorvae.errors import UserError

ROOT = Path(__file__).parents[1]
SMALL = ["--set", "model.disc.hidden=32", "--set", "model.disc.layers=2", "--set", "train.log_every=2",
         "--set", "train.image_every=1000", "--set", "train.device=cpu"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from factorvae.cli import main

    out = tmp_path_factory.mktemp("runs") / "toy"
    assert main(["train", "--config", str(ROOT / "configs" / "toy.yaml"), "--steps", "4", "--threads", "1",
                 "--out", str(out), "--no-progress", *SMALL]) == 0
    return out


@pytest.fixture(scope="module")
def toy_export(toy_run, tmp_path_factory):
    from factorvae.export import export_run

    out = tmp_path_factory.mktemp("exports") / "toy"
    export_run(toy_run, out)
    return out


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_snippet_runs(tmp_path, monkeypatch, capsys):
    code = readme_snippet()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    # the same code on the toy discs for 4 steps (dSprites at 4,000 steps is the demo's job)
    small = code.replace('"dsprites"', '"toy"').replace('"steps": 4000', '"steps": 4, "log_every": 2')
    assert small.count('"toy"') == 1 and '"steps": 4,' in small
    monkeypatch.chdir(tmp_path)
    exec(compile(small, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'toy'" in out or "toy discs" in out
    assert (tmp_path / "runs/py/checkpoints/last.pt").is_file()
    assert list((tmp_path / "runs/py/traversals").glob("traversal_ref*.png"))
    summary = json.loads((tmp_path / "runs/py/summary.json").read_text())
    assert summary["active_dims_kl_threshold"] == 0.1 and isinstance(summary["active_dims_kl"], list)


def test_package_exports_are_documented_and_lazy():
    assert factorvae.__doc__ and "load_run" in factorvae.__doc__ and "evaluate" in factorvae.__doc__
    for name in factorvae.__all__:
        obj = getattr(factorvae, name)
        assert callable(obj) and obj.__doc__, name
    assert "dsprites" in factorvae.datasets() and "toy" in factorvae.datasets()
    # importing the package (and so `factorvae --help`) loads no torch
    probe = "import sys, factorvae; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "src")})
    assert r.stdout.strip() == "False", r.stderr


def test_train_is_the_function_beside_the_trainer_module():
    import factorvae.trainer
    from factorvae.trainer import train as loop

    assert callable(factorvae.train) and factorvae.train is not loop
    assert "run directory" in factorvae.train.__doc__
    assert factorvae.trainer.train is loop


def test_reprs_are_one_short_line(toy_run):
    run = factorvae.load_run(toy_run)
    from factorvae.metrics.codes import Codes

    table = Codes.from_points(np.array([[0, 0, 0, 0], [1, 2, 3, 4]]), np.zeros((2, 3)), [3, 4, 16, 16])
    for obj in (run, run.model, run.dataset, table):
        text = repr(obj)
        assert "\n" not in text and len(text) < 300, text
        assert "tensor(" not in text and "Conv2d" not in text, text
    assert repr(run).startswith("Run(factorvae, step 4,") and "3,072 images" in repr(run)
    assert "gamma=10.0" in repr(run.model) and "parameters" in repr(run.model)
    assert "a sample of 2 points" in repr(table)


def test_load_run_takes_an_export_folder(toy_run, toy_export):
    import torch

    a, b = factorvae.load_run(toy_run), factorvae.load_run(toy_export)
    assert b.dir == toy_export and b.step == a.step == 4
    x = a.dataset.images([0, 5, 9])
    with torch.no_grad():
        assert torch.equal(a.model.representation(x), b.model.representation(x))


def test_eval_traverse_encode_take_an_export_folder(cli, toy_export, tmp_path):
    code, out, err = cli("eval", toy_export, "--metrics", "mig", "--preset", "fast", "--set", "mig.num_train=300",
                         "--no-progress")
    assert code == 0, err
    assert "mig" in out and "not written" in out and not (toy_export / "eval.json").exists()
    code, out, err = cli("traverse", toy_export, "--out", tmp_path / "tr", "--references", "1")
    assert code == 0, err
    assert list((tmp_path / "tr").glob("traversal_ref*.png"))
    code, out, err = cli("encode", toy_export, "--out", tmp_path / "c.npz", "--points", "200", "--no-progress")
    assert code == 0, err
    assert np.load(tmp_path / "c.npz")["codes"].shape == (200, 10)


def test_eval_dry_run_prints_the_plan_before_any_data_loads(cli, toy_run, monkeypatch):
    import factorvae.runs

    def no_data(*a, **k):
        raise AssertionError("the data set was loaded")

    monkeypatch.setattr(factorvae.runs, "open_dataset", no_data)
    monkeypatch.setattr(factorvae.runs, "load_dataset", no_data)
    code, out, err = cli("eval", toy_run, "--preset", "fast", "--dry-run")
    assert code == 0, err
    assert "step 4" in err and "preset fast" in err and "grid images to encode" in err
    assert not (toy_run / "eval.json").exists()
    # without --dry-run the plan is printed, then the data set loads
    with pytest.raises(AssertionError, match="data set was loaded"):
        cli("eval", toy_run, "--preset", "fast", "--metrics", "mig")


def test_threads_option(cli, toy_run, tmp_path, monkeypatch):
    assert train_case.pick_threads(cores=2, load=0.1) == 2
    assert train_case.pick_threads(cores=2, load=1.2) == 1
    assert train_case.pick_threads(cores=2, load=9.0) == 1
    assert train_case.pick_threads(cores=16, load=3.0) == 13
    code, out, err = cli("train", "--model", "vae", "--dataset", "toy", "--steps", "2", "--threads", "0",
                         "--out", tmp_path / "bad")
    assert code == 2 and "--threads must be >= 1" in err and not (tmp_path / "bad").exists()
    # a new run with train.threads in its config trains with that many, whatever the process had
    torch.set_num_threads(2)
    code, out, err = cli("train", "--config", ROOT / "configs" / "toy.yaml", "--steps", "1", "--out", tmp_path / "one",
                         "--no-progress", "--set", "train.threads=1", *SMALL)
    assert code == 0, err
    assert torch.get_num_threads() == 1
    # no --threads: picked from the load (here: a busy machine), recorded in the run's config
    monkeypatch.setattr(train_case.os, "getloadavg", lambda: (7.5, 7.0, 7.0))
    code, out, err = cli("train", "--config", ROOT / "configs" / "toy.yaml", "--steps", "2", "--out",
                         tmp_path / "r", "--no-progress", *SMALL)
    assert code == 0, err
    assert "threads: 1" in (tmp_path / "r" / "config.yaml").read_text()
    # a resumed run may change its thread count
    code, out, err = cli("train", "--out", tmp_path / "r", "--resume", "--steps", "3", "--threads", "2",
                         "--no-progress")
    assert code == 0, err
    assert "active dims by KL (mean KL(q(z_j|x) || p(z_j)) > 0.1 nats" in out
    # both counts side by side, each with its definition, and the second one in summary.json
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["active_dims_std_threshold"] == 0.05 and isinstance(summary["active_dims_std"], list)
    assert (f"active dims by the FactorVAE metric's rule (std of the encoder means >= 0.05 over 1,024 images: "
            f"the mean moves with the image): {len(summary['active_dims_std'])} of ") in out


def test_expected_time_line_measures_a_few_steps(toy_run):
    run = factorvae.load_run(toy_run)
    cfg = {**run.config, "train": {**run.config["train"], "steps": 1000}}
    line = train_case.expected_time(cfg, run.dataset, start=0)
    assert line.startswith("expect ~") and "for 1,000 steps" in line and "steps/s measured over 5 steps" in line
    # from 50 remaining steps on the line is printed (issue 24: it vanished under 500); below, timing
    # 7 steps would cost a sizeable part of the run
    assert "for 50 steps" in train_case.expected_time(cfg, run.dataset, start=950)
    assert train_case.expected_time(cfg, run.dataset, start=951) is None


def test_train_rejects_a_missing_out():
    with pytest.raises(TypeError, match="out="):
        factorvae.train({"model": {"name": "vae"}})
    with pytest.raises(UserError, match="not a run directory"):
        factorvae.train(out="/nonexistent/run", resume=True)
