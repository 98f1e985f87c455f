"""Training speed: steps/s for β-VAE and FactorVAE (batch 64 + 64) on the paper's dSprites
networks, one at a time and as vectorised groups (factorvae.group), and the share of step time
spent outside forward/backward/optimiser (data, logging).

    python benchmarks/train_speed.py [--models 1,4] [--device cpu|cuda] [--threads N] [--repeats 5]
                                     [--precision fp32|bf16] [--compile] [--data dsprites] [--loop --steps 200]
                                     [--log-every N] [--keep-freed-memory]

Method:
(0) groups (default): for each model and N in ``--models``, the single-run step (today's path:
    sample_batch + ``Method.train_step``) and a ``RunGroup`` of N runs (seeds 0..N-1, the paper
    sweep's hyper-parameters) timed in windows of 10 steps, all configurations interleaved,
    ``--repeats`` windows each; median. Prints per-run and aggregate model-steps/s, peak memory
    (CUDA: max allocated; CPU: the process's peak RSS so far, which only grows) and the projected
    wall time of configs/sweeps/paper_2dshapes.yaml (60 β-VAE + 60 FactorVAE runs x 3e5 steps)
    trained in groups of N on this device, one group after another.
With ``--loop`` also:
(1) compute: `Method.train_step` alone on pre-made batches, both models interleaved in windows of
    10 steps, ``--repeats`` windows each; median ms/step (robust to other load on the machine).
(2) loop: the real trainer (`factorvae.trainer.train`: batch gathers from the uint8 store, log
    accumulation, metrics.jsonl, TensorBoard every ``--log-every`` steps; image and checkpoint
    writing are periodic work of their own and pushed past the end) for ``--steps`` steps after 5
    warm-up steps. Each `train_step` call is timed inside the loop, so
    loop ms/step = mean time from one train_step start to the next,
    overhead = 1 - (time inside train_step) / (loop time), both over the same steps.
One FactorVAE step is ~12.9 GFLOP (~6.5 for β-VAE); the load average is printed since other
processes on the machine slow everything down.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import resource
import statistics
import tempfile
import time

import torch

from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.group import PRECISIONS, STRATEGIES, RunGroup, autocast, configure_device
from factorvae.runs import build_model, pick_device

MODELS = ("betavae", "factorvae")
WARMUP = 5
# configs/sweeps/paper_2dshapes.yaml: per method, its grid (cycled over a group's runs) and run count
SWEEP = {"betavae": ("beta", [1, 2, 4, 6, 8, 16], 60), "factorvae": ("gamma", [10, 20, 30, 40, 50, 100], 60)}
SWEEP_STEPS = 300_000


def keep_freed_memory() -> bool:
    """glibc: serve blocks up to 32 MiB from the heap and never give freed heap memory back.
    By default glibc mmaps/munmaps the step's large (>= 128 KiB ... 32 MiB) activation buffers
    and trims the heap, so every step page-faults ~80 MB of fresh zeroed pages (tens of ms of
    system time on 2 cores). Process-wide; a candidate for the trainer's CPU setup."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_compute(cfgs: dict, dataset, device, repeats: int, window: int = 10) -> dict[str, float]:
    """Median seconds per train_step over ``repeats`` windows, the models interleaved."""
    models = {name: build_model(cfg, dataset.channels, device)[0] for name, cfg in cfgs.items()}
    g = torch.Generator(device=device).manual_seed(0)
    xs = [dataset.sample_batch(64, g) for _ in range(8)]
    for model in models.values():
        model.train()
        for i in range(WARMUP):
            model.train_step(xs[i % 8], xs[(i + 1) % 8], i)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            sync(device)
            t0 = time.perf_counter()
            for i in range(window):
                model.train_step(xs[i % 8], xs[(i + 1) % 8], i)
            sync(device)
            times[name].append((time.perf_counter() - t0) / window)
    return {name: statistics.median(v) for name, v in times.items()}


