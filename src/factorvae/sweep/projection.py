"""Projected device time of a sweep's training (``factorvae sweep --dry-run``).

Cost per step depends on the method, its networks, the batch size and the image channels, not
on the hyper-parameter values a grid varies; so each distinct (method, model options without
the per-run ones, batch size, channels) is timed once: a throwaway model takes ``WARMUP`` then
``STEPS`` training steps on random images on the trials' device, and every trial of that kind
is projected at the measured rate. Evaluation is not included; trials run one after another
(divide by the number of devices, or by the trials sharing one).
"""

from __future__ import annotations

import json
import time

import torch

from factorvae.data import image_channels
from factorvae.methods import get_method
from factorvae.runs import build_model, pick_device

WARMUP = 1
STEPS = 3


def _kind(trial) -> str:
    cls = get_method(trial.method)
    per_run = set(getattr(cls, "group_options", cls.group_hparams))
    model = {k: v for k, v in trial.config["model"].items() if k not in per_run}
    d = trial.config["data"]
    return json.dumps([model, trial.config["train"]["batch_size"], image_channels(d["name"], d.get("channels"))],
                      sort_keys=True, default=str)


def step_rate(cfg: dict, device: torch.device) -> float:
    """Training steps per second of a throwaway copy of ``cfg``'s model on random images."""
    channels = image_channels(cfg["data"]["name"], cfg["data"].get("channels"))
    model, _ = build_model(cfg, channels, device)
    model.train()
    if hasattr(model, "set_dataset_size"):
        model.set_dataset_size(737_280)  # the estimator's N does not change the cost
    b = cfg["train"]["batch_size"]
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((b, channels, 64, 64), generator=gen, device=device)
    x2 = (torch.rand((b * model.second_batches, channels, 64, 64), generator=gen, device=device)
          if model.needs_second_batch else None)
    for i in range(WARMUP):
        model.train_step(x, x2, i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(STEPS):
        model.train_step(x, x2, WARMUP + i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return STEPS / (time.perf_counter() - t0)


def project(trials) -> dict:
    """{"device", "seconds" (every trial's training steps at its kind's measured rate),
    "by_method": {method: {"trials", "steps", "seconds", "rates"}}}."""
    if not trials:
        return {"device": None, "seconds": 0.0, "by_method": {}}
    device = pick_device(trials[0].config["train"]["device"])
    rates: dict[str, float] = {}
    out: dict = {}
    for t in trials:
        k = _kind(t)
        if k not in rates:
            rates[k] = step_rate(t.config, device)
        m = out.setdefault(t.method, {"trials": 0, "steps": 0, "seconds": 0.0, "rates": set()})
        steps = int(t.config["train"]["steps"])
        m["trials"] += 1
        m["steps"] += steps
        m["seconds"] += steps / rates[k]
        m["rates"].add(round(rates[k], 2))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} ({torch.get_num_threads()} threads)"
    return {"device": name, "seconds": sum(m["seconds"] for m in out.values()),
            "by_method": {k: {**v, "rates": sorted(v["rates"])} for k, v in out.items()}}


def describe(p: dict) -> list[str]:
    """Lines for the user."""
    def dur(s):
        return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s:,.0f} s"
    lines = [f"projected device time (training only, one trial at a time, on {p['device']}): {dur(p['seconds'])}"
             + (f" = {p['seconds'] / 86400 / 365.25:,.2f} device-years" if p["seconds"] > 86400 * 365.25 / 10 else "")]
    for name, m in p["by_method"].items():
        rate = "/".join(f"{r:g}" for r in m["rates"])
        lines.append(f"  {name:<12} {m['trials']:>6,} trials x {m['steps'] // max(1, m['trials']):,} steps at {rate} "
                     f"steps/s (measured over {STEPS} steps): {dur(m['seconds'])}")
    return lines
