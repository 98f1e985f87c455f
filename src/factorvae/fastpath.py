"""The whole training step of a vectorised group as one CUDA graph (``train.group_strategy: graph``).

A FactorVAE group step under eager vmap is bound by the host: hundreds of kernel launches and
view ops per phase, for a few ms of GPU work. ``GraphStep`` records the complete step once -
every phase of the method (``Method.phases``, vmapped over the runs by ``RunGroup.run_phases``):
forward, backward and the optimiser update (Adam ``fused`` + ``capturable``: its step count lives
on the device) - and replays it for each later step, one launch per step.

Exact by construction: the captured function is the eager group step itself (the same
``run_phases``), fed through static buffers. What stays outside the graph is what must differ
from step to step on the host: each run's batch indices and noise are drawn from its own
generators, in the order a run alone draws them, and copied into the static inputs. Graph
outputs are overwritten by the next replay, so the logs come back as one clone (no phase output
ever leaves the graph). Warm-up steps run eagerly on a side stream (cuBLAS and the optimiser's
lazily built state), as torch's "whole network capture" requires; they are ordinary steps.

On a CPU there is nothing to capture: the same function runs eagerly through the same buffers,
which is what the CPU tests compare against the eager group and single runs.
"""

from __future__ import annotations

import torch

#: eager steps before the capture (torch.cuda.graphs documentation: warm up on a side stream)
WARMUP_STEPS = 3


class GraphStep:
    """One group's whole step, captured as a CUDA graph after ``WARMUP_STEPS`` eager steps."""

    def __init__(self, group):
        self.group = group
        self.cuda = group.device.type == "cuda"
        self.calls = 0
        self.graph = None
        self.inputs: tuple | None = None  # static (x1, x2, noise)
        self.keys: list[str] = []
        self.out: torch.Tensor | None = None  # static (K, N) logs of the captured step

    def _bind(self, x1, x2, noise) -> None:
        """Copy this step's inputs into the static buffers (allocated on the first call)."""
        if self.inputs is None:
            self.inputs = (x1.clone(), None if x2 is None else x2.clone(), {k: v.clone() for k, v in noise.items()})
            return
        s1, s2, sn = self.inputs
        if s1.shape != x1.shape or (s2 is None) != (x2 is None) or sn.keys() != noise.keys():
            raise ValueError("a captured group step needs inputs of one shape every step")
        s1.copy_(x1)
        if x2 is not None:
            s2.copy_(x2)
        for k, v in noise.items():
            sn[k].copy_(v)

    def _run(self) -> torch.Tensor:
        """The eager step on the static inputs; logs stacked into one (K, N) tensor of the weights'
        dtype (bf16 autocast logs come back in fp32)."""
        logs = self.group.run_phases(*self.inputs, graph_safe=self.cuda)
        self.keys = list(logs)
        dtype = self.group.members[0].param_dtype
        return torch.stack([v.detach().to(dtype) for v in logs.values()])

    def __call__(self, x1, x2, noise) -> dict[str, torch.Tensor]:
        self._bind(x1, x2, noise)
        if not self.cuda:
            out = self._run()
        elif self.graph is None and self.calls < WARMUP_STEPS:
            side, current = torch.cuda.Stream(), torch.cuda.current_stream()
            side.wait_stream(current)
            with torch.cuda.stream(side):
                out = self._run()
            current.wait_stream(side)
        else:
            if self.graph is None:
                for opt in self.group.optims.values():  # backward allocates the grads in the graph's pool
                    opt.zero_grad(set_to_none=True)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.out = self._run()  # recorded, not run: the replay below runs it
            self.graph.replay()
            out = self.out.clone()
        self.calls += 1
        return dict(zip(self.keys, out))