def time_loop(cfg, dataset, steps: int, log_every: int, device) -> tuple[float, float]:
    """(loop seconds/step, seconds/step inside train_step) over ``steps`` trainer steps."""
    train_mod = importlib.import_module("factorvae.trainer")

    starts: list[float] = []
    inside: list[float] = []
    build = train_mod.build_model

    def build_timed(*args, **kwargs):
        model, gen = build(*args, **kwargs)
        step_fn = model.train_step

        def timed_step(*a, **k):
            sync(device)
            t0 = time.perf_counter()
            out = step_fn(*a, **k)
            sync(device)
            starts.append(t0)
            inside.append(time.perf_counter() - t0)
            return out

        model.train_step = timed_step
        return model, gen

    total = WARMUP + steps + 1  # the last step only closes the interval before it
    cfg = resolve(cfg, {"train": {"steps": total, "log_every": log_every, "ckpt_every": 10**9,
                                  "image_every": 10**9, "eval_every": 0}})
    train_mod.build_model = build_timed
    try:
        with tempfile.TemporaryDirectory() as d:
            train_mod.train(cfg, d, progress=False, dataset=dataset)
    finally:
        train_mod.build_model = build
    loop = (starts[-1] - starts[WARMUP]) / steps
    return loop, sum(inside[WARMUP:-1]) / steps


