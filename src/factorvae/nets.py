"""The paper's networks (Kim & Mnih 2018, Appendix A, Tables 1-2), built from a small spec.

One spec covers 2D Shapes (1 channel, FC 128) and 3D Shapes / CelebA / Chairs (3 channels,
FC 256): conv 4x4 stride 2 with ``channels`` (32, 32, 64, 64) down to 4x4, an FC layer, then
the Gaussian parameters; the decoder mirrors it and returns Bernoulli logits.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from factorvae.errors import UserError

# Speed (benchmarks/train_speed.py): the conv stacks run in channels_last (NHWC) layout, which
# oneDNN's CPU kernels prefer (about 3x faster forward, faster backward, no layout reorders
# around the ReLUs), and the decoder's last transposed conv runs as a stride-1 conv plus a phase
# interleave. Both are the same function of the same parameters, with the plain layers' shapes
# and state_dict keys (tests/test_nets.py checks both against the reference layers).
_CL = torch.channels_last
# Under torch.func.vmap (factorvae.group) a tensor's memory format cannot be queried or set:
# the decoder then leaves its activations in the layout they come in.
_VMAP_DEPTH = 0


@contextlib.contextmanager
def under_vmap():
    """Mark the enclosed calls as running under ``torch.func.vmap`` (no layout changes)."""
    global _VMAP_DEPTH
    _VMAP_DEPTH += 1
    try:
        yield
    finally:
        _VMAP_DEPTH -= 1


def transposed_conv_weight_as_subpixel(weight: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(k=4, s=2, p=1) weight (C_in, C_out, 4, 4) -> Conv2d weight (4 C_out, C_in, 2, 2)
    computing the 4 output phases, phase (r_y, r_x) major (sub-pixel decomposition).

    Output pixel (2m + r_y, 2n + r_x) of the transposed conv sums input rows m - 1 + r_y + a and
    columns n - 1 + r_x + b (a, b in {0, 1}) with kernel tap (3 - r_y - 2a, 3 - r_x - 2b); with the
    kernel flipped that is tap (r_y + 2a, r_x + 2b).
    """
    c_in, c_out = weight.shape[:2]
    k = weight.flip(2, 3).reshape(c_in, c_out, 2, 2, 2, 2)  # (c_in, c_out, a, r_y, b, r_x)
    return k.permute(3, 5, 1, 0, 2, 4).reshape(4 * c_out, c_in, 2, 2)


