"""The GPU window's tooling, on the CPU: the projection behind `make reproduce REPRO_MINUTES=M`
(benchmarks/gpu_projection.py), the check's choice of path and precision (benchmarks/gpu_check.py)
and benchmarks/reproduce.py reading a check's tarball. No GPU figures are involved: the rates
below are made up, the tests check the arithmetic and the plumbing."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_check import choose  # noqa: E402 (benchmarks/ is no package)
from gpu_projection import project, spec_groups, steps_within  # noqa: E402

from factorvae.sweep import load_spec  # noqa: E402

HEADLINE = str(ROOT / "configs" / "sweeps" / "headline_pair.yaml")


def row(method, runs, sec, path="graph", precision="fp32"):
    return {"method": method, "runs": runs, "precision": precision, "path": path, "sec_per_step": sec,
            "model_steps_per_s": runs / sec}


def a_check(fv_sec=2e-3, bv_sec=1e-3):
    return {"device": "made-up card", "choice": {"group_strategy": "graph", "precision": "fp32"},
            "speed": [row("factorvae", 5, fv_sec), row("factorvae", 10, 2 * fv_sec), row("betavae", 10, bv_sec),
                      row("factorvae", 5, fv_sec / 10, path="vmap")],
            "periodic": {"tc_group10_s": 3.0, "eval_group10_s": 2.0, "eval_paper_group10_s": 20.0, "ckpt_s": 0.2}}


@pytest.mark.parametrize("name", ["headline_pair", "paper_core_2dshapes", "smoke"])
def test_the_projection_sees_the_groups_the_sweep_trains(name):
    spec = ROOT / "configs" / "sweeps" / f"{name}.yaml"
    train, runs = spec_groups(str(spec))
    trials = load_spec(spec).trials
    assert runs == Counter(t.method for t in trials)
    assert {t.config["train"]["steps"] for t in trials} == {train["steps"]}


def test_the_budget_gives_the_largest_step_count_that_fits():
    check = a_check()
    train, runs = spec_groups(HEADLINE)
    assert runs == {"betavae": 5, "factorvae": 5}
    for minutes in (2, 5, 9):
        steps = steps_within(check, HEADLINE, minutes)
        assert 0 < steps < train["steps"] and steps % 1000 == 0
        assert project(check, HEADLINE, steps)["seconds"] <= minutes * 60 < project(check, HEADLINE, steps + 1000)["seconds"]
    # the chosen path's rates only (the faster vmap row is not the choice); a faster card fits more
    assert steps_within(a_check(fv_sec=1e-3), HEADLINE, 9) > steps_within(check, HEADLINE, 9)
    assert steps_within(a_check(fv_sec=1e-6, bv_sec=1e-6), HEADLINE, 9) == train["steps"]  # capped at the spec's


def test_no_projection_without_a_rate_for_a_group_that_large():
    check = a_check()
    check["speed"] = [r for r in check["speed"] if r["method"] != "betavae"]
    assert project(check, HEADLINE) is None and steps_within(check, HEADLINE, 9) is None


def test_the_check_uses_the_graph_path_only_when_exact_and_bf16_only_when_much_faster():
    rows = [row("factorvae", 10, 1.0, "vmap"), row("factorvae", 10, 0.5, "graph"), row("factorvae", 1, 0.01, "loop"),
            row("factorvae", 10, 0.8, "vmap", "bf16")]
    assert choose(rows, exact_ok=True) == {"group_strategy": "graph", "precision": "fp32", "measured_runs": 10}
    assert choose(rows, exact_ok=False)["group_strategy"] == "vmap"
    assert choose(rows, exact_ok=False)["precision"] == "fp32"  # bf16 at 1.25x: not enough
    rows.append(row("factorvae", 10, 0.3, "graph", "bf16"))
    assert choose(rows, exact_ok=True)["precision"] == "bf16"  # 1.7x
    assert choose([row("factorvae", 1, 0.01, "loop")], exact_ok=True) is None
    # a pair the other method lacks at that size cannot be projected: not chosen
    rows.append(row("betavae", 10, 0.5, "graph"))
    assert choose(rows, exact_ok=True) == {"group_strategy": "graph", "precision": "fp32", "measured_runs": 10}


def reproduce(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_reproduce_reads_the_checks_tarball_and_states_the_budget(tmp_path):
    data = json.dumps(a_check()).encode()
    with tarfile.open(tmp_path / "gpu_check.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("./check.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    out = reproduce("--spec", HEADLINE, "--out", str(tmp_path / "run"), "--check", str(tmp_path / "gpu_check.tar.gz"),
                    "--minutes", "9", "--dry-run", "--", "--only", "seed0")
    assert out.returncode == 0, out.stderr
    steps = steps_within(a_check(), HEADLINE, 9)
    assert f"train.steps = {steps:,} per run" in out.stdout
    sweep = next(line for line in out.stdout.splitlines() if " sweep " in line)
    for part in ("--workers 2", "--group-size 5", "--set train.group_strategy=graph", "--set train.precision=fp32",
                 f"--set train.steps={steps}", "--only seed0"):
        assert part in sweep
    assert not (tmp_path / "run").exists()  # a dry run runs nothing


@pytest.mark.parametrize("args,message", [(["--check", "missing.json"], "no GPU check"),
                                          (["--minutes", "9"], "needs a GPU check")])
def test_reproduce_refuses_a_missing_check_in_one_line(tmp_path, args, message):
    out = reproduce("--spec", HEADLINE, "--out", str(tmp_path / "run"), *args)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_the_periodic_evaluation_costs_what_blocks_training_less(tmp_path):
    """With train.eval_async, training waits only for the grid's encoding: the check measures
    both, chooses the smaller, the projection counts it and make reproduce sets it."""
    sync = a_check()
    cheap = a_check()
    cheap["periodic"]["eval_async_blocked_group10_s"] = 0.5
    cheap["choice"]["eval_async"] = True
    dear = a_check()
    dear["periodic"]["eval_async_blocked_group10_s"] = 5.0
    assert project(cheap, HEADLINE)["seconds"] < project(sync, HEADLINE)["seconds"] == project(dear, HEADLINE)["seconds"]
    path = tmp_path / "check.json"
    path.write_text(json.dumps(cheap))
    out = reproduce("--spec", HEADLINE, "--out", str(tmp_path / "run"), "--check", str(path), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "--set train.eval_async=true" in next(line for line in out.stdout.splitlines() if " sweep " in line)
