"""The one device check of a GPU window (issue 25): every table on stdout, ``check.json`` in ``--out``.

    python3 -u benchmarks/gpu_check.py --out DIR [--device cuda] [--budget 390] [--sizes 1,5,10,32]
                                       [--tiny] [--data synthetic|toy] [--window 10]

Sections, in order of value, each started only while the time ``--budget`` (seconds from the
start) leaves room for it (a skipped one says so); the speed of groups of 5 and 10 in fp32 comes
before the periodic work, the other sizes and bf16 after it:

1. card and software;
2. data: synthetic images of dSprites' shape on the device (uint8, the dSprites factor grid; no
   render) or ``toy``;
3. exactness: the graph fast path (``group_strategy: graph``, factorvae.fastpath) against the
   eager vmap step for 8 steps of a FactorVAE group of 2 (same batches and noise): max |weight
   difference|; the graph path is used by ``make reproduce`` only when it is within 1e-4;
4. speed: per method, group size, precision (fp32, bf16) and path (``loop`` = runs one after
   another through ``Method.train_step``, only for size 1; ``vmap`` eager; ``graph``): median
   of windows of ``--window`` synchronised steps after warm-up; per-run steps/s, model-steps/s,
   peak memory;
5. periodic work: one true TC estimate of a group of 10 (2,000 samples, the whole data set as
   mixture: ``models_total_correlation``), one Fig. 5 evaluation of a group of 10
   (``evaluate_group``, FactorVAE + Higgins metrics, ``fast`` preset), the same with the ``paper``
   preset (the sweep's final evaluation), the part of one such evaluation that training waits
   for with ``train.eval_async`` (the whole grid encoded; ``async_eval.encode_grid``), one checkpoint;
6. projection (benchmarks/gpu_projection.py): device minutes of
   configs/sweeps/paper_core_2dshapes.yaml and of the headline pair (configs/sweeps/headline_pair.yaml)
   at 3e5 steps, from the rates and costs above, and the largest step count of the headline pair
   that fits 9 minutes.

``check.json`` holds the rates, costs and the choice (path and precision) that
``benchmarks/reproduce.py`` (``make reproduce``) reads. torch.compile is not measured here:
benchmarks/gpu_check.sh runs it last, under its own timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.data.dsprites import GRID
from factorvae.data.store import ImageData
from factorvae.group import RunGroup, configure_device
from factorvae.async_eval import encode_grid
from factorvae.group_train import evaluate_group
from factorvae.io import atomic_write_json
from factorvae.metrics.tc import models_total_correlation
from factorvae.runs import RunDir, build_model
from gpu_projection import project, steps_within  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parent.parent

BATCH = 64
#: per method, the per-run hyper-parameter and the values a group cycles through (paper_core_2dshapes.yaml)
GRID_VALUES = {"factorvae": ("gamma", [10.0, 40.0]), "betavae": ("beta", [1.0, 4.0])}
TINY = {"z_dim": 10, "arch": {"channels": [4, 4, 4, 4], "fc": 8}}
EXACT_TOL = 1e-4


class Clock:
    def __init__(self, budget: float):
        self.t0, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def allows(self, seconds: float, what: str, quiet: bool = False) -> bool:
        if self.left() >= seconds:
            return True
        if not quiet:
            print(f"-- skipped {what}: {self.left():.0f} s left of the budget, it needs ~{seconds:.0f} s", flush=True)
        return False


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def configs(name: str, n: int, device, tiny: bool, precision: str = "fp32", strategy: str = "vmap") -> list[dict]:
    key, values = GRID_VALUES[name]
    model = {"name": name, **(TINY if tiny else {})}
    if tiny and name == "factorvae":
        model["disc"] = {"hidden": 16, "layers": 2}
    return [resolve({"model": {**model, key: values[i % len(values)]},
                     "train": {"seed": i, "device": str(device), "precision": precision, "group_strategy": strategy}})
            for i in range(n)]


def make_group(cfgs, dataset, device, strategy: str, precision: str = "fp32") -> RunGroup:
    models = [build_model(c, dataset.channels, device)[0] for c in cfgs]
    gens = [torch.Generator(device=device).manual_seed(100 + i) for i in range(len(cfgs))]
    return RunGroup(models, gens, precision=precision, strategy=strategy)


def peak_mib(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def exactness(dataset, device, tiny: bool) -> float:
    """max |weight difference| between the graph path and eager vmap after 8 steps (same draws)."""
    groups = [make_group(configs("factorvae", 2, device, tiny), dataset, device, s) for s in ("vmap", "graph")]
    for _ in range(8):
        for g in groups:
            g.step(*g.sample(dataset, BATCH))
    sync(device)
    return max(float((a - b).detach().abs().max()) for a, b in zip(groups[0].params.values(), groups[1].params.values()))


def time_steps(group: RunGroup, dataset, window: int, windows: int, seconds: float) -> float:
    """Median seconds per group step over synchronised windows (stops early after ``seconds``)."""
    for _ in range(5):  # warm-up (the graph path captures after 3 eager steps)
        group.step(*group.sample(dataset, BATCH))
    sync(group.device)
    times, t_end = [], time.perf_counter() + seconds
    while len(times) < windows and (len(times) < 2 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        for _ in range(window):
            group.step(*group.sample(dataset, BATCH))
        sync(group.device)
        times.append((time.perf_counter() - t0) / window)
    return statistics.median(times)


def plan(sizes: list[int], exact_ok: bool) -> tuple[list[tuple], list[tuple]]:
    """(method, runs, precision, path) to time: first what the projections need (groups of 5 and 10
    in fp32 on the vmap and graph paths), then the rest (sizes 1 and 32 in fp32, then bf16)."""
    every = [(name, n, precision, path) for name in ("factorvae", "betavae") for n in sizes for precision in ("fp32", "bf16")
             for path in (["loop"] if n == 1 else []) + ["vmap"] + (["graph"] if exact_ok else [])]
    first = [c for c in every if c[1] in (5, 10) and c[2] == "fp32"]
    return first, sorted((c for c in every if c not in first), key=lambda c: c[2] != "fp32")  # fp32 first


def speed(args, dataset, device, clock: Clock, todo: list[tuple], rows: list[dict], save) -> None:
    """Time each configuration of ``todo`` into ``rows``, calling ``save`` after each."""
    print(f"{'method':>9} {'runs':>4} {'prec':>4} {'path':>5} {'ms/step':>8} {'steps/s/run':>11} "
          f"{'model-steps/s':>13} {'peak MiB':>9}", flush=True)
    skipped = []
    for name, n, precision, path in todo:
        if not clock.allows(args.per_config + 5, "", quiet=True):
            skipped.append(f"{name} x{n} {precision} {path}")
            continue
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            group = make_group(configs(name, n, device, args.tiny), dataset, device, path, precision)
            sec = time_steps(group, dataset, args.window, args.windows, args.per_config)
        except (RuntimeError, torch.OutOfMemoryError) as e:  # report, go on with the rest
            print(f"{name:>9} {n:>4} {precision:>4} {path:>5} failed: {str(e).splitlines()[0][:120]}", flush=True)
            continue
        row = {"method": name, "runs": n, "precision": precision, "path": path, "sec_per_step": sec,
               "model_steps_per_s": n / sec, "peak_mib": peak_mib(device)}
        rows.append(row)
        save()
        print(f"{name:>9} {n:>4} {precision:>4} {path:>5} {sec * 1e3:8.2f} {1 / sec:11.1f} "
              f"{n / sec:13.0f} {row['peak_mib'] or float('nan'):9.0f}", flush=True)
        del group
    if skipped:
        print(f"-- skipped for lack of time ({clock.left():.0f} s left): {', '.join(skipped)}", flush=True)


def periodic_costs(args, dataset, device, clock: Clock) -> dict:
    """Seconds of one true TC estimate and one Fig. 5 evaluation of a group of 10, one checkpoint."""
    out = {}
    n = 10
    group = make_group(configs("factorvae", n, device, args.tiny), dataset, device, "vmap")
    if clock.allows(40, "true TC of a group of 10"):
        sync(device)
        t0 = time.perf_counter()
        models_total_correlation(group.posteriors, device, dataset, list(range(n)), num_samples=2000, num_data=0)
        sync(device)
        out["tc_group10_s"] = time.perf_counter() - t0
        print(f"true TC, group of 10 (2,000 samples, {len(dataset):,} components): {out['tc_group10_s']:.2f} s", flush=True)
    if dataset.grid is not None and clock.allows(60, "Fig. 5 evaluation of a group of 10"):
        group.unstack()
        t0 = time.perf_counter()
        evaluate_group(group.members, dataset, "fast", 0, metrics=["factor_vae", "beta_vae"])
        out["eval_group10_s"] = time.perf_counter() - t0
        print(f"Fig. 5 evaluation (factor_vae + beta_vae, fast), group of 10: {out['eval_group10_s']:.2f} s", flush=True)
    if "eval_group10_s" in out and clock.allows(40, "train.eval_async's blocking part for a group of 10"):
        sync(device)
        t0 = time.perf_counter()
        encode_grid(group.members, dataset)  # what training waits for with eval_async (the rest is the worker's)
        sync(device)
        out["eval_async_blocked_group10_s"] = time.perf_counter() - t0
        print(f"Fig. 5 evaluation with train.eval_async, group of 10, training blocked (whole grid encoded): "
              f"{out['eval_async_blocked_group10_s']:.2f} s (against {out['eval_group10_s']:.2f} s synchronous: "
              f"set eval_async {'true' if out['eval_async_blocked_group10_s'] < out['eval_group10_s'] else 'false'})",
              flush=True)
    if dataset.grid is not None and clock.allows(90, "final (paper preset) evaluation of a group of 10"):
        t0 = time.perf_counter()
        evaluate_group(group.members, dataset, "paper", 0, metrics=["factor_vae", "beta_vae"])
        out["eval_paper_group10_s"] = time.perf_counter() - t0
        print(f"final evaluation (factor_vae + beta_vae, paper), group of 10: {out['eval_paper_group10_s']:.2f} s",
              flush=True)
    if clock.allows(10, "checkpoint"):
        with tempfile.TemporaryDirectory() as tmp:
            rd = RunDir(Path(tmp) / "run")
            rd.path.mkdir(parents=True)
            group.unstack()
            m = group.members[0]
            t0 = time.perf_counter()
            rd.save_checkpoint(m, 1, {"data": torch.Generator(), "model": m.generator})
            out["ckpt_s"] = time.perf_counter() - t0
            out["ckpt_mb"] = rd.ckpt_path.stat().st_size / 1e6
        print(f"one FactorVAE checkpoint: {out['ckpt_s']:.3f} s, {out['ckpt_mb']:.1f} MB", flush=True)
    return out


def choose(rows: list[dict], exact_ok: bool) -> dict | None:
    """The path and precision for make reproduce: the fastest FactorVAE group of 10 (else the
    largest size measured) among the (path, precision) pairs measured for every method at that
    size (so the projection has all its rates), graph only if exact; bf16 only when >= 1.5x
    fp32's rate (its numbers differ from fp32's; the paper's are fp32)."""
    rows = [r for r in rows if r["path"] != "loop" and (exact_ok or r["path"] != "graph")]
    fv = [r for r in rows if r["method"] == "factorvae"]
    if not fv:
        return None
    size = 10 if any(r["runs"] == 10 for r in fv) else max(r["runs"] for r in fv)
    methods = {r["method"] for r in rows}
    complete = {(r["path"], r["precision"]) for r in rows if r["runs"] == size
                and all(any(o["method"] == m and o["runs"] == size and (o["path"], o["precision"]) == (r["path"], r["precision"])
                            for o in rows) for m in methods)}
    fv = [r for r in fv if r["runs"] == size and (r["path"], r["precision"]) in complete]
    best = {p: max((r for r in fv if r["precision"] == p), key=lambda r: r["model_steps_per_s"], default=None)
            for p in ("fp32", "bf16")}
    pick = best["fp32"] or best["bf16"]
    if pick is None:
        return None
    if best["bf16"] and best["fp32"] and best["bf16"]["model_steps_per_s"] >= 1.5 * best["fp32"]["model_steps_per_s"]:
        pick = best["bf16"]
    return {"group_strategy": pick["path"], "precision": pick["precision"], "measured_runs": size}


