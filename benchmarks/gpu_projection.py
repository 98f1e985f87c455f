"""Device time of a sweep spec from a GPU check's ``check.json`` (benchmarks/gpu_check.py), and the
largest step count that fits a number of minutes; used by gpu_check.py and reproduce.py.

Model: each method's runs train as one group (``--group-size`` = its trial count); a group step
costs what the check measured for the next measured group size up (an upper bound) under the
chosen path and precision; periodic work per group: one true TC estimate every
``true_tc_every`` steps and one Fig. 5 evaluation every ``eval_every`` (costs measured for a
group of 10), a checkpoint per run every ``ckpt_every``, one final evaluation (the ``paper``
preset's cost). Groups run concurrently (``--workers`` = number of groups) but the projection adds
them up: an upper bound, exact when one group alone fills the GPU.
"""

from __future__ import annotations

import math

import yaml


def spec_groups(spec_path: str) -> tuple[dict, dict[str, int]]:
    """(base train section, {method: number of runs}) of a sweep spec."""
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    seeds = spec.get("seeds", 1)
    seeds = len(seeds) if isinstance(seeds, list) else int(seeds)
    runs = {}
    for m in spec["methods"]:
        grid = m.get("grid") or {}
        points = math.prod(len(v) if isinstance(v, list) else 1 for v in grid.values()) if grid else 1
        runs[m["name"]] = runs.get(m["name"], 0) + points * seeds
    return spec["base"].get("train", {}), runs


def _per_step(check: dict, method: str, runs: int) -> float | None:
    choice = check.get("choice") or {}
    rates = {r["runs"]: r["sec_per_step"] for r in check.get("speed", [])
             if r["method"] == method and r["path"] == choice.get("group_strategy")
             and r["precision"] == choice.get("precision")}
    sizes = sorted(n for n in rates if n >= runs)
    return rates[sizes[0]] if sizes else None


def project(check: dict, spec_path: str, steps: int | None = None) -> dict | None:
    """{"seconds", "per_step_s", "fixed_s", "steps"} of the spec at ``steps`` (default: its own), or
    None when the check lacks a rate for one of its groups."""
    train, runs = spec_groups(spec_path)
    steps = int(steps if steps is not None else train.get("steps", 300_000))
    cost = check.get("periodic", {})
    per_step, fixed = 0.0, 0.0
    for method, n in runs.items():
        sec = _per_step(check, method, n)
        if sec is None:
            return None
        per_step += sec
        per_step += cost.get("tc_group10_s", 0) / train["true_tc_every"] if train.get("true_tc_every") else 0
        blocked = min(cost.get("eval_group10_s", 0), cost.get("eval_async_blocked_group10_s", float("inf")))
        per_step += blocked / train["eval_every"] if train.get("eval_every") else 0  # the path the check chose
        per_step += n * cost.get("ckpt_s", 0) / train.get("ckpt_every", 10_000)
        fixed += cost.get("eval_paper_group10_s", 0)
    return {"seconds": steps * per_step + fixed, "per_step_s": per_step, "fixed_s": fixed, "steps": steps}


def steps_within(check: dict, spec_path: str, minutes: float, unit: int = 1000) -> int | None:
    """The largest multiple of ``unit`` steps (at most the spec's) whose projection fits ``minutes``."""
    p = project(check, spec_path)
    if p is None:
        return None
    fit = (minutes * 60 - p["fixed_s"]) / p["per_step_s"]
    return max(0, min(p["steps"], int(fit // unit * unit)))


