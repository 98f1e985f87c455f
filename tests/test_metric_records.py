"""One record per metric (metrics/record.py, metrics/registry.py): the suite, the plan, the
report, export and the CLI read every metric fact from the records, so a metric added to the
registry reaches all of them with nothing else changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factorvae.data import require_grid
from factorvae.errors import UserError
from factorvae.metrics import plan, suite
from factorvae.metrics.record import PRESET_NAMES, Metric
from factorvae.metrics.registry import RECORDS

PARITY = Path(__file__).parent / "fixtures" / "parity"
SRC = Path(__file__).resolve().parents[1] / "src"

# A new metric registered before anything reads the registry: the way a new module's one line
# in metrics/registry.py enters. Then every consumer is asked about it.
ADD_ONE = r"""
import json, sys
import numpy as np
from factorvae.metrics.record import Metric
from factorvae.metrics import registry

def spread(codes, rng, num_train=100):
    _, z = codes.sample(num_train, rng)
    return {"spread": float(z.std()), "extra": 1}

registry.RECORDS["spread"] = Metric(
    name="spread", function=spread, keys=("spread",), headline="spread", label="Code spread",
    presets={"dlib": {"num_train": 40}, "paper": {"num_train": 40}, "fast": {"num_train": 20}},
    seconds={"dlib": 1.0, "paper": 1.0, "fast": 0.5}, default=False)

from factorvae.commands.metrics import list_metrics
from factorvae.data import require_grid
from factorvae.export import model_card
from factorvae.metrics import plan, suite
from factorvae.metrics.api import load_codes
from factorvae.report import stats

codes = load_codes(sys.argv[1])
every = suite.parse_metrics("all")  # names only: scoring all 14 costs minutes of GBTs
default = suite.parse_metrics(None)
named = suite.evaluate(codes, metrics="spread,mig", preset="dlib")
desc = plan.describe("fast", "spread", grid=require_grid("dsprites"))
card = model_card({"model": {"name": "vae"}, "data": {"name": "dsprites"}, "optim": {}, "train": {},
                   "export": {"step": 1, "networks": ["encoder"]}}, named, False)
print(json.dumps({
    "every": every, "default": default,
    "named_params": named["settings"]["params"]["spread"],
    "table": suite.format_table(named), "headline": suite.headline(named),
    "draws": desc["draws"], "seconds": desc["expected_seconds"],
    "nice": stats.NICE.get("spread.spread"), "columns": stats.main_score_columns([{"spread.spread": 1.0}]),
    "card": "| spread.spread |" in card, "list": list_metrics(),
}))
"""


def test_a_metric_added_to_the_registry_reaches_suite_plan_report_export_and_cli():
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", ADD_ONE, str(PARITY / "i_perfect.npz")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert "spread" in r["every"] and "spread" not in r["default"]  # "all" = every record; None = default ones
    assert set(r["default"]) == {n for n, m in RECORDS.items() if m.default}
    assert r["named_params"] == {"num_train": 40}  # its dlib preset
    assert "spread.spread" in r["table"] and r["headline"]["spread"] >= 0
    assert r["draws"] == {"spread": 20}  # the default draws: num_train of its fast preset
    assert r["seconds"] is not None and r["seconds"] >= 0  # its measured seconds feed the estimate
    assert r["nice"] == "Code spread" and r["columns"] == ["spread.spread"]
    assert r["card"]
    assert "spread: Code spread" in r["list"] and "keys: spread; headline: spread" in r["list"]


def test_consumers_read_the_records():
    for name, rec in RECORDS.items():
        for p in PRESET_NAMES:
            assert suite.preset_params(p)[name] == dict(rec.presets[p])
        assert (name in suite.FIXED_FACTOR_METRICS) == rec.fixes_factor
    grid_plan = plan.describe("fast", None, grid=require_grid("dsprites"))
    assert grid_plan["metrics"] == [n for n, r in RECORDS.items() if r.default]


def test_a_record_must_give_every_preset_and_a_reported_headline():
    def f(codes, rng):
        return {"a": 1.0}

    with pytest.raises(ValueError, match="fast"):
        Metric(name="x", function=f, keys=("a",), headline="a", label="x", presets={"dlib": {}, "paper": {}})
    with pytest.raises(ValueError, match="headline"):
        Metric(name="x", function=f, keys=("a",), headline="b", label="x",
               presets={p: {} for p in PRESET_NAMES})


def test_metrics_list_and_a_missing_codes_file(cli):
    code, out, err = cli("metrics", "--list")
    assert code == 0, err
    for name, rec in RECORDS.items():
        assert f"{name}: {rec.label}" in out and f"headline: {rec.headline}" in out
    code, out, err = cli("metrics")
    assert code == 2 and "CODES.npz" in err
    with pytest.raises(UserError, match="unknown metric"):
        suite.parse_metrics("nope")


def test_every_metric_has_a_measured_cost_so_every_plan_gives_a_time():
    """Each record's ``seconds`` (benchmarks/eval_cost.py) per preset: the plan printed before
    scoring gives an expected time for any set of metrics, the new families included."""
    missing = [(n, p) for n, r in RECORDS.items() for p in PRESET_NAMES if r.seconds.get(p) is None]
    assert not missing
    grid = require_grid("dsprites")
    default, every = plan.describe("dlib", None, grid=grid), plan.describe("dlib", "all", grid=grid)
    assert every["expected_seconds"] > default["expected_seconds"] > 0
    assert "expected ~" in plan.format_plan(every)
