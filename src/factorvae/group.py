"""Vectorised groups: N runs of one method, architecture and data set trained as one batched model.

Each run is an ordinary single-run method (built by ``runs.build_model`` from its own config and
seed). ``RunGroup`` stacks their parameters along a leading run axis and runs the method's own
noise-explicit phases (``Method.phases``) under ``torch.func.vmap`` + ``functional_call``, so a
loss has one definition for a run alone and for a group. Per run:

- hyper-parameters (``Method.group_hparams``: β, γ, λ ...) are a tensor with one entry per run;
- batches come from the run's own data generator and noise from its own model generator, in the
  order a single run draws them, so each run sees exactly what it would see alone;
- optimiser state: Adam is elementwise, so one Adam over the stacked parameters is N independent
  Adams. Runs of a group therefore share optimiser settings (lr, betas, eps): groups are keyed by
  them (``group_key``), not by a grouped Adam with per-run learning rates.

``unstack()`` writes the group's state back into the member methods and their optimisers, whose
``state_dict()`` then has exactly a single run's layout (checkpoint or resume any run alone).
A run whose losses turn non-finite is dropped from the group and marked failed (``drop_failed``);
the others continue unchanged (their computations never mix with another run's).

Three ways to run a group's step (``strategy``), chosen by measurement (benchmarks/train_speed.py,
benchmarks/group_alternatives.py, benchmarks/gpu_check.py): ``vmap`` (stacked weights, one batched
forward/backward per phase: on a GPU, where these small networks are bound by kernel launches, N
runs cost about as many launches as one), ``graph`` (the same step, every phase and optimiser
update, captured once as a CUDA graph and replayed: ``factorvae.fastpath``; on a CPU it runs
eagerly) and ``loop`` (each run's own ``train_step`` in turn, on the group's batches). On CUDA the
stacked Adams are ``fused`` (and ``capturable`` for ``graph``).
On a 2-core CPU the step is bound by arithmetic: vmap's grouped (transposed) convolutions lose to
the single-run path's channels_last convolutions (β-VAE: a group of 4 at 0.26x the aggregate
rate of the loop), while FactorVAE's discriminator gains from batched matmuls (1.3-1.7x, measured
under heavy load). ``auto`` takes vmap on CUDA and the loop elsewhere, which is never slower
than the runs one after another. Both give each run the same batches, noise and updates.

Methods without noise-explicit phases (AAE, InfoWGAN-GP) or with BatchNorm (whose running
statistics a functional call would not update in place) cannot be grouped: ``groupable`` says
why, and such runs train one at a time.
"""

from __future__ import annotations

import contextlib
import json

import torch
from torch import nn
from torch.func import functional_call, vmap

from factorvae.errors import UserError
from factorvae.fastpath import GraphStep
from factorvae.methods import get_method
from factorvae.methods.base import Method
from factorvae.nets import under_vmap

PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("auto", "vmap", "loop", "graph")


def groupable(method: type[Method] | Method) -> str | None:
    """None if runs of ``method`` can train as a group, else the reason they cannot."""
    cls = method if isinstance(method, type) else type(method)
    if not cls.phases:
        return f"{cls.name} has no noise-explicit training phases; its runs train one at a time"
    if isinstance(method, nn.Module) and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in method.modules()):
        return f"{cls.name} uses BatchNorm (running statistics); its runs train one at a time"
    return None


def group_key(cfg: dict) -> str:
    """Runs with equal keys can share a group: everything but the seed and the method's per-run
    hyper-parameters (``group_options``, default ``group_hparams``) must agree, optimiser
    settings included (one Adam over stacked parameters has one learning rate)."""
    cls = get_method(cfg["model"]["name"])
    per_run = set(getattr(cls, "group_options", cls.group_hparams))
    model = {k: v for k, v in cfg["model"].items() if k not in per_run}
    train = {k: v for k, v in cfg["train"].items() if k != "seed"}
    return json.dumps({"model": model, "optim": cfg["optim"], "data": cfg["data"], "train": train},
                      sort_keys=True, default=str)


