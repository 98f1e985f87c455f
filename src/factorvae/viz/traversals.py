"""What a model learned, as pictures: latent traversals (paper Fig. 6: one row per latent
dimension, values from -2 to 2 for fixed reference images; each row starts with the reference
image itself), reconstructions, samples from the
prior, and the per-dimension KL that tells which dimensions are active."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from factorvae.io import atomic_write, atomic_write_json, check_out_dir
from factorvae.methods.base import gaussian_kl_per_dim
from factorvae.viz.tiles import grid_image, save_png, to_uint8


#: the names ``write_run_images`` writes (step tag optional): all a folder of its images holds
IMAGE_NAMES = re.compile(r"kl_per_dim\.json|(reconstructions|samples|traversal)(_\d{8})?(_ref\d+)?\.(png|gif)")


def check_images_out(out: str | Path) -> Path:
    """Refuse an output folder for ``write_run_images`` that holds anything it does not write
    (the run directory itself, the user's folder): new, empty, or earlier images only."""
    return check_out_dir(out, lambda _, names: all(IMAGE_NAMES.fullmatch(n) for n in names),
                         "a folder of run images (traversals, samples, reconstructions)")


def reference_indices(dataset, count: int = 3) -> np.ndarray:
    """Fixed reference images: the same for every run on a data set."""
    rng = np.random.default_rng(20180215)
    return np.sort(rng.choice(len(dataset), size=min(count, len(dataset)), replace=False))


@torch.no_grad()
def kl_per_dim(model, dataset, n: int = 1024, batch: int = 256) -> np.ndarray | None:
    """Mean KL(q(z_j|x) || N(0,1)) per dimension over n fixed images (None if the model has no
    Gaussian posterior), with the model in eval mode."""
    if not hasattr(model, "encoder"):
        return None
    was_training = model.training
    model.eval()
    idx = np.random.default_rng(7).choice(len(dataset), size=min(n, len(dataset)), replace=False)
    total = 0
    for s in range(0, len(idx), batch):
        mean, logvar = model.encode(dataset.images(idx[s : s + batch]))
        total = total + gaussian_kl_per_dim(mean, logvar) * len(mean)
    model.train(was_training)
    return (total / len(idx)).cpu().numpy()


@torch.no_grad()
def mean_std_per_dim(model, dataset, n: int = 1024, batch: int = 256) -> np.ndarray | None:
    """Std of each latent's encoder mean over the same n fixed images as ``kl_per_dim`` (None
    without a Gaussian posterior): the FactorVAE metric's rule for an active latent (std >= 0.05,
    Kim & Mnih 2018 §4), here on n images instead of the metric's own sample."""
    if not hasattr(model, "encoder"):
        return None
    was_training = model.training
    model.eval()
    idx = np.random.default_rng(7).choice(len(dataset), size=min(n, len(dataset)), replace=False)
    means = torch.cat([model.encode(dataset.images(idx[s : s + batch]))[0] for s in range(0, len(idx), batch)])
    model.train(was_training)
    return means.std(0).cpu().numpy() if len(idx) > 1 else None


@torch.no_grad()
def traversal_frames(model, x: torch.Tensor, limit: float = 2.0, steps: int = 10):
    """Images (refs, dims, steps, C, H, W) moving one latent at a time from each reference's
    code, and the dims traversed."""
    base = model.latent_traversal_base(x)  # (R, Z)
    dims = model.traversal_values(limit, steps)
    rows = []
    for j, values in dims:
        z = base[:, None, :].repeat(1, len(values), 1)
        z[:, :, j] = values.to(z)
        rows.append(model.decode_images(z.reshape(-1, z.shape[-1])).reshape(len(base), len(values), *x.shape[1:]))
    return torch.stack(rows, 1), [j for j, _ in dims]


@torch.no_grad()
def write_run_images(model, dataset, out_dir: Path, step: int | None = None, limit: float = 2.0, steps: int = 10,
                     references: int = 3, seed: int = 0, kl: np.ndarray | None = None) -> dict:
    """Reconstructions, prior samples, traversals (PNG per reference + one GIF) and KL per dim
    (``kl``: already computed by ``kl_per_dim``). Returns {kind: path} of what was written."""
    was_training = model.training
    model.eval()
    out_dir = Path(out_dir)
    tag = "" if step is None else f"_{step:08d}"
    written: dict = {}
    if kl is None:
        kl = kl_per_dim(model, dataset)
    order_note = None
    if kl is not None:
        atomic_write_json(out_dir / "kl_per_dim.json", {"step": step, "kl": [float(v) for v in kl]})
        written["kl_per_dim"] = str(out_dir / "kl_per_dim.json")
        order_note = kl

    # reconstructions: originals on top, reconstructions below
    idx = np.random.default_rng(seed + 1).choice(len(dataset), size=min(8, len(dataset)), replace=False)
    x = dataset.images(idx)
    if hasattr(model, "encoder"):
        recon = model.decode_images(model.representation(x))
        img = grid_image(to_uint8(torch.cat([x, recon])), nrow=2)
        written["reconstructions"] = str(save_png(img, out_dir / f"reconstructions{tag}.png"))

    # samples from the prior (or the generator's input distribution)
    g = torch.Generator(device="cpu").manual_seed(seed)
    if hasattr(model, "sample_latents"):
        z = model.sample_latents(64, g)
    else:
        z = torch.randn(64, model.z_dim, generator=g)
    samples = model.decode_images(z.to(next(model.parameters()).device))
    written["samples"] = str(save_png(grid_image(to_uint8(samples), nrow=8), out_dir / f"samples{tag}.png"))

    # traversals: one sheet per reference image, rows = latent dims labelled with their KL; the
    # first column is the reference image itself (what the traversal starts from)
    refs = dataset.images(reference_indices(dataset, references))
    frames, dims = traversal_frames(model, refs, limit, steps)
    labels = [f"z{j}" + (f" {order_note[j]:.2f}" if order_note is not None and j < len(order_note) else "") for j in dims]
    paths = []
    for r in range(frames.shape[0]):
        rows = torch.cat([refs[r].to(frames)[None, None].expand(len(dims), 1, *frames.shape[3:]), frames[r]], 1)
        sheet = to_uint8(rows.reshape(-1, *frames.shape[3:]))
        paths.append(str(save_png(grid_image(sheet, nrow=len(dims), labels=labels), out_dir / f"traversal{tag}_ref{r}.png")))
    written["traversals"] = paths

    # GIF: frame t shows every dim of every reference at value t (there and back)
    gif_frames = []
    order = list(range(frames.shape[2])) + list(range(frames.shape[2] - 2, 0, -1))
    for t in order:
        tiles = to_uint8(frames[:, :, t].permute(1, 0, 2, 3, 4).reshape(-1, *frames.shape[3:]))
        gif_frames.append(grid_image(tiles, nrow=len(dims), labels=labels))
    gif = out_dir / f"traversal{tag}.gif"
    atomic_write(gif, lambda f: gif_frames[0].save(f, format="GIF", save_all=True, append_images=gif_frames[1:],
                                                       duration=120, loop=0))
    written["traversal_gif"] = str(gif)
    if was_training:
        model.train()
    return written
