"""Training speed: steps/s for β-VAE and FactorVAE (batch 64 + 64) on the paper's dSprites
networks, and the share of step time spent outside forward/backward/optimiser (data, logging).

    python benchmarks/train_speed.py [--steps 200] [--repeats 5] [--device cpu] [--threads N]
                                     [--log-every N] [--keep-freed-memory]

Method:
(1) compute: `Method.train_step` alone on pre-made batches, both models interleaved in windows of
    10 steps, ``--repeats`` windows each; median ms/step (robust to other load on the machine).
(2) loop: the real trainer (`factorvae.train.train`: batch gathers from the uint8 store, log
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
import statistics
import tempfile
import time

import torch

from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.runs import build_model, pick_device

MODELS = ("betavae", "factorvae")
WARMUP = 5


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
    train_mod = importlib.import_module("factorvae.train")  # `factorvae.train` is the function

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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    dataset = load_dataset("dsprites", progress=True).to(device)
    cfgs = {name: resolve({"model": {"name": name}, "train": {"device": str(device)}}) for name in MODELS}
    log_every = args.log_every or cfgs[MODELS[0]]["train"]["log_every"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {device} ({name}), threads: {torch.get_num_threads()} intra-op / "
          f"{torch.get_num_interop_threads()} inter-op, cpus: {os.cpu_count()}, torch {torch.__version__}")
    print(f"batch 64 (+64 for FactorVAE's D step), loop: {args.steps} steps, log every {log_every}; "
          f"compute: median of {args.repeats} x 10 steps; malloc: {'keep freed' if args.keep_freed_memory else 'default'}")
    load0 = os.getloadavg()[0]
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
