"""The networks' fast forms (channels_last layout, sub-pixel last decoder layer, one D pass in
FactorVAE's D step) are the same functions of the same parameters as the paper's plain layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from factorvae.nets import ArchSpec, Decoder, Discriminator, Encoder, conv_transpose_4x4_s2


def plain_encoder(spec: ArchSpec, out_dim: int) -> nn.Module:
    """The paper's encoder written out literally (Table 1/2), default layouts."""
    layers: list[nn.Module] = []
    c_in = spec.in_channels
    for c in spec.channels:
        layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.ReLU()]
        c_in = c
    layers += [nn.Flatten(), nn.Linear(c_in * spec.feature_size**2, spec.fc)]
    if spec.encoder_fc_relu:
        layers.append(nn.ReLU())
    layers.append(nn.Linear(spec.fc, 2 * out_dim))
    module = nn.Module()
    module.net = nn.Sequential(*layers)
    return module


def plain_decoder(spec: ArchSpec, z_dim: int) -> nn.Module:
    chans = list(spec.channels[::-1])
    s = spec.feature_size
    module = nn.Module()
    module.fc = nn.Sequential(nn.Linear(z_dim, spec.fc), nn.ReLU(), nn.Linear(spec.fc, chans[0] * s * s), nn.ReLU(),
                              nn.Unflatten(1, (chans[0], s, s)))
    layers: list[nn.Module] = []
    outs = chans[1:] + [spec.in_channels]
    for i, (c_in, c_out) in enumerate(zip(chans, outs)):
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))
        if i < len(outs) - 1:
            layers.append(nn.ReLU())
    module.deconv = nn.Sequential(*layers)
    return module


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


SPECS = [
    pytest.param(ArchSpec(in_channels=1, fc=128), id="dsprites-1ch-fc128"),
    pytest.param(ArchSpec(in_channels=3, fc=256), id="shapes3d-3ch-fc256"),
    pytest.param(ArchSpec(in_channels=3, fc=8, channels=(4, 4, 4, 4), encoder_fc_relu=False), id="tiny"),
    pytest.param(ArchSpec(in_channels=1, fc=16, channels=(8, 16, 8)), id="3-layers"),
]


def grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in module.named_parameters()}


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    """Equal up to float32 rounding: max error within tol of the tensors' scale (gradients are
    sums over many products, so their rounding grows with their size)."""
    return a.shape == b.shape and float((a - b).abs().max()) <= tol * (1 + float(b.abs().max()))


