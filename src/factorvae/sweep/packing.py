"""Packing a sweep's trials into vectorised groups (factorvae.group): trials with one group key
(method, architecture, data set, optimiser settings and schedule; seeds and the method's per-run
hyper-parameters may differ) train together, at most ``size`` to a group; trials of methods
that cannot be grouped (``groupable``) run alone."""

from __future__ import annotations

import torch

from factorvae.errors import UserError
from factorvae.group import group_key, groupable
from factorvae.methods import get_method
from factorvae.runs import pick_device
from factorvae.sweep.spec import Trial

#: CUDA memory a run of the paper's networks needs in a group (batch 64 + 64, weights, Adam
#: state, activations for backward), with room to spare; the rest of the device's memory
#: after the data set is shared by the group
RUN_BYTES = 512 << 20
MAX_AUTO = 32


def auto_group_size(trials: list[Trial]) -> int:
    """``--group-size auto``: 1 on a CPU (the loop strategy gains little there; separate worker
    processes use the cores better), else as many runs as fit the GPU's free memory next to a
    data set of the trials' size, at most 32."""
    if not trials:
        return 1
    device = pick_device(trials[0].config["train"]["device"])
    if device.type != "cuda":
        return 1
    free, _total = torch.cuda.mem_get_info(device)
    data_bytes = 4 << 30  # the largest store (3D Shapes, uint8) kept on the device
    return max(1, min(MAX_AUTO, (free - data_bytes) // RUN_BYTES))


def parse_group_size(value) -> int | str:
    if value in (None, "auto"):
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--group-size must be a positive integer or auto, got {value!r}") from None
    if n < 1:
        raise UserError(f"--group-size must be >= 1, got {n}")
    return n


def pack(trials: list[Trial], size: int) -> list[list[Trial]]:
    """Units of work in spec order: groups of up to ``size`` trials sharing a group key, and
    single trials (ungroupable methods, or ``size`` 1)."""
    if size <= 1:
        return [[t] for t in trials]
    open_groups: dict[str, list[Trial]] = {}
    units: list[list[Trial]] = []
    for t in trials:
        if groupable(get_method(t.config["model"]["name"])) is not None:
            units.append([t])
            continue
        key = group_key(t.config)
        unit = open_groups.get(key)
        if unit is None or len(unit) >= size:
            unit = open_groups[key] = []
            units.append(unit)
        unit.append(t)
    return units
