"""What a sweep costs, said before and while it runs (issue 24): the plan line with the projected
total, one line per phase of each trial, per-phase seconds in the results table, and the one-word
quick setting for the analyses."""

from __future__ import annotations

import json

import pytest

from factorvae.errors import UserError
from factorvae.sweep import EVAL_DEFAULTS, read_table, resolve_eval
from factorvae.sweep.spec import QUICK_ANALYSES
from factorvae.sweep.trial import analysis_cost
from test_sweep import micro_spec, write_spec


def test_quick_analyses_are_one_word_and_exact_stays_the_default():
    assert resolve_eval({"preset": "fast"}) == {**EVAL_DEFAULTS, "preset": "fast"}
    assert resolve_eval({"analyses": "exact"}) == EVAL_DEFAULTS
    quick = resolve_eval({"analyses": "quick"})
    assert {k: quick[k] for k in QUICK_ANALYSES} == QUICK_ANALYSES
    assert resolve_eval({"analyses": "quick", "recon_images": 50})["recon_images"] == 50  # explicit keys win
    with pytest.raises(UserError, match="did you mean quick"):
        resolve_eval({"analyses": "quik"})


def test_analysis_cost_follows_the_settings():
    n = 737_280
    exact, quick = analysis_cost(EVAL_DEFAULTS, n), analysis_cost({**EVAL_DEFAULTS, **QUICK_ANALYSES}, n)
    assert set(exact) == {"recon", "true_tc", "log_px"}
    assert "exact mixture of all 737,280" in exact["true_tc"]["what"] and "subset of 10,000" in quick["true_tc"]["what"]
    assert sum(c["seconds"] for c in quick.values()) < sum(c["seconds"] for c in exact.values()) / 10
    # no analysis asked, none costed
    assert analysis_cost({**EVAL_DEFAULTS, "recon_images": 0, "true_tc": None, "log_likelihood": None}, n) == {}


def test_a_sweep_states_its_plan_and_each_phase_and_tabulates_phase_times(tmp_path, cli):
    spec = micro_spec(steps=10, gammas=(), betas=(1,))
    path = write_spec(tmp_path / "s.yaml", spec)
    code, out, err = cli("sweep", path, "--out", tmp_path / "o", "--workers", "0", "--no-progress")
    assert code == 0, err
    plan = [ln for ln in err.splitlines() if ln.startswith("plan")]
    assert "training 10 steps" in plan[0] and "steps/s timed" in plan[0] and "true TC, 100 samples" in plan[0]
    assert "1 trial(s) to run" in plan[-1] and "projected" in plan[-1]
    assert err.index("plan:") < err.index("] training 10 steps")  # the plan comes before the work
    for phase in ("] training 10 steps", "] metrics: preset fast", "] recon: reconstruction error of 256 images",
                  "] true_tc: true TC", "] log_px: log p(x) of 4 images, K = 4", "] evaluated: metrics"):
        assert phase in err, phase
    row = read_table(tmp_path / "o" / "results.csv")[0]
    an = json.loads((tmp_path / "o" / row["dir"] / "analysis.json").read_text())
    assert set(an["seconds"]["analyses"]) == {"recon", "true_tc", "log_px"}
    for col in ("train_seconds", "metrics_seconds", "analysis_seconds", "analysis_seconds.true_tc"):
        assert float(row[col]) >= 0, col
    assert float(row["train_seconds"]) + float(row["metrics_seconds"]) + float(row["analysis_seconds"]) \
        <= float(row["seconds"]) + 0.5


def test_dry_run_says_what_running_would_cost_and_runs_nothing(tmp_path, cli):
    path = write_spec(tmp_path / "s.yaml", micro_spec(steps=10, gammas=(10,), betas=(1,)))
    code, out, err = cli("sweep", path, "--out", tmp_path / "o", "--dry-run", "--set", "eval.analyses=quick")
    assert code == 0, err
    assert "2 trial(s) to run" in out and "projected" in out and "training 10 steps" in out
    assert "true TC, 100 samples over a subset of 500 images" in out  # the spec's explicit keys beat quick's
    assert not (tmp_path / "o" / "trials").exists()


def test_a_plan_that_cannot_be_timed_never_stops_the_sweep(tmp_path, cli, monkeypatch):
    import factorvae.sweep.projection as projection

    def broken(*a, **k):
        raise RuntimeError("no timing today")

    monkeypatch.setattr(projection, "step_rate", broken)
    path = write_spec(tmp_path / "s.yaml", micro_spec(steps=10, gammas=(), betas=(1,)))
    code, out, err = cli("sweep", path, "--out", tmp_path / "o", "--dry-run")
    assert code == 0, err
    assert "plan: not available (RuntimeError: no timing today)" in out and "1 trial(s)" in out
