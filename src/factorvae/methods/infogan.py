"""InfoWGAN-GP (paper §4/§6 and Appendix G-H): InfoGAN (Chen et al. 2016)
with the Wasserstein loss and gradient penalty of WGAN-GP (Gulrajani et al. 2017).

Generator input: noise ε ~ N(0, I) (``noise_dim``), continuous codes c ~ U(−1, 1)^``n_cont`` and
categorical codes (one-hot, uniform over ``cat_sizes[k]`` classes each). The generator G is the VAE
decoder (Bernoulli logits; images = sigmoid). The critic D mirrors the encoder (same convs and FC
layer, no BatchNorm, as WGAN-GP requires) with two heads on the shared FC features: the score
D(x) ∈ R and Q(x), which predicts the codes (a Gaussian mean per continuous code, plus a log
variance when ``q_variance: learned``; logits per categorical code).

With L_I(G, Q) = E_{c, ε}[−log Q(c | G(ε, c))] = L_cont + L_cat (Gaussian NLL summed over the
continuous codes + cross-entropy summed over the categorical codes; the variational lower bound of
I(c; G(ε, c)) up to the constant H(c), InfoGAN eq. 4-5):

    critic & Q:  min  E[D(G(ε, c))] − E[D(x)] + λ_gp·E_x̂[(‖∇_x̂ D(x̂)‖₂ − 1)²] + λ·L_I
    generator:   min −E[D(G(ε, c))] + λ·L_I

with x̂ = u·x + (1 − u)·G(ε, c), u ~ U(0, 1) per sample. Q shares the critic's trunk, so the
critic optimiser trains Q, and the generator optimiser moves only G (λ·L_I reaches G through its
images). With λ = 0 Q is never trained (the objective gives it no signal).

One trainer step = ``n_critic`` critic updates, then one generator update. Each critic update
uses its own fresh real batch (WGAN-GP, Gulrajani et al. 2017, Algorithm 1: B, then the
n_critic − 1 batches the trainer stacks into its second batch) and fresh generator samples.

Defaults (the paper gives only the grid): 4 continuous codes + 1 categorical code with
3 classes (one per dSprites factor), noise_dim 10 and λ = 1 (grids {5, ..., 160} and
{0, 0.1, ..., 1}); λ_gp = 10, n_critic = 5, Adam lr 1e-4 betas (0.5, 0.9) for both networks
(Gulrajani et al.; grid: generator lr {1e-3, 1e-4}, critic lr {1e-4, 1e-5}); LeakyReLU(0.2) in
the critic (DCGAN / InfoGAN's choice; ``critic_leak: 0`` is the encoder's ReLU exactly);
Q's Gaussian variance fixed at 1 (InfoGAN's code fixes the std); BatchNorm in the generator
(``generator_norm: batch``; DCGAN, InfoGAN and WGAN-GP's generators have it, the critic must not):
without it the generator's logits run to −∞ within a few hundred steps on dSprites-like data
(blank images, vanishing gradients through the sigmoid; docs/methods.md).

Representation for metrics: Q's prediction of the codes, one dimension per code: the predicted
mean of each continuous code, then the arg-max class (as a float) of each categorical code.
Traversal latents are the "compact" generator inputs [ε, c_cont, class indices]; a traversal moves
one code at a time (continuous from −limit to limit, InfoGAN's Fig. 2 goes to ±2 beyond the
prior's ±1; categorical through its classes), noise fixed.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from factorvae.errors import UserError
from factorvae.gaussian import LOG_2PI as _LOG_2PI
from factorvae.methods.base import Method, check_number, make_adam, set_requires_grad
from factorvae.nets import ArchSpec, Decoder

_GAN_ADAM = {"lr": 1e-4, "betas": [0.5, 0.9], "eps": 1e-8}


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """WGAN-GP's penalty E_x̂[(‖∇_x̂ D(x̂)‖₂ − 1)²] on x̂ = u·real + (1 − u)·fake, u ~ U(0, 1) per
    sample (Gulrajani et al. 2017, Algorithm 1), unweighted. Differentiable in the critic's
    parameters (create_graph), not in ``real`` / ``fake``."""
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    u = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (u * real.detach() + (1 - u) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (torch.linalg.vector_norm(grad.flatten(1), dim=1) - 1).pow(2).mean()


class Critic(nn.Module):
    """The encoder's layers (ArchSpec) as a shared trunk, a score head and a code head Q."""

    def __init__(self, spec: ArchSpec, q_dim: int, leak: float):
        super().__init__()
        act = (lambda: nn.LeakyReLU(leak)) if leak > 0 else (lambda: nn.ReLU())
        layers: list[nn.Module] = []
        c_in = spec.in_channels
        for c in spec.channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), act()]
            c_in = c
        layers += [nn.Flatten(), nn.Linear(c_in * spec.feature_size**2, spec.fc)]
        if spec.encoder_fc_relu:
            layers.append(act())
        self.trunk = nn.Sequential(*layers)
        self.score_head = nn.Linear(spec.fc, 1)
        self.q_head = nn.Linear(spec.fc, q_dim)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """D(x), shape (B,)."""
        return self.score_head(self.trunk(x)).squeeze(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.score_head(h).squeeze(1), self.q_head(h)


class InfoWGANGP(Method):
    name = "infowgan_gp"
    defaults = {
        "noise_dim": 10, "n_cont": 4, "cat_sizes": [3], "lambda_info": 1.0, "lambda_gp": 10.0,
        "n_critic": 5, "q_variance": "fixed", "critic_leak": 0.2, "generator_norm": "batch",
    }
    needs_second_batch = True
    optim_sections = ("gen", "critic")
    optim_defaults = {"gen": dict(_GAN_ADAM), "critic": dict(_GAN_ADAM)}

    @classmethod
    def all_defaults(cls) -> dict:
        d = super().all_defaults()
        d.pop("z_dim")  # the code is noise + codes, sized by noise_dim / n_cont / cat_sizes
        return d

    @classmethod
    def check_options(cls, cfg):
        super().check_options(cfg)
        check_number("model", "noise_dim", cfg["noise_dim"], minimum=0, integer=True)
        n_cont = check_number("model", "n_cont", cfg["n_cont"], minimum=0, integer=True)
        sizes = cfg["cat_sizes"] if cfg["cat_sizes"] is not None else []
        if not isinstance(sizes, (list, tuple)):
            raise UserError(f"model.cat_sizes must be a list of class counts (e.g. [3]), got {sizes!r}")
        for k in sizes:
            check_number("model", "cat_sizes", k, minimum=2, integer=True)
        if n_cont + len(sizes) < 1:
            raise UserError("infowgan_gp needs at least one code: model.n_cont >= 1 or a model.cat_sizes entry")
        check_number("model", "lambda_info", cfg["lambda_info"], minimum=0)
        check_number("model", "lambda_gp", cfg["lambda_gp"], minimum=0)
        check_number("model", "n_critic", cfg["n_critic"], minimum=1, integer=True)
        if cfg["q_variance"] not in ("fixed", "learned"):
            raise UserError(f"model.q_variance must be 'fixed' or 'learned', got {cfg['q_variance']!r}")
        if cfg["generator_norm"] not in ("batch", "none"):
            raise UserError(f"model.generator_norm must be 'batch' or 'none', got {cfg['generator_norm']!r}")
        leak = check_number("model", "critic_leak", cfg["critic_leak"], minimum=0)
        if leak >= 1:
            raise UserError(f"model.critic_leak must be in [0, 1), got {leak!r}")

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        c = self.cfg  # validated by resolve (check_options)
        self.noise_dim = int(c["noise_dim"])
        self.n_cont = int(c["n_cont"])
        self.cat_sizes = [int(k) for k in (c["cat_sizes"] or [])]
        c["cat_sizes"] = list(self.cat_sizes)
        self.lambda_info = float(c["lambda_info"])
        self.lambda_gp = float(c["lambda_gp"])
        self.n_critic = int(c["n_critic"])
        # WGAN-GP draws a fresh real batch for every critic update: B, then n_critic - 1 more in B'
        self.needs_second_batch = self.n_critic > 1
        self.second_batches = max(1, self.n_critic - 1)
        self.learned_variance = c["q_variance"] == "learned"
        leak = float(c["critic_leak"])

        #: one representation dimension per code
        self.z_dim = self.n_cont + len(self.cat_sizes)
        #: compact latent: [noise, continuous codes, class index per categorical code]
        self.latent_dim = self.noise_dim + self.z_dim
        self.input_dim = self.noise_dim + self.n_cont + sum(self.cat_sizes)
        q_dim = self.n_cont * (2 if self.learned_variance else 1) + sum(self.cat_sizes)
        self.generator_net = Decoder(self.arch, self.input_dim, batchnorm=c["generator_norm"] == "batch")
        self.critic = Critic(self.arch, q_dim, leak)
        self.gen_optim = make_adam(self.generator_net.parameters(), optim_cfg.get("gen", {}), "optim.gen")
        self.critic_optim = make_adam(self.critic.parameters(), optim_cfg.get("critic", {}), "optim.critic")

    def optimizers(self):
        return {"gen": self.gen_optim, "critic": self.critic_optim}

    # -- latents -----------------------------------------------------------------------------
    def sample_codes(self, n: int, generator: torch.Generator | None = None, device=None):
        """(noise (n, noise_dim), continuous codes (n, n_cont), class indices (n, n_cat))."""
        g = self.generator if generator is None else generator
        dev = g.device if device is None else device
        noise = torch.randn(n, self.noise_dim, generator=g, device=dev)
        cont = torch.rand(n, self.n_cont, generator=g, device=dev) * 2 - 1
        cat = torch.stack([torch.randint(k, (n,), generator=g, device=dev) for k in self.cat_sizes], 1) \
            if self.cat_sizes else torch.zeros(n, 0, dtype=torch.long, device=dev)
        return noise, cont, cat

    def generator_input(self, noise, cont, cat) -> torch.Tensor:
        onehots = [F.one_hot(cat[:, k], kk).to(noise.dtype) for k, kk in enumerate(self.cat_sizes)]
        return torch.cat([noise, cont, *onehots], dim=1)

    def split_compact(self, z: torch.Tensor):
        """Compact latent (B, latent_dim) -> (noise, cont, class indices); indices rounded and
        clipped to the valid classes."""
        noise, cont = z[:, : self.noise_dim], z[:, self.noise_dim : self.noise_dim + self.n_cont]
        idx = z[:, self.noise_dim + self.n_cont :].round().long()
        sizes = torch.tensor(self.cat_sizes, device=z.device, dtype=torch.long)
        return noise, cont, torch.minimum(idx.clamp(min=0), sizes - 1)

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Compact latents from the generator's input distribution (for sample sheets)."""
        noise, cont, cat = self.sample_codes(n, generator, device=generator.device)
        return torch.cat([noise, cont, cat.to(noise.dtype)], dim=1)

    # -- losses ------------------------------------------------------------------------------
    def info_loss(self, q_out: torch.Tensor, cont: torch.Tensor, cat: torch.Tensor):
        """(L_cont, L_cat, categorical accuracy): −log Q(c|x) split by code type, summed over
        codes, mean over the batch."""
        n = self.n_cont
        mu = q_out[:, :n]
        logvar = q_out[:, n : 2 * n] if self.learned_variance else torch.zeros_like(mu)
        l_cont = (0.5 * (_LOG_2PI + logvar + (cont - mu).pow(2) * torch.exp(-logvar))).sum(1).mean()
        logits = q_out[:, n * (2 if self.learned_variance else 1) :]
        l_cat = q_out.new_zeros(())
        correct = q_out.new_zeros(())
        start = 0
        for k, size in enumerate(self.cat_sizes):
            lk = logits[:, start : start + size]
            l_cat = l_cat + F.cross_entropy(lk, cat[:, k])
            correct = correct + (lk.argmax(1) == cat[:, k]).float().mean()
            start += size
        acc = correct / max(1, len(self.cat_sizes))
        return l_cont, l_cat, acc

    def fake_images(self, noise, cont, cat) -> torch.Tensor:
        return torch.sigmoid(self.generator_net(self.generator_input(noise, cont, cat)))

    def train_step(self, batch, batch2, step):
        reals = [batch] if batch2 is None else [batch, *batch2.split(len(batch))]
        for i in range(self.n_critic):
            real = reals[i % len(reals)]
            noise, cont, cat = self.sample_codes(len(real), device=real.device)
            with torch.no_grad():
                fake = self.fake_images(noise, cont, cat)
            score_real = self.critic.score(real)
            score_fake, q_out = self.critic(fake)
            gp = gradient_penalty(self.critic.score, real, fake, self.generator)
            l_cont, l_cat, acc = self.info_loss(q_out, cont, cat)
            wdist = score_real.mean() - score_fake.mean()
            critic_loss = -wdist + self.lambda_gp * gp + self.lambda_info * (l_cont + l_cat)
            self.critic_optim.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optim.step()

        noise, cont, cat = self.sample_codes(len(batch), device=batch.device)
        set_requires_grad(self.critic, False)
        score_fake, q_out = self.critic(self.fake_images(noise, cont, cat))
        g_cont, g_cat, _ = self.info_loss(q_out, cont, cat)
        gen_loss = -score_fake.mean() + self.lambda_info * (g_cont + g_cat)
        self.gen_optim.zero_grad(set_to_none=True)
        gen_loss.backward()
        self.gen_optim.step()
        set_requires_grad(self.critic, True)

        # logs of the last critic update (L_I of the generator's samples as "mi")
        return {"loss": critic_loss.detach(), "critic_loss": critic_loss.detach(), "wdist": wdist.detach(),
                "gp": gp.detach(), "gen_loss": gen_loss.detach(), "mi": (g_cont + g_cat).detach(),
                "mi_cont": g_cont.detach(), "mi_cat": g_cat.detach(), "q_acc": acc.detach()}

    # -- codes, images, traversals ------------------------------------------------------------
    @torch.no_grad()
    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """Q's prediction of the codes (B, n_cont + n_cat): continuous means, then class indices."""
        q_out = self.critic(x)[1]
        parts = [q_out[:, : self.n_cont]]
        start = self.n_cont * (2 if self.learned_variance else 1)
        for size in self.cat_sizes:
            parts.append(q_out[:, start : start + size].argmax(1, keepdim=True).to(q_out.dtype))
            start += size
        return torch.cat(parts, 1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For generic code: (Q's prediction, zeros). Not a posterior: there is no KL to read."""
        r = self.representation(x)
        return r, torch.zeros_like(r)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Generator logits for compact latents (B, latent_dim)."""
        return self.generator_net(self.generator_input(*self.split_compact(z)))

    @torch.no_grad()
    def latent_traversal_base(self, x: torch.Tensor) -> torch.Tensor:
        """Compact latents [fixed noise, Q's codes for x]: the noise is a fixed draw (seed 0) per
        reference, so traversals are reproducible and leave the training RNG alone."""
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(len(x), self.noise_dim, generator=g).to(x.device, x.dtype)
        return torch.cat([noise, self.representation(x)], 1)

    def traversal_values(self, limit: float = 2.0, steps: int = 10) -> list[tuple[int, torch.Tensor]]:
        """Code dimensions only (noise stays fixed): continuous codes from −limit to limit;
        categorical codes through their classes, each class repeated to fill ``steps`` columns."""
        out = [(self.noise_dim + j, torch.linspace(-limit, limit, steps)) for j in range(self.n_cont)]
        for k, size in enumerate(self.cat_sizes):
            classes = torch.floor(torch.linspace(0, size - 1e-3, steps)) if steps >= size else torch.arange(steps)
            out.append((self.noise_dim + self.n_cont + k, classes.float()))
        return out
