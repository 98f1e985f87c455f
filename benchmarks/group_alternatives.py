"""How to batch N runs' networks: forward + backward of the paper's encoder and decoder (batch 64
per run, dSprites shapes) for N runs done three ways, median ms per call:

- ``loop``: N single models one after another (today's path: channels_last, sub-pixel last layer);
- ``vmap``: ``torch.func.vmap`` + ``functional_call`` over stacked parameters (what
  factorvae.group does; vmap lowers batched convs to grouped convs and linears to batched matmuls);
- ``grouped``: the same by hand: convolutions with ``groups=N`` on (B, N*C, H, W), linears as
  ``torch.baddbmm`` over (N, B, features), in NCHW and in channels_last layout.

    python benchmarks/group_alternatives.py [--models 1,4] [--threads 2] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from factorvae.nets import ArchSpec, Decoder, Encoder, under_vmap


class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        spec = ArchSpec()
        self.enc, self.dec = Encoder(spec, 10), Decoder(spec, 10)

    def forward(self, x):
        mean, logvar = self.enc(x)
        return F.binary_cross_entropy_with_logits(self.dec(mean), x, reduction="sum") + logvar.sum()


def grouped_forward(p: dict, x: torch.Tensor, n: int, channels_last: bool) -> torch.Tensor:
    """Stacked parameters p (n, ...) and x (n, B, 1, 64, 64), with grouped convs and bmm."""
    b = x.shape[1]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    h = x.transpose(0, 1).reshape(b, n, 64, 64).contiguous(memory_format=fmt)
    for i in range(4):
        w, bias = p[f"enc.net.{2 * i}.weight"], p[f"enc.net.{2 * i}.bias"]
        h = F.relu(F.conv2d(h, w.flatten(0, 1), bias.flatten(), 2, 1, groups=n))
    h = h.reshape(b, n, -1).transpose(0, 1)  # (n, b, 64*4*4)
    h = F.relu(torch.baddbmm(p["enc.net.9.bias"][:, None], h, p["enc.net.9.weight"].transpose(1, 2)))
    out = torch.baddbmm(p["enc.net.11.bias"][:, None], h, p["enc.net.11.weight"].transpose(1, 2))
    mean, logvar = out[..., :10], out[..., 10:]
    h = F.relu(torch.baddbmm(p["dec.fc.0.bias"][:, None], mean, p["dec.fc.0.weight"].transpose(1, 2)))
    h = F.relu(torch.baddbmm(p["dec.fc.2.bias"][:, None], h, p["dec.fc.2.weight"].transpose(1, 2)))
    h = h.transpose(0, 1).reshape(b, n * 64, 4, 4).contiguous(memory_format=fmt)
    for i in range(4):
        w, bias = p[f"dec.deconv.{2 * i}.weight"], p[f"dec.deconv.{2 * i}.bias"]
        h = F.conv_transpose2d(h, w.flatten(0, 1), bias.flatten(), 2, 1, groups=n)
        if i < 3:
            h = F.relu(h)
    logits = h.reshape(b, n, 1, 64, 64).transpose(0, 1)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") + logvar.sum()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="1,4")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")
    print(f"{'runs':>4} {'method':>22} {'ms/call':>8} {'ms/run':>7}")
    for n in [int(v) for v in args.models.split(",")]:
        torch.manual_seed(0)
        models = [Pair().to(dev) for _ in range(n)]
        x = (torch.rand(n, 64, 1, 64, 64, device=dev) > 0.5).float()
        params, buffers = stack_module_state(models)
        template = Pair().to(dev)

        def loop():
            for m, xi in zip(models, x):
                m(xi).backward()

        def vmapped():
            with under_vmap():
                loss = vmap(lambda p, b, xi: functional_call(template, (p, b), (xi,)))(params, buffers, x)
            loss.sum().backward()

        runners = {"loop": loop, "vmap": vmapped,
                   "grouped (NCHW)": lambda: grouped_forward(params, x, n, False).backward(),
                   "grouped (channels_last)": lambda: grouped_forward(params, x, n, True).backward()}
        times = {k: [] for k in runners}
        for fn in runners.values():
            fn()
        for _ in range(args.repeats):
            for k, fn in runners.items():
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(3):
                    fn()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times[k].append((time.perf_counter() - t0) / 3)
        for k, v in times.items():
            ms = statistics.median(v) * 1e3
            print(f"{n:>4} {k:>22} {ms:8.1f} {ms / n:7.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