def assert_close_dicts(a: dict, b: dict, tol: float = 1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert close(a[k], b[k], tol), (k, (a[k] - b[k]).abs().max().item(), b[k].abs().max().item())


# -- the sub-pixel transposed conv --------------------------------------------------------------
@pytest.mark.parametrize("c_in,c_out,size", [(32, 1, 32), (32, 3, 32), (64, 64, 4), (5, 2, 7), (3, 4, 1)])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_subpixel_equals_conv_transpose2d(c_in, c_out, size, layout):
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
    x = torch.randn(3, c_in, size, size)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    w = ref.weight.detach().clone().requires_grad_()
    b = ref.bias.detach().clone().requires_grad_()
    y_ref, y = ref(x1), conv_transpose_4x4_s2(x2, w, b)
    assert y.shape == y_ref.shape == (3, c_out, 2 * size, 2 * size)
    assert torch.allclose(y, y_ref, atol=1e-5)
    g = torch.randn_like(y)
    y_ref.backward(g)
    y.backward(g)
    assert close(x2.grad, x1.grad) and close(w.grad, ref.weight.grad) and close(b.grad, ref.bias.grad)


def test_subpixel_exact_in_float64():
    torch.manual_seed(1)
    x, w, b = torch.randn(2, 6, 5, 5, dtype=torch.float64), torch.randn(6, 3, 4, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    assert torch.allclose(conv_transpose_4x4_s2(x, w, b), F.conv_transpose2d(x, w, b, 2, 1), atol=1e-12)
    assert torch.allclose(conv_transpose_4x4_s2(x, w, None), F.conv_transpose2d(x, w, None, 2, 1), atol=1e-12)


# -- encoder / decoder against the plain layers -------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
def test_decoder_equals_plain_stack(spec):
    torch.manual_seed(0)
    fast, plain = Decoder(spec, 10), plain_decoder(spec, 10)
    assert shapes(fast) == shapes(plain)
    plain.load_state_dict(fast.state_dict())
    z = torch.randn(16, 10)
    y, y_ref = fast(z), plain.deconv(plain.fc(z))
    assert y.shape == (16, spec.in_channels, spec.image_size, spec.image_size)
    assert torch.allclose(y, y_ref, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert_close_dicts(grads(fast), grads(plain))


@pytest.mark.parametrize("spec", SPECS)
def test_encoder_equals_plain_stack(spec):
    torch.manual_seed(0)
    fast, plain = Encoder(spec, 10), plain_encoder(spec, 10)
    assert shapes(fast) == shapes(plain)
    plain.load_state_dict(fast.state_dict())
    x = torch.rand(16, spec.in_channels, spec.image_size, spec.image_size)
    mean, logvar = fast(x)
    h = plain.net(x)
    assert mean.shape == logvar.shape == (16, 10)
    assert torch.allclose(mean, h[:, :10], atol=1e-5) and torch.allclose(logvar, h[:, 10:], atol=1e-5)
    g1, g2 = torch.randn_like(mean), torch.randn_like(logvar)
    ((mean * g1).sum() + (logvar * g2).sum()).backward()
    ((h[:, :10] * g1).sum() + (h[:, 10:] * g2).sum()).backward()
    assert_close_dicts(grads(fast), grads(plain))


def test_plain_checkpoint_loads_into_fast_nets():
    """A state_dict of the plain layers (e.g. an older checkpoint) gives the same function."""
    torch.manual_seed(0)
    spec = ArchSpec(in_channels=3, fc=256)
    plain_e, plain_d = plain_encoder(spec, 10), plain_decoder(spec, 10)
    fast_e, fast_d = Encoder(spec, 10), Decoder(spec, 10)
    fast_e.load_state_dict(plain_e.state_dict())
    fast_d.load_state_dict(plain_d.state_dict())
    x, z = torch.rand(4, 3, 64, 64), torch.randn(4, 10)
    with torch.no_grad():
        assert torch.allclose(torch.cat(fast_e(x), 1), plain_e.net(x), atol=1e-5)
        assert torch.allclose(fast_d(z), plain_d.deconv(plain_d.fc(z)), atol=1e-5)


# -- parameter counts of the paper's networks, from the layer shapes by hand ---------------------
def conv(c_in, c_out):  # 4x4 kernels, with bias; same count for Conv2d and ConvTranspose2d
    return c_in * c_out * 16 + c_out


def linear(d_in, d_out):
    return d_in * d_out + d_out


@pytest.mark.parametrize("channels,fc", [(1, 128), (3, 256)])
def test_parameter_counts(channels, fc):
    spec = ArchSpec(in_channels=channels, fc=fc)
    enc = conv(channels, 32) + conv(32, 32) + conv(32, 64) + conv(64, 64) + linear(4 * 4 * 64, fc) + linear(fc, 20)
    dec = linear(10, fc) + linear(fc, 4 * 4 * 64) + conv(64, 64) + conv(64, 32) + conv(32, 32) + conv(32, channels)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(Encoder(spec, 10)) == enc
    assert count(Decoder(spec, 10)) == dec
    # the hand counts spelled out for the 2D Shapes networks (Table 1)
    if channels == 1:
        assert (enc, dec) == (249_172, 248_833)
    else:
        assert (enc, dec) == (383_956, 382_339)
    assert count(Discriminator(10)) == linear(10, 1000) + 5 * linear(1000, 1000) + linear(1000, 2) == 5_018_002


def test_state_dict_keys_are_the_plain_layers():
    spec = ArchSpec()
    assert list(Encoder(spec, 10).state_dict()) == [f"net.{i}.{p}" for i in (0, 2, 4, 6, 9, 11) for p in ("weight", "bias")]
    dec = Decoder(spec, 10).state_dict()
    assert list(dec) == [f"fc.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")] + [
        f"deconv.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")]
    assert dec["deconv.6.weight"].shape == (32, 1, 4, 4)  # ConvTranspose2d layout (C_in, C_out, kH, kW)


def test_eval_and_no_grad_paths_match():
    torch.manual_seed(0)
    spec = ArchSpec()
    enc, dec = Encoder(spec, 10), Decoder(spec, 10)
    x = torch.rand(8, 1, 64, 64)
    with torch.no_grad():
        a = enc(x)[0]
        b = dec(a)
    assert torch.allclose(a, enc(x)[0], atol=1e-6) and torch.allclose(b, dec(a), atol=1e-6)
    # batch 1 (as in traversals) and a non-contiguous input
    assert torch.allclose(enc(x[:1])[0], enc(x)[0][:1], atol=1e-5)
    xt = x.transpose(2, 3)
    assert torch.allclose(enc(xt)[0], enc(xt.contiguous())[0], atol=1e-5)


# -- FactorVAE's step: one D pass over [z; z_perm] equals the two passes of Algorithm 2 ----------
def reference_factorvae_step(model, batch, batch2):
    """Algorithm 2 as first written: two D passes in the D step (paper_spec §1.3)."""
    from factorvae.methods.base import reparameterize, set_requires_grad
    from factorvae.methods.factorvae import permute_dims, total_correlation_logits

    mean, logvar, z, recon, kl_dims = model.elbo_terms(batch)
    set_requires_grad(model.discriminator, False)
    tc = total_correlation_logits(model.discriminator(z)).mean()
    set_requires_grad(model.discriminator, True)
    vae_loss = recon + kl_dims.sum() + model.gamma * tc
    model.step_optimizer(model.vae_optim, vae_loss)
    with torch.no_grad():
        mean2, logvar2 = model.encoder(batch2)
        z_perm = permute_dims(reparameterize(mean2, logvar2, model.generator), model.generator)
    logits_joint = model.discriminator(z.detach())
    logits_perm = model.discriminator(z_perm)
    d_loss = 0.5 * (F.cross_entropy(logits_joint, torch.zeros(len(z), dtype=torch.long))
                    + F.cross_entropy(logits_perm, torch.ones(len(z_perm), dtype=torch.long)))
    model.step_optimizer(model.disc_optim, d_loss)
    return {"loss": vae_loss.detach(), "tc": tc.detach(), "d_loss": d_loss.detach()}


def test_factorvae_step_matches_reference(monkeypatch):
    import factorvae.methods.base as base
    from factorvae.config import resolve
    from factorvae.runs import build_model

    # the reference draws each step's noise as it needs it: blocks of one step draw in that order too
    monkeypatch.setattr(base, "NOISE_BLOCK", 1)

    cfg = resolve({"model": {"name": "factorvae"}, "train": {"device": "cpu"}})
    fast, _ = build_model(cfg, 1, torch.device("cpu"))
    ref, _ = build_model(cfg, 1, torch.device("cpu"))
    torch.manual_seed(3)
    batch, batch2 = (torch.rand(32, 1, 64, 64) > 0.7).float(), (torch.rand(32, 1, 64, 64) > 0.7).float()
    logs = fast.train_step(batch, batch2, 0)
    ref_logs = reference_factorvae_step(ref, batch, batch2)
    for k, v in ref_logs.items():
        assert torch.allclose(logs[k], v, rtol=1e-5, atol=1e-5), k
    # gradients of the last updates (VAE step for encoder/decoder, D step for D) agree
    assert_close_dicts(grads(fast), grads(ref), tol=1e-4)