def configure_device(device: torch.device) -> None:
    """Fast defaults for CUDA: TF32 matmuls and convolutions (10-bit mantissa inputs, fp32
    accumulation). The CPU path is left as it is."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, precision: str, cache: bool = True):
    """``precision: bf16``: bfloat16 autocast of the forward and backward passes (weights,
    optimiser state and noise stay fp32); ``fp32``: nothing. ``cache=False`` inside a CUDA graph
    capture (autocast's cast cache would hold tensors of the capture)."""
    if precision not in PRECISIONS:
        raise UserError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=cache)


class _PhaseCall(nn.Module):
    """Calls one phase of the wrapped method, so ``functional_call`` can run any phase."""

    def __init__(self, method: Method):
        super().__init__()
        self.m = method

    def forward(self, phase, *args):
        return getattr(self.m, phase)(*args)


class RunGroup:
    """N runs trained as one: ``step(*sample(dataset, batch_size))`` per training step."""

    def __init__(self, members: list[Method], data_generators: list[torch.Generator], ids: list | None = None,
                 precision: str = "fp32", compile: bool = False, strategy: str = "auto"):
        """``compile``: run each phase's batched forward/backward through ``torch.compile``
        (CUDA: ``mode="reduce-overhead"``, i.e. CUDA graphs, against kernel-launch-bound steps of
        these small networks). Off by default; noise and batch draws stay outside (per-run
        generators). ``strategy="graph"`` captures the whole step instead (``fastpath``)."""
        if not members or len(members) != len(data_generators):
            raise ValueError("a group needs one data generator per member, and at least one member")
        for m in members:
            reason = groupable(m)
            if reason:
                raise UserError(reason)
        if len({type(m) for m in members}) != 1:
            raise ValueError("the runs of a group must use one method")
        self.members = list(members)
        self.data_generators = list(data_generators)
        self.ids = list(range(len(members))) if ids is None else list(ids)
        self.failed: dict = {}  # run id -> step at which its losses were found non-finite
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if strategy == "auto":
            strategy = "vmap" if self.device.type == "cuda" else "loop"
        if strategy == "graph" and compile:
            raise UserError("train.compile and train.group_strategy graph exclude each other: pick one fast path")
        self.strategy = strategy
        self.precision = precision
        self.compile = compile
        self._phase_fns: dict = {}
        self._next_steps: list[int] | None = None  # the members' next steps, when step() is not told
        self._noise_blocks: tuple | None = None  # (the members' noise blocks, stacked (N, K, B, ...))
        autocast(self.device, precision)  # validates
        self._stack()

    # -- stacking --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.members[0].parameters()).device

    def __len__(self) -> int:
        return len(self.members)

    def _stack(self) -> None:
        self._graph = None  # a captured step holds the addresses of the stacked tensors
        if self.strategy == "loop":  # the members' own weights and optimisers are the state
            return
        m0 = self.members[0]
        self.template = _PhaseCall(m0)  # functional_call swaps the stacked weights in
        names = [n for n, _ in m0.named_parameters()]
        per_member = [dict(m.named_parameters()) for m in self.members]
        for d in per_member:
            if list(d) != names or any(d[n].shape != per_member[0][n].shape for n in names):
                raise ValueError("the runs of a group must share one architecture")
        with torch.no_grad():
            self.params = {n: torch.stack([d[n] for d in per_member]).requires_grad_() for n in names}
            self.buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in self.members])
                            for n, _ in m0.named_buffers()}
        self.hp = self._hparams([0] * len(self.members), m0.group_hparams)
        self.optims = {section: self._stack_optimizer(section, names) for section in m0.optimizers()}

    def _stack_optimizer(self, section: str, names: list[str]) -> torch.optim.Optimizer:
        """One Adam over the stacked parameters, its state stacked from the members' Adams."""
        opts = [m.optimizers()[section] for m in self.members]
        settings = []
        for opt in opts:
            if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
                raise ValueError(f"optimiser {section!r}: a group stacks one Adam param group per run")
            settings.append({k: v for k, v in opt.param_groups[0].items() if k != "params"})
        if any(s != settings[0] for s in settings):
            raise UserError(f"the runs of a group must share optim.{section} settings (lr, betas, eps)")
        name_of = [{id(p): n for n, p in m.named_parameters()} for m in self.members]
        pnames = [name_of[0][id(p)] for p in opts[0].param_groups[0]["params"]]
        # CUDA: one fused kernel (~7 passes over the weights instead of foreach's ~18); the graph
        # path also needs the step count on the device (capturable)
        fast = {"fused": True, "capturable": self.strategy == "graph"} if self.device.type == "cuda" else {}
        stacked = torch.optim.Adam([self.params[n] for n in pnames], **settings[0], **fast)
        for n in pnames:
            states = [opt.state.get(dict(m.named_parameters())[n], {}) for opt, m in zip(opts, self.members)]
            if not any(states):
                continue
            if not all(states) or len({float(s["step"]) for s in states}) != 1:
                raise ValueError(f"the runs of a group must be at the same optimiser step ({section})")
            stacked.state[self.params[n]] = {
                k: (_step_tensor(states[0][k], self.params[n].device if fast else None) if k == "step"
                    else torch.stack([s[k] for s in states]))
                for k in states[0]
            }
        return stacked

    def _hparams(self, steps: list[int], keys) -> dict[str, torch.Tensor]:
        """(N,) tensors of the members' hyper-parameters ``keys`` at their training ``steps``."""
        dtype = next(iter(self.params.values())).dtype
        values = [m.hparams(s) for m, s in zip(self.members, steps)]
        return {k: torch.tensor([float(v[k]) for v in values], dtype=dtype, device=self.device) for k in keys}

    @torch.no_grad()
    def unstack(self) -> None:
        """Write weights and optimiser states back into the member methods (single-run layout)."""
        if self.strategy == "loop":
            return
        for i, m in enumerate(self.members):
            own = dict(m.named_parameters())
            for n, p in self.params.items():
                own[n].copy_(p[i])
            bufs = dict(m.named_buffers())
            for n, b in self.buffers.items():
                bufs[n].copy_(b[i])
            for section, stacked in self.optims.items():
                opt = m.optimizers()[section]
                by_id = {id(p): n for n, p in self.params.items()}
                for sp in stacked.param_groups[0]["params"]:
                    state = stacked.state.get(sp)
                    if state:
                        opt.state[own[by_id[id(sp)]]] = {
                            k: (_step_tensor(v, None) if k == "step" else v[i].clone()) for k, v in state.items()
                        }

    # -- training --------------------------------------------------------------------------
    def sample(self, dataset, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, B, C, H, W) batches B and B' (or None): each run's indices from its own data
        generator in the trainer's order (B, then B'), gathered from the store in one index."""
        second = self.members[0].needs_second_batch
        idx = []
        for g in self.data_generators:
            for _ in range(2 if second else 1):
                idx.append(torch.randint(len(dataset), (batch_size,), generator=g, device=g.device))
        x = dataset.images(torch.cat(idx)).to(self.members[0].param_dtype)
        x = x.view(len(self), 2 if second else 1, batch_size, *x.shape[1:])
        return x[:, 0], (x[:, 1] if second else None)

    def step(self, x1: torch.Tensor, x2: torch.Tensor | None, step: int | list[int] | None = None
             ) -> dict[str, torch.Tensor]:
        """One training step of every run; logs as (N,) tensors, left on the device. ``step``:
        the training step of the runs (steps done before this one), or one per run; None: the
        step after the last one this group made (0 at first). A method's scheduled
        hyper-parameters (``Method.scheduled_hparams``) and its noise are taken at it."""
        if step is None:
            step = self._next_steps or [0] * len(self.members)
        steps = [int(s) for s in step] if isinstance(step, (list, tuple)) else [int(step)] * len(self.members)
        if len(steps) != len(self.members):
            raise ValueError("step: one training step per member")
        self._next_steps = [s + 1 for s in steps]
        if self.strategy == "loop":
            with autocast(x1.device, self.precision):
                per_run = [m.train_step(x1[i], None if x2 is None else x2[i], steps[i])
                           for i, m in enumerate(self.members)]
            return {k: torch.stack([logs[k] for logs in per_run]) for k in per_run[0]}
        scheduled = self.template.m.scheduled_hparams
        if scheduled:  # in place: a captured step (fastpath.GraphStep) reads these very tensors
            for k, v in self._hparams(steps, scheduled).items():
                self.hp[k].copy_(v)
        noise = self._step_noise(steps, x1.shape[1], x1.device)
        if self.strategy == "graph":
            if self._graph is None:
                self._graph = GraphStep(self)
            return self._graph(x1, x2, noise)
        if self.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are consumed
        return {k: v.detach() for k, v in self.run_phases(x1, x2, noise).items()}

    def run_phases(self, x1: torch.Tensor, x2: torch.Tensor | None, noise: dict,
                   graph_safe: bool = False) -> dict[str, torch.Tensor]:
        """Every phase of one step with its optimiser update, vmapped over the runs: the eager
        step, and the function ``fastpath.GraphStep`` captures (``graph_safe``: no autocast cache)."""
        carry, logs = None, {}
        for section, phase, frozen in self.template.m.phases:
            # frozen submodules enter as constants: the loss's gradient does not reach them
            params = {f"m.{n}": (p.detach() if n.split(".", 1)[0] in frozen else p) for n, p in self.params.items()}
            buffers = {f"m.{n}": b for n, b in self.buffers.items()}

            fn = self._phase_fn(phase, x2 is None, carry is None)
            with autocast(x1.device, self.precision, cache=not graph_safe), under_vmap():
                loss, out, carry = fn(params, buffers, x1, x2, noise, self.hp, carry)
            carry = carry[0] if carry else None
            if self.compile:  # compiled (CUDA-graph) outputs are overwritten by the phase's next replay
                carry = None if carry is None else carry.clone()
                out = {k: v.clone() for k, v in out.items()}
            opt = self.optims[section]
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # runs are independent: d(sum)/d(run i's weights) = d(loss_i)
            opt.step()
            logs.update(out)
        return logs

    def _step_noise(self, steps: list[int], batch_size: int, device) -> dict[str, torch.Tensor]:
        """(N, B, ...) noise of the members at their ``steps``: each member's own block
        (``Method.noise_block``, drawn as it would be alone), stacked once per block, so a step
        between block boundaries launches no noise kernel (a view when the runs are in step)."""
        drawn = [m.noise_block(s, batch_size, device, m.param_dtype) for m, s in zip(self.members, steps)]
        blocks, at = [d[0] for d in drawn], [d[1] for d in drawn]
        held = self._noise_blocks
        if held is None or len(held[0]) != len(blocks) or any(a is not b for a, b in zip(held[0], blocks)):
            held = self._noise_blocks = (blocks, {k: torch.stack([b[k] for b in blocks]) for k in blocks[0]})
        if len(set(at)) == 1:
            return {k: v[:, at[0]] for k, v in held[1].items()}
        return {k: torch.stack([v[i, j] for i, j in enumerate(at)]) for k, v in held[1].items()}

    @torch.no_grad()
    def representations(self, x: torch.Tensor, per_run: bool = False) -> torch.Tensor:
        """(N, B, d) codes of images x (B, C, H, W), or with ``per_run`` each run's own images
        x (N, B, C, H, W), under every run's encoder (the metrics' representation, encoder
        means): one batched pass (vmap) or run by run (loop)."""
        if self.strategy == "loop":
            return torch.stack([m.representation(x[i] if per_run else x) for i, m in enumerate(self.members)])
        params = {f"m.{n}": p.detach() for n, p in self.params.items()}
        buffers = {f"m.{n}": b for n, b in self.buffers.items()}
        with under_vmap():
            return vmap(lambda p, b, a: functional_call(self.template, (p, b), ("representation", a)),
                        in_dims=(0, 0, 0 if per_run else None))(params, buffers, x)

    @torch.no_grad()
    def posteriors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, B, d) means and log-variances of q(z|x) for images x (B, C, H, W) under every run's
        encoder (the true TC's mixture), one batched pass (vmap) or run by run (loop)."""
        if self.strategy == "loop":
            out = [m.encode(x) for m in self.members]
            return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])
        params = {f"m.{n}": p.detach() for n, p in self.params.items()}
        buffers = {f"m.{n}": b for n, b in self.buffers.items()}
        with under_vmap():
            return vmap(lambda p, b: functional_call(self.template, (p, b), ("encode", x)))(params, buffers)

    def _phase_fn(self, phase: str, no_x2: bool, no_carry: bool):
        """The phase vmapped over the run axis (compiled if asked), built once per phase."""
        key = (phase, no_x2, no_carry, id(self.template))
        if key not in self._phase_fns:
            def run_phase(p, b, a, a2, nz, hp, c):
                loss, out, c = functional_call(self.template, (p, b), (phase, a, a2, nz, hp, c))
                return loss, out, () if c is None else (c,)  # vmap returns tensors only

            in_dims = (0, 0, 0, None if no_x2 else 0, 0, 0, None if no_carry else 0)
            fn = vmap(run_phase, in_dims=in_dims, randomness="error")
            if self.compile:
                # every vmapped phase of every group is one code object to dynamo (vmap's wrapper):
                # one cache, whose default limit (8) would send later phases back to eager silently
                fn = torch.compile(fn, mode="reduce-overhead" if self.device.type == "cuda" else None)
                limits = torch._dynamo.config  # loaded by torch.compile (importing it costs seconds)
                limits.recompile_limit = max(limits.recompile_limit, 64)
            self._phase_fns = {k: v for k, v in self._phase_fns.items() if k[3] == id(self.template)}
            self._phase_fns[key] = fn
        return self._phase_fns[key]

    def drop_failed(self, logs: dict[str, torch.Tensor], step: int) -> list:
        """Drop runs with a non-finite value in ``logs`` (per-run (N,) tensors, e.g. sums since the
        last check): they are marked failed at ``step``; returns their ids. One host sync."""
        finite = torch.stack([torch.isfinite(v.float()) for v in logs.values()]).all(0).tolist()
        bad = [i for i, ok in enumerate(finite) if not ok]
        if not bad:
            return []
        self.unstack()
        for i in bad:
            self.failed[self.ids[i]] = step
        keep = [i for i, ok in enumerate(finite) if ok]
        self.members = [self.members[i] for i in keep]
        self.data_generators = [self.data_generators[i] for i in keep]
        if self._next_steps is not None:
            self._next_steps = [self._next_steps[i] for i in keep]
        failed_ids = [self.ids[i] for i in bad]
        self.ids = [self.ids[i] for i in keep]
        if self.members:
            self._stack()
        return failed_ids


def _step_tensor(step: torch.Tensor, device) -> torch.Tensor:
    """Adam's step count as a fused/capturable Adam keeps it (float32 on ``device``) or, with
    ``device`` None, as a member's own Adam does (on the CPU, in its dtype)."""
    if device is None:
        return step.detach().to("cpu").clone()
    return step.detach().to(device=device, dtype=torch.float32).clone()