def conv_transpose_4x4_s2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride=2, padding=1)`` for a 4x4 kernel, as one
    stride-1 2x2 conv over the zero-padded input giving the 4 output phases, then interleaved.

    oneDNN has no fast path for a transposed conv to 1-3 channels; this form is a plain conv.
    """
    n, _, h, w = x.shape
    c_out = weight.shape[1]
    y = F.conv2d(x, transposed_conv_weight_as_subpixel(weight), None if bias is None else bias.repeat(4), 1, 1)
    y = y.view(n, 2, 2, c_out, h + 1, w + 1)  # (n, r_y, r_x, c, m + r_y, n + r_x)
    phases = [y[:, ry, rx, :, ry : ry + h, rx : rx + w] for ry in (0, 1) for rx in (0, 1)]
    out = torch.stack(phases, dim=-1).view(n, c_out, h, w, 2, 2)
    return out.permute(0, 1, 2, 4, 3, 5).reshape(n, c_out, 2 * h, 2 * w)


@dataclass(frozen=True)
class ArchSpec:
    in_channels: int = 1
    image_size: int = 64
    channels: tuple[int, ...] = (32, 32, 64, 64)
    fc: int = 128
    # The paper's table leaves open whether the encoder's FC layer has a ReLU (Table 1):
    # 1Konny has one, nicolasigor not. Default: ReLU, like the decoder's FC layers.
    encoder_fc_relu: bool = True

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        n = len(self.channels)
        if self.image_size % (2**n) or self.image_size // 2**n < 1:
            raise UserError(f"image_size {self.image_size} must be divisible by 2^{n} (one halving per conv layer)")
        if self.in_channels not in (1, 3) or self.fc < 1 or not self.channels or min(self.channels) < 1:
            raise UserError("arch: in_channels must be 1 or 3, fc positive, channels a non-empty list of positive widths")

    @property
    def feature_size(self) -> int:
        return self.image_size // 2 ** len(self.channels)

    @classmethod
    def from_config(cls, cfg: dict, in_channels: int) -> "ArchSpec":
        known = {k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__}
        unknown = set(cfg or {}) - set(known)
        if unknown:
            raise UserError(f"unknown arch option(s): {', '.join(sorted(unknown))}")
        known["in_channels"] = in_channels
        return cls(**known)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class Encoder(nn.Module):
    """x (B, C, 64, 64) in [0, 1] -> (mean, logvar), each (B, out_dim)."""

    def __init__(self, spec: ArchSpec, out_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = spec.in_channels
        for c in spec.channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.ReLU(inplace=True)]
            c_in = c
        layers += [nn.Flatten(), nn.Linear(c_in * spec.feature_size**2, spec.fc)]
        if spec.encoder_fc_relu:
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(spec.fc, 2 * out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim
        # NHWC conv weights make every conv output NHWC, even for a 1-channel input (whose
        # layout is ambiguous); values, shapes and state_dict are unchanged.
        self.to(memory_format=_CL)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x)  # nn.Flatten reads NHWC activations in (C, H, W) order, as always
        return h[:, : self.out_dim], h[:, self.out_dim :]


class Decoder(nn.Module):
    """z (B, z_dim) -> Bernoulli logits (B, C, 64, 64)."""

    def __init__(self, spec: ArchSpec, z_dim: int, batchnorm: bool = False):
        """``batchnorm``: BatchNorm before each hidden ReLU (GAN generators: DCGAN, WGAN-GP);
        the VAE decoders of the paper have none."""
        super().__init__()
        chans = list(spec.channels[::-1])  # 64, 64, 32, 32
        s = spec.feature_size
        bn1 = (lambda n: [nn.BatchNorm1d(n)]) if batchnorm else (lambda n: [])
        self.fc = nn.Sequential(
            nn.Linear(z_dim, spec.fc),
            *bn1(spec.fc),
            nn.ReLU(inplace=True),
            nn.Linear(spec.fc, chans[0] * s * s),
            *bn1(chans[0] * s * s),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (chans[0], s, s)),
        )
        layers: list[nn.Module] = []
        outs = chans[1:] + [spec.in_channels]
        for i, (c_in, c_out) in enumerate(zip(chans, outs)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))
            if i < len(outs) - 1:
                if batchnorm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU(inplace=True))
        self.deconv = nn.Sequential(*layers)
        self.to(memory_format=_CL)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z)
        if not _VMAP_DEPTH:
            h = h.contiguous(memory_format=_CL)
        *hidden, last = self.deconv
        for layer in hidden:
            h = layer(h)
        return conv_transpose_4x4_s2(h, last.weight, last.bias)


class Discriminator(nn.Module):
    """FactorVAE's D (Appendix A): MLP of ``layers`` hidden 1000-unit LeakyReLU(0.2) layers
    and 2 logits (class 0: a sample of q(z); class 1: of prod_j q(z_j)).

    "6 layers" is ambiguous; default = 6 hidden layers, as disentanglement_lib's
    ``fc_discriminator`` ("used in FactorVAE paper"); 1Konny's 6 weight layers = ``layers: 5``.
    """

    def __init__(self, z_dim: int, hidden: int = 1000, layers: int = 6, leak: float = 0.2):
        super().__init__()
        if layers < 1 or hidden < 1:
            raise UserError("discriminator layers and hidden must be >= 1")
        mods: list[nn.Module] = []
        d = z_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.LeakyReLU(leak, inplace=True)]
            d = hidden
        mods.append(nn.Linear(d, 2))
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
