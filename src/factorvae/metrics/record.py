"""The record of one metric: what the suite, the plan, the report, export and the CLI know of it.

Each metric module defines its pure function ``metric(codes, rng, **params) -> dict``
(parameters named as in disentanglement_lib) and, beside it, ``METRIC = Metric(...)``;
``metrics/registry.py`` lists the records (one line per metric). Nothing reads metric facts
from anywhere but these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

#: the presets every record gives parameters for (docs/metrics.md)
PRESET_NAMES = ("dlib", "paper", "fast")


def draws_train_test(params: Mapping, num_grid: int) -> int:
    """Grid points drawn by a metric that samples ``num_train`` (+ ``num_test``) random points."""
    n = params["num_train"]
    n = sum(n) if isinstance(n, (list, tuple)) else n
    return int(n + params.get("num_test", 0))


@dataclass(frozen=True)
class Metric:
    """Everything known about one metric.

    - ``function``: ``(codes, rng, **params) -> dict`` holding at least ``keys``.
    - ``keys``: the values disentanglement_lib reports (tables, parity, ``format_table``).
    - ``headline``: the one key shown in logs, exports, sweep tables and the report.
    - ``presets``: ``{"dlib": params, "paper": params, "fast": params}``.
    - ``draws(params, num_grid)``: grid points the metric asks codes for (repeats counted);
      the plan turns these into images to encode.
    - ``seconds``: measured CPU seconds of the metric's own compute per preset on dSprites
      (``metrics/plan.py`` says where and how); None where not measured.
    - ``label``: the human name (report, tables).
    - ``fixes_factor``: it holds one factor fixed, so it needs chosen grid points, not a sample.
    - ``default``: part of the default set (the cheap ones); others run when named or with "all".
    """

    name: str
    function: Callable[..., dict]
    keys: tuple[str, ...]
    headline: str
    presets: Mapping[str, Mapping]
    label: str
    draws: Callable[[Mapping, int], int] = draws_train_test
    seconds: Mapping[str, float | None] = field(default_factory=dict)
    fixes_factor: bool = False
    default: bool = True

    def __post_init__(self):
        missing = [p for p in PRESET_NAMES if p not in self.presets]
        if missing:
            raise ValueError(f"metric {self.name} has no parameters for preset(s) {missing}")
        if self.headline not in self.keys:
            raise ValueError(f"metric {self.name}: headline {self.headline!r} is not one of its keys")
