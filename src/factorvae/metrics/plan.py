"""What an evaluation will do before it starts: metrics, grid points each draws, images to
encode, expected time and memory (``describe``; ``factorvae metrics`` and ``eval`` print it).

The time and memory figures are measurements (``benchmarks/eval_presets.py``): dSprites, the
paper's FactorVAE networks (10 latents), one CPU thread on a shared 2-core machine. For other
grids they are scaled: encoding time with the number of images to encode, the metrics' own
time with the total number of factor classes (DCI fits one tree per class and boosting
stage), memory with the size of the data set's images. Estimates, not promises: a busy
machine is slower, a GPU encodes far faster.
"""

from __future__ import annotations

import math

from factorvae.metrics import suite
from factorvae.metrics.codes import Codes
from factorvae.metrics.registry import RECORDS

#: CPU seconds of one idle core (benchmarks/eval_cost.py; end to end checked with
#: benchmarks/eval_presets.py; docs/metrics.md, "Cost of a preset")
MEASURED = {
    "where": "dSprites, paper FactorVAE networks, CPU seconds of one core",
    "encode_images_per_s": 2430,  # 0.411 ms of CPU per image, batches of 256
    "classes": 113,  # dSprites' scored factors: 3 + 6 + 40 + 32 + 32
    "images_mb": 737_280 * 64 * 64 / 2**20,  # its uint8 images, held in memory by `eval`
    # per preset: the peak resident memory (MiB) of a whole `eval` process, data set included
    # (fast: measured end to end; dlib, paper: fast's plus the 162 MiB their larger draws added
    # in eval_cost.py). Each metric's own compute time is its record's ``seconds``.
    "presets": {"fast": {"peak_memory_mb": 3440}, "dlib": {"peak_memory_mb": 3600}, "paper": {"peak_memory_mb": 3600}},
}


def describe(preset: str = "dlib", metrics=None, codes: Codes | None = None, grid=None,
             overrides: dict | None = None, channels: int = 1) -> dict:
    """What ``evaluate`` will do: the metrics, the grid points each draws, the images a model
    must encode (each grid point at most once: the expected number of distinct points among
    the draws, every draw being uniform over the grid) and the expected seconds and memory
    (each metric's record and MEASURED; ``None`` where not measured). Give ``codes`` (arrays: nothing to encode)
    or the model's ``grid`` (and its images' ``channels``)."""
    if codes is not None:
        names, grid = suite.sample_metrics(codes, metrics), codes.grid
    else:
        names = suite.parse_metrics(metrics)
    params = suite.preset_params(preset)
    for name, extra in suite.check_overrides(overrides).items():
        params[name].update(extra)
    num_grid = len(grid) if grid is not None else 0
    per_metric = {m: RECORDS[m].draws(params[m], num_grid) for m in names}
    total = sum(per_metric.values())
    if codes is not None or not num_grid:
        to_encode = 0
    else:
        to_encode = round(num_grid * -math.expm1(-total / num_grid))
    measured = MEASURED["presets"].get(preset, {})
    compute = [RECORDS[m].seconds.get(preset) for m in names]
    seconds = memory = None
    if grid is not None and all(c is not None for c in compute) and not overrides:
        scale = sum(s for s in grid.sizes if s > 1) / MEASURED["classes"]
        seconds = round(sum(compute) * scale + to_encode / MEASURED["encode_images_per_s"])
    if codes is None and num_grid and measured.get("peak_memory_mb"):
        images_mb = num_grid * channels * 64 * 64 / 2**20
        memory = round(measured["peak_memory_mb"] - MEASURED["images_mb"] + images_mb)
    return {"preset": preset, "metrics": names, "draws": per_metric, "images_to_encode": to_encode,
            "grid_points": num_grid, "expected_seconds": seconds, "expected_memory_mb": memory,
            "measured_on": MEASURED["where"]}


def format_plan(plan: dict) -> str:
    """One line: preset, metrics, images to encode, expected time and memory."""
    parts = [f"preset {plan['preset']}: {', '.join(plan['metrics'])}"]
    if plan["images_to_encode"]:
        parts.append(f"~{plan['images_to_encode']:,} of {plan['grid_points']:,} grid images to encode")
    if plan["expected_seconds"] is not None:
        parts.append(f"expected ~{duration(plan['expected_seconds'])} on one idle CPU core")
    if plan["expected_memory_mb"]:
        parts.append(f"~{plan['expected_memory_mb'] / 1024:.1f} GB")
    return "; ".join(parts)


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