def projection(check: dict) -> dict:
    """Projected device seconds of the two specs at 3e5 steps and the headline pair's steps in 9 minutes."""
    out = {}
    for name in ("paper_core_2dshapes", "headline_pair"):
        p = project(check, str(ROOT / "configs" / "sweeps" / f"{name}.yaml"))
        if p:
            out[f"{name}_s"] = p["seconds"]
    steps = steps_within(check, str(ROOT / "configs" / "sweeps" / "headline_pair.yaml"), 9)
    if steps is not None:
        out["headline_pair_steps_in_9_min"] = steps
    return out


def compile_only(args, dataset, device) -> dict:
    """torch.compile of the vmap step (``train.compile``): a FactorVAE group of 10 (or the largest
    size asked below it) against the eager step for 8 steps, then its speed."""
    n = max([s for s in args.sizes if s <= 10] or [2])
    cfgs = configs("factorvae", n, device, args.tiny)
    models = [[build_model(c, dataset.channels, device)[0] for c in cfgs] for _ in range(2)]
    groups = [RunGroup(ms, [torch.Generator(device=device).manual_seed(100 + i) for i in range(n)], strategy="vmap",
                       compile=c) for ms, c in zip(models, (False, True))]
    t0 = time.perf_counter()
    for _ in range(8):
        for g in groups:
            g.step(*g.sample(dataset, BATCH))
    sync(device)
    first = time.perf_counter() - t0
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(groups[0].params.values(), groups[1].params.values()))
    print(f"compile: first 8 steps (compilation included) {first:.1f} s; max |weight difference| vs eager {diff:.3g} "
          f"({'exact' if diff <= EXACT_TOL else 'NOT exact'})", flush=True)
    sec = time_steps(groups[1], dataset, args.window, args.windows, args.per_config)
    print(f"compile: factorvae x{n} fp32 {sec * 1e3:.2f} ms/step, {n / sec:.0f} model-steps/s", flush=True)
    return {"runs": n, "first_steps_s": first, "max_weight_diff": diff, "sec_per_step": sec, "model_steps_per_s": n / sec}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, default=390, help="seconds for everything (default 390)")
    ap.add_argument("--deadline", type=float, help="unix time to be done by (gpu_check.sh: counts the imports too)")
    ap.add_argument("--sizes", default="1,5,10,32")
    ap.add_argument("--per-config", type=float, default=4.0, help="seconds of timing per configuration")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="tiny networks (a CPU trial of the script itself)")
    ap.add_argument("--data", choices=("synthetic", "toy"), default="synthetic")
    ap.add_argument("--compile-only", action="store_true", help="only the torch.compile variant (gpu_check.sh: last)")
    args = ap.parse_args()
    args.sizes = [int(v) for v in args.sizes.split(",")]
    if args.deadline:
        args.budget = min(args.budget, args.deadline - time.time())
    clock, out = Clock(args.budget), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    configure_device(device)
    print(f"== card: python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
          f"{torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}, budget {args.budget:.0f} s", flush=True)
    if args.data == "toy":
        dataset = load_dataset("toy", progress=False)
    else:  # dSprites' shape and grid, random pixels: costs do not depend on the pictures
        g = torch.Generator(device=device).manual_seed(0)
        data = torch.randint(0, 2, (len(GRID), 1, 64, 64), generator=g, device=device, dtype=torch.uint8).mul_(255)
        dataset = ImageData("synthetic", data, GRID)
    dataset.to(device)
    print(f"== data: {dataset.name}, {len(dataset):,} images on {device}", flush=True)
    if args.compile_only:
        atomic_write_json(out / "compile.json", compile_only(args, dataset, device))
        return 0
    result = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "budget_s": args.budget, "tiny": args.tiny}
    print("== exactness: graph path vs eager vmap, FactorVAE group of 2, 8 steps", flush=True)
    try:
        diff = exactness(dataset, device, args.tiny)
        exact_ok = diff <= EXACT_TOL
        print(f"max |weight difference| {diff:.3g} (tolerance {EXACT_TOL:g}): "
              f"{'exact' if exact_ok else 'NOT exact: graph path unused'}", flush=True)
    except RuntimeError as e:  # a capture that fails: measure the rest without the graph path
        diff, exact_ok = None, False
        print(f"graph path failed ({str(e).splitlines()[0][:160]}): graph path unused", flush=True)
    result["graph_max_weight_diff"], result["graph_exact"] = diff, exact_ok
    result["speed"], result["periodic"] = [], {}

    def save():  # after every figure: a check stopped by its timeout still leaves what it measured
        result["choice"] = choose(result["speed"], exact_ok)
        per = result["periodic"]
        if result["choice"] and "eval_async_blocked_group10_s" in per:  # whichever blocks training less
            result["choice"]["eval_async"] = per["eval_async_blocked_group10_s"] < per["eval_group10_s"]
        result["projection"] = projection(result)
        result["seconds"] = time.perf_counter() - clock.t0
        atomic_write_json(out / "check.json", result)

    print("== speed", flush=True)
    first, rest = plan(args.sizes, exact_ok)
    speed(args, dataset, device, clock, first, result["speed"], save)
    print("== periodic work", flush=True)
    result["periodic"] = periodic_costs(args, dataset, device, clock)
    save()
    print("== speed, the other sizes and bf16", flush=True)
    speed(args, dataset, device, clock, rest, result["speed"], save)
    save()
    print(f"== choice for make reproduce: {json.dumps(result['choice'])}", flush=True)
    for k, v in result["projection"].items():
        print(f"projected {k}: {v / 60:.1f} min" if k.endswith("_s") else f"{k}: {v}", flush=True)
    print(f"== done in {result['seconds']:.0f} s; {out / 'check.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
