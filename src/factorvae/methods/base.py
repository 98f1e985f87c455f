"""What every method shares: config validation, the Gaussian encoder / Bernoulli or Gaussian decoder losses,
and the contract the trainer relies on.

A method is an ``nn.Module`` that owns its optimisers and exposes
``train_step(batch, batch2, step) -> dict of scalar tensors`` (so two-optimiser methods such as
FactorVAE are no special case), ``encode(x) -> (mean, logvar)``, ``decode(z) -> logits``,
``representation(x) -> codes`` for metrics, and ``optimizers() -> dict`` for checkpoints.

Methods that can train as a vectorised group (:mod:`factorvae.group`) are noise-explicit: one step
takes all its noise first (``draw_noise``, from the method's generator, in a fixed order; drawn
for ``NOISE_BLOCK`` steps at once by ``noise_block``, the same way alone and in a group), then
runs its ``phases``: pure functions of (batch, batch2, noise, hyper-parameters, carry) returning
a loss for one optimiser. ``train_step`` runs them for one model; the group runs the same
functions under ``torch.func.vmap`` over stacked parameters.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from factorvae.errors import UserError, check_keys
from factorvae.nets import ArchSpec, Decoder, Encoder


#: training steps whose noise one draw covers (``Method.noise_block``): a group member draws its
#: noise once per block instead of a few kernels per step; blocks start at multiples of it
NOISE_BLOCK = 100


def check_number(section: str, key: str, value, *, minimum: float | None = None, exclusive: bool = False,
                 integer: bool = False) -> float:
    """A config value that must be a (finite) number, optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise UserError(f"{section}.{key} must be a number, got {value!r}")
    if integer and float(value) != int(value):
        raise UserError(f"{section}.{key} must be a whole number, got {value!r}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        rel = ">" if exclusive else ">="
        raise UserError(f"{section}.{key} must be {rel} {minimum}, got {value!r}")
    return int(value) if integer else float(value)


def adam_options(cfg: dict, section: str) -> dict:
    """Validated Adam keyword arguments (lr, betas, eps) of an ``optim.<section>`` mapping."""
    lr = check_number(section, "lr", cfg.get("lr"), minimum=0, exclusive=True)
    betas = cfg.get("betas", [0.9, 0.999])
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise UserError(f"{section}.betas must be a list of two numbers, got {betas!r}")
    b = [check_number(section, "betas", v, minimum=0) for v in betas]
    if any(v >= 1 for v in b):
        raise UserError(f"{section}.betas must lie in [0, 1), got {betas!r}")
    eps = check_number(section, "eps", cfg.get("eps", 1e-8), minimum=0, exclusive=True)
    return {"lr": lr, "betas": tuple(b), "eps": eps}


def make_adam(params, cfg: dict, section: str) -> torch.optim.Adam:
    return torch.optim.Adam(params, **adam_options(cfg, section))


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z = mean + sigma * eps, eps ~ N(0, I) from an explicit generator."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return gaussian_sample(mean, logvar, eps)


def gaussian_sample(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mean + sigma * eps for given standard normal noise eps (the reparameterisation, paper §2)."""
    return mean + eps * torch.exp(0.5 * logvar)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) for a Bernoulli decoder: cross-entropy summed over pixels and channels,
    mean over the batch (paper §2 and Appendix A). Pixels in [0, 1] are the Bernoulli targets."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


#: decoder likelihoods p(x|z) (``model.likelihood``); both decoders output logits, the image mean is sigmoid(logits)
LIKELIHOODS = ("bernoulli", "gaussian")
#: log pi: the normalising constant per pixel of the Gaussian decoder N(x; sigmoid(logits), 1/2)
_LOG_PI = math.log(math.pi)


def recon_loss(logits: torch.Tensor, x: torch.Tensor, likelihood: str = "bernoulli") -> torch.Tensor:
    """The reconstruction term of the training loss, summed over pixels and channels, mean over
    the batch. ``bernoulli``: -log p(x|z), the sigmoid cross-entropy (nats; paper §2).
    ``gaussian``: disentanglement_lib's ``l2_loss`` on sigmoid outputs, sum (x - sigmoid)^2,
    which is -log N(x; sigmoid(logits), sigma^2 = 1/2) less its constant (D/2) log pi."""
    if likelihood == "gaussian":
        return (x - torch.sigmoid(logits)).pow(2).sum() / x.shape[0]
    return bernoulli_nll(logits, x)


def log_px_given_z(logits: torch.Tensor, x: torch.Tensor, likelihood: str = "bernoulli") -> torch.Tensor:
    """log p(x|z) per image (B,), nats, normalised: Bernoulli, or Gaussian with mean
    sigmoid(logits) and variance 1/2 per pixel (the density whose NLL ``recon_loss`` trains)."""
    if likelihood == "gaussian":
        d = x[0].numel()
        return -(x - torch.sigmoid(logits)).pow(2).flatten(1).sum(1) - 0.5 * d * _LOG_PI
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_kl_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z_j|x) || N(0, 1)) = 0.5 (mu^2 + sigma^2 - log sigma^2 - 1), mean over the batch,
    one value per latent dimension."""
    return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).mean(dim=0)


class Method(nn.Module):
    """Base class; subclasses set ``name``, ``defaults`` (their own model options) and
    implement ``train_step``."""

    name = "method"
    #: model options with their defaults; ``model.<key>`` in the config
    defaults: dict = {}
    #: whether train_step uses the second, independent batch (Algorithm 2's B')
    needs_second_batch = False
    #: how many independent batches of the batch size the second batch holds, stacked
    #: (1: Algorithm 2's B'; a WGAN critic wants a fresh real batch per update)
    second_batches = 1
    #: optimiser sections this method reads from ``optim``
    optim_sections: tuple[str, ...] = ("vae",)
    #: defaults for optimiser sections the global config lacks (config DEFAULTS has vae, disc)
    optim_defaults: dict = {}
    #: (optimiser section, phase method, submodules frozen in that phase) in update order;
    #: empty = not noise-explicit, cannot train in a vectorised group
    phases: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    #: model options that may differ between the runs of one group (per-run tensors there)
    group_hparams: tuple[str, ...] = ()
    #: those of ``group_hparams`` whose value depends on the training step (a schedule such as
    #: AnnealedVAE's capacity): ``hparams(step)`` computes them, a group recomputes them each step
    scheduled_hparams: tuple[str, ...] = ()

    def __init__(self, model_cfg: dict, optim_cfg: dict, in_channels: int, generator: torch.Generator):
        super().__init__()
        self.cfg = self.resolve(model_cfg)
        self.generator = generator
        self._noise: tuple | None = None  # (key, block, generator state before the block)
        self._noise_resume: tuple | None = None  # (block start, generator state) from a checkpoint
        # a method whose code is not one Gaussian vector (InfoWGAN-GP) leaves z_dim out of its
        # defaults and sets self.z_dim itself
        self.z_dim = int(self.cfg["z_dim"]) if "z_dim" in self.cfg else None
        self.arch = ArchSpec.from_config(self.cfg.get("arch", {}), in_channels)

    def __repr__(self) -> str:
        """One line (print(model.encoder) etc. show the layers): name, options, size."""
        opts = ", ".join(f"{k}={v}" for k, v in self.cfg.items() if not isinstance(v, dict) and k != "arch")
        params = sum(p.numel() for p in self.parameters())
        return f"{type(self).__name__}({self.name}: {opts}; {params / 1e6:.2f}M parameters)"

    # -- config ----------------------------------------------------------------------------
    @classmethod
    def all_defaults(cls) -> dict:
        d = {"z_dim": 10, "arch": {}}
        for klass in reversed(cls.__mro__):
            d.update(getattr(klass, "defaults", {}))
        return d

    @classmethod
    def resolve(cls, model_cfg: dict) -> dict:
        """The method's complete, validated model options (``model.*``): its defaults updated
        with ``model_cfg``. Builds nothing; ``__init__`` calls it and then trusts the values."""
        cfg = cls.all_defaults()
        given = {k: v for k, v in (model_cfg or {}).items() if k != "name"}
        check_keys(f"{cls.name} model option", given, cfg)
        cfg.update(given)
        if not isinstance(cfg.get("arch") or {}, dict):
            raise UserError(f"model.arch must be a mapping, got {cfg['arch']!r}")
        # spell the architecture out, so config.yaml records it completely
        cfg["arch"] = {"channels": [32, 32, 64, 64], "fc": 128, "encoder_fc_relu": True, **(cfg.get("arch") or {})}
        cls.check_options(cfg)
        return cfg

    @classmethod
    def check_options(cls, cfg: dict) -> None:
        """Raise a UserError for a bad model option value; subclasses add their own options."""
        if "z_dim" in cfg:
            check_number("model", "z_dim", cfg["z_dim"], minimum=1, integer=True)
        ArchSpec.from_config(cfg["arch"], in_channels=1)  # a plain dataclass: checks the layer sizes

    @classmethod
    def validate(cls, model_cfg: dict, optim_cfg: dict) -> dict:
        """Validate a config's ``model`` and ``optim`` sections without building anything (what
        ``config.resolve`` calls); returns the resolved model options."""
        cfg = cls.resolve(model_cfg)
        for section in cls.optim_sections:
            adam_options(optim_cfg.get(section) or {}, f"optim.{section}")
        return cfg

    # -- the contract ------------------------------------------------------------------------
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, batch: torch.Tensor, batch2: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        """One step of a noise-explicit method: draw the step's noise, then each phase's loss and
        optimiser update in order (a later phase sees the parameters the earlier ones updated)."""
        if not self.phases:
            raise NotImplementedError
        if self.needs_second_batch and batch2 is None:
            raise ValueError(f"{self.name} needs a second batch (the trainer's B')")
        block, i = self.noise_block(step, len(batch), batch.device, self.param_dtype)
        noise = {k: v[i] for k, v in block.items()}
        hp, carry, logs = self.hparams(step), None, {}
        optims = self.optimizers()
        for section, phase, frozen in self.phases:
            for name in frozen:  # frozen: the loss's gradient must not reach these weights
                set_requires_grad(getattr(self, name), False)
            loss, out, carry = getattr(self, phase)(batch, batch2, noise, hp, carry)
            for name in frozen:
                set_requires_grad(getattr(self, name), True)
            self.step_optimizer(optims[section], loss)
            logs.update(out)
        return {k: v.detach() for k, v in logs.items()}

    @staticmethod
    def step_optimizer(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def draw_noise(self, batch_size: int, device, dtype) -> dict[str, torch.Tensor]:
        """All random numbers of one step, drawn from ``self.generator`` in a fixed order."""
        raise NotImplementedError

    def noise_block(self, step: int, batch_size: int, device, dtype) -> tuple[dict[str, torch.Tensor], int]:
        """The noise of the ``NOISE_BLOCK`` training steps from ``step - step % NOISE_BLOCK`` on, as
        (K, B, ...) tensors of one ``draw_noise`` call (its draws are i.i.d. per batch row), and
        ``step``'s index in them. Noise is a function of the step: a block is drawn once, when
        a step first needs it, and the next block starts where the generator then stands."""
        start = step - step % NOISE_BLOCK
        key = (start, batch_size, torch.device(device), dtype)
        if self._noise is None or self._noise[0] != key:
            now = self.generator.get_state()
            resume, self._noise_resume = self._noise_resume, None
            resumed = resume is not None and resume[0] == start
            if resumed:  # restored mid-block: redraw the block as it was drawn
                self.generator.set_state(resume[1])
            state = self.generator.get_state()
            block = self.draw_noise(NOISE_BLOCK * batch_size, device, dtype)
            block = {k: v.view(NOISE_BLOCK, batch_size, *v.shape[1:]) for k, v in block.items()}
            if resumed:  # and go on from where the checkpoint left the generator
                self.generator.set_state(now)
            self._noise = (key, block, state)
        return self._noise[1], step - start

    def noise_checkpoint(self, step: int) -> torch.Tensor | None:
        """For a checkpoint after ``step`` steps in the middle of a noise block: the generator's
        state before that block (the checkpoint's own state lies after it), else None."""
        if step % NOISE_BLOCK == 0 or self._noise is None or self._noise[0][0] != step - step % NOISE_BLOCK:
            return None
        return self._noise[2]

    def resume_noise(self, step: int, state: torch.Tensor | None) -> None:
        """A run restored at ``step``: its block's noise is redrawn from ``state`` (``noise_checkpoint``)."""
        self._noise = None
        self._noise_resume = None if state is None else (step - step % NOISE_BLOCK, state.cpu())

    def hparams(self, step: int = 0) -> dict[str, float]:
        """The per-run hyper-parameters the phases read (``group_hparams``) at training step
        ``step`` (steps done before this one); a method with a schedule overrides this and
        names the step-dependent keys in ``scheduled_hparams``."""
        return {k: getattr(self, k) for k in self.group_hparams}

    @property
    def param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @torch.no_grad()
    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """Codes for metrics: the encoder mean (paper §4: the mean of q(z|x))."""
        return self.encode(x)[0]

    def latent_traversal_base(self, x: torch.Tensor) -> torch.Tensor:
        """Latent vectors (B, z_dim) a traversal starts from, for reference images x."""
        return self.representation(x)

    def traversal_values(self, limit: float = 2.0, steps: int = 10) -> list[tuple[int, torch.Tensor]]:
        """(latent index, values it takes) for each traversable dimension; by default every
        latent dimension from -limit to +limit. Methods with categorical codes override this."""
        values = torch.linspace(-limit, limit, steps)
        return [(j, values) for j in range(self.z_dim)]

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (Bernoulli means) for latent vectors z."""
        return torch.sigmoid(self.decode(z))


class GaussianVAEBase(Method):
    """Gaussian encoder q(z|x), N(0, I) prior and a Bernoulli (paper §2) or Gaussian decoder
    (``model.likelihood``, see ``recon_loss``)."""

    defaults = {"likelihood": "bernoulli"}

    @classmethod
    def check_options(cls, cfg):
        super().check_options(cfg)
        if cfg["likelihood"] not in LIKELIHOODS:
            raise UserError(f"model.likelihood must be one of {', '.join(LIKELIHOODS)}, got {cfg['likelihood']!r}")

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        self.likelihood = self.cfg["likelihood"]
        self.encoder = Encoder(self.arch, self.z_dim)
        self.decoder = Decoder(self.arch, self.z_dim)
        self.vae_optim = make_adam(
            list(self.encoder.parameters()) + list(self.decoder.parameters()), optim_cfg.get("vae", {}), "optim.vae"
        )

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def optimizers(self):
        return {"vae": self.vae_optim}

    def standard_normal(self, batch_size: int, device, dtype) -> torch.Tensor:
        """eps ~ N(0, I) of shape (batch_size, z_dim) from the method's generator."""
        return torch.randn((batch_size, self.z_dim), generator=self.generator, device=device, dtype=dtype)

    def elbo_terms(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """Forward pass for the ELBO: mean, logvar, sampled z, reconstruction NLL, per-dim KL.
        ``eps``: the reparameterisation noise (default: drawn from the method's generator)."""
        mean, logvar = self.encoder(x)
        z = reparameterize(mean, logvar, self.generator) if eps is None else gaussian_sample(mean, logvar, eps)
        recon = recon_loss(self.decoder(z), x, self.likelihood)
        return mean, logvar, z, recon, gaussian_kl_per_dim(mean, logvar)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