def peak_memory(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB rss"


def group_configs(name: str, n: int, device, extra: dict) -> list[dict]:
    key, grid, _ = SWEEP[name]
    return [resolve({"model": {"name": name, key: grid[i % len(grid)]},
                     "train": {"seed": i, "device": str(device), **extra}}) for i in range(n)]


def time_groups(name: str, sizes: list[int], strategies: list[str], dataset, device, repeats: int,
                precision: str, window: int = 10, compile: bool = False) -> dict:
    """Median seconds per step of the single-run path and of a group of each size."""
    runners = {}
    cfg = group_configs(name, 1, device, {})[0]
    single, _ = build_model(cfg, dataset.channels, device)
    single.train()
    g = torch.Generator(device=device).manual_seed(1)
    done = [0]  # the real step: noise is drawn once per block of steps (Method.noise_block), as in a group

    def single_step():
        x1 = dataset.sample_batch(64, g)
        x2 = dataset.sample_batch(64, g) if single.needs_second_batch else None
        with autocast(device, precision):
            single.train_step(x1, x2, done[0])
        done[0] += 1

    runners["single"] = single_step
    memory = {}
    for n in sizes:
        for strategy in strategies:
            members = [build_model(c, dataset.channels, device)[0] for c in group_configs(name, n, device, {})]
            group = RunGroup(members, [torch.Generator(device=device).manual_seed(100 + i) for i in range(n)],
                             precision=precision, strategy=strategy, compile=compile)
            runners[(n, group.strategy)] = lambda group=group: group.step(*group.sample(dataset, 64))
    times: dict = {k: [] for k in runners}
    for key, fn in runners.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(WARMUP):
            fn()
        sync(device)
        memory[key] = peak_memory(device)
    for _ in range(repeats):
        for key, fn in runners.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(window):
                fn()
            sync(device)
            times[key].append((time.perf_counter() - t0) / window)
    return {k: (statistics.median(v), memory[k]) for k, v in times.items()}


def report_groups(args, dataset, device) -> None:
    sizes = [int(v) for v in args.models.split(",")]
    strategies = args.strategies.split(",")
    if any(v not in STRATEGIES for v in strategies):
        raise SystemExit(f"--strategies: choose from {STRATEGIES}")
    print(f"precision {args.precision}; compile {args.compile}; median of {args.repeats} windows of 10 steps per configuration, "
          f"interleaved; batch 64 per run")
    print(f"{'model':<10} {'runs':>13} {'ms/step':>8} {'per-run steps/s':>15} {'aggregate':>10} {'peak memory':>14}")
    agg: dict = {}
    for name in MODELS:
        res = time_groups(name, sizes, strategies, dataset, device, args.repeats, args.precision,
                          compile=args.compile)
        for key, (sec, mem) in res.items():
            n = 1 if key == "single" else key[0]
            label = "1 alone" if key == "single" else f"group {n} {key[1]}"
            print(f"{name:<10} {label:>13} {sec * 1e3:8.1f} {1 / sec:15.2f} {n / sec:10.2f} {mem:>14}")
            agg[(name, key)] = n / sec
    print(f"projected wall time of paper_2dshapes.yaml ({sum(v[2] for v in SWEEP.values())} runs x "
          f"{SWEEP_STEPS:.0e} steps, training only, one process after another on this device):")
    for key in ["single", *sorted({k for _, k in agg if k != "single"})]:
        hours = sum(SWEEP[name][2] * SWEEP_STEPS / agg[(name, key)] for name in MODELS) / 3600
        label = "one run at a time" if key == "single" else f"groups of {key[0]} ({key[1]})"
        print(f"  {label:<22} {hours:10.1f} h")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="1,4", help="group sizes to time, e.g. 1,4 or 1,8,32")
    ap.add_argument("--strategies", default="auto", help="group strategies to time: auto, vmap, loop (comma list)")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ap.add_argument("--compile", action="store_true", help="torch.compile the groups' vmapped phases (CUDA: CUDA graphs)")
    ap.add_argument("--data", default="dsprites", help="data set (toy: same 1x64x64 images, no cache to build)")
    ap.add_argument("--loop", action="store_true", help="also time the trainer loop and its overhead")
    ap.add_argument("--steps", type=int, default=200, help="trainer steps timed per model (after 5 warm-up)")
    ap.add_argument("--repeats", type=int, default=5, help="compute windows of 10 steps per model")
    ap.add_argument("--log-every", type=int, default=None, help="trainer logging interval (default: config's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="tune glibc malloc to keep freed memory (see keep_freed_memory); not what the trainer does")
    args = ap.parse_args()
    if args.keep_freed_memory and not keep_freed_memory():
        ap.error("--keep-freed-memory needs glibc")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    configure_device(device)
    dataset = load_dataset(args.data, progress=True).to(device)
    cfgs = {name: resolve({"model": {"name": name}, "train": {"device": str(device)}}) for name in MODELS}
    log_every = args.log_every or cfgs[MODELS[0]]["train"]["log_every"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {device} ({name}), threads: {torch.get_num_threads()} intra-op / "
          f"{torch.get_num_interop_threads()} inter-op, cpus: {os.cpu_count()}, torch {torch.__version__}")
    print(f"batch 64 (+64 for FactorVAE's D step), loop: {args.steps} steps, log every {log_every}; "
          f"compute: median of {args.repeats} x 10 steps; malloc: {'keep freed' if args.keep_freed_memory else 'default'}")
    load0 = os.getloadavg()[0]
    report_groups(args, dataset, device)
    if not args.loop:
        print(f"load average (1 min) before/after: {load0:.2f} / {os.getloadavg()[0]:.2f}")
        return
    compute = time_compute(cfgs, dataset, device, args.repeats)
    print(f"{'model':<10} {'compute ms/step':>15} {'loop ms/step':>12} {'in step ms':>10} {'steps/s':>8} {'overhead':>8}")
    for model_name in MODELS:
        loop, inside = time_loop(cfgs[model_name], dataset, args.steps, log_every, device)
        print(f"{model_name:<10} {compute[model_name] * 1e3:15.1f} {loop * 1e3:12.1f} {inside * 1e3:10.1f} "
              f"{1 / loop:8.2f} {max(0.0, 1 - inside / loop):8.1%}")
    print(f"load average (1 min) before/after: {load0:.2f} / {os.getloadavg()[0]:.2f}  "
          f"(anything well above 0 means other processes shared the CPUs)")


if __name__ == "__main__":
    main()
