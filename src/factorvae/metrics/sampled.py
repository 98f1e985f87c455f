"""Sampled representations beside the means: one seeded draw z ~ q(z|x) per image
(disentanglement_lib scores both: its ``representation_function`` is the mean or a sample of
the Gaussian encoder; Locatello et al. 2019, §4 and Appendix: "mean" and "sampled"
representations).

The model is encoded once per image for both: the Codes cache holds [mean, sample] side by
side, and two column views serve the metrics. The draw of an image is a function of
(seed, its flat grid index) only (a counter-based normal: splitmix64 hashes and Box-Muller),
so it does not depend on which metric asked first, the batch it fell in, or the device.
"""

from __future__ import annotations

import numpy as np
import torch

from factorvae.data import require_grid
from factorvae.errors import UserError
from factorvae.metrics import suite
from factorvae.metrics.codes import Codes

REPRESENTATIONS = ("mean", "sampled", "both")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def index_normals(seed: int, flat: np.ndarray, dims: int) -> np.ndarray:
    """Standard normals (N, dims), a fixed function of (seed, flat index, dim)."""
    key = _splitmix64(np.array([seed], dtype=np.uint64))[0]
    counter = np.asarray(flat, dtype=np.uint64)[:, None] * np.uint64(dims) + np.arange(dims, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h1 = _splitmix64(counter ^ key)
        h2 = _splitmix64(h1 + key)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class _Columns(Codes):
    """Columns [a, b) of another Codes: the mean or the sampled half of one shared cache."""

    def __init__(self, base: Codes, a: int, b: int):
        self.full_grid = base.full_grid
        self.grid = base.grid
        self.num_codes = b - a
        self.base, self.a, self.b = base, a, b

    images_encoded = property(lambda self: self.base.images_encoded)
    encoder_calls = property(lambda self: self.base.encoder_calls)
    num_encoded = property(lambda self: self.base.num_encoded)
    fits = property(lambda self: self.base.fits)  # keyed by the data: the halves never collide

    def prefetch(self, classes):
        self.base.prefetch(classes)

    def _lookup(self, flat):
        return self.base._lookup(flat)[:, self.a:self.b]


def posterior_encoder(model, seed: int):
    """``encode_fn(images, flat) -> [mean, mean + std * eps]`` (B, 2D) for a Gaussian encoder
    (``model.encode`` returns (mean, log-variance)); a UserError for any other model."""
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = torch.device("cpu")

    def encode(x, flat):
        out = model.encode(x.to(device)) if hasattr(model, "encode") else None
        if not (isinstance(out, tuple) and len(out) == 2 and out[0].shape == out[1].shape):
            raise UserError(f"{type(model).__name__} has no Gaussian posterior (mean, log-variance): "
                            "the sampled representation needs one; use --representation mean")
        mu, logvar = (t.float().cpu().numpy().astype(np.float64) for t in out)
        z = mu + np.exp(0.5 * logvar) * index_normals(seed, flat, mu.shape[1])
        return torch.from_numpy(np.concatenate([mu, z], axis=1))

    return encode


def posterior_codes(model, dataset, seed: int = 0, batch_size: int = 256, progress: bool = False) -> dict[str, Codes]:
    """{"mean": Codes, "sampled": Codes} of a model over its data set's grid, one encoding
    pass for both (each image encoded at most once)."""
    grid = require_grid(dataset)
    both = Codes.from_encoder(posterior_encoder(model, int(seed)), dataset.images, grid, batch_size=batch_size,
                              progress=progress, with_index=True)
    D = both.num_codes // 2
    return {"mean": _Columns(both, 0, D), "sampled": _Columns(both, D, 2 * D)}


def check_representation(representation: str) -> str:
    if representation not in REPRESENTATIONS:
        raise UserError(f"unknown representation {representation!r}; choose one of {', '.join(REPRESENTATIONS)}")
    return representation


def evaluate_model(model, dataset, representation: str = "mean", preset: str = "fast", seed: int = 0, metrics=None,
                   batch_size: int = 256, progress: bool = False, overrides: dict | None = None) -> dict:
    """``suite.evaluate_model`` for the mean, the sampled representation, or both. ``both``:
    the mean's result as usual plus ``sampled`` (the same metrics, seeds and parameters on
    the sampled codes); the encoder figures count the one shared pass."""
    check_representation(representation)
    if representation == "mean":
        return suite.evaluate_model(model, dataset, preset=preset, seed=seed, metrics=metrics, batch_size=batch_size,
                                    progress=progress, overrides=overrides)
    suite.parse_metrics(metrics), suite.preset_params(preset), suite.check_overrides(overrides)  # fail before encoding
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        codes = posterior_codes(model, dataset, seed=seed, batch_size=batch_size, progress=progress)
        run = {name: suite.evaluate(codes[name], metrics=metrics, preset=preset, seed=seed, overrides=overrides)
               for name in (("mean", "sampled") if representation == "both" else ("sampled",))}
    finally:
        if was_training:
            model.train()
    base = codes["mean"].base
    encoder = {"images_encoded": base.images_encoded, "encoder_calls": base.encoder_calls,
               "distinct_points": base.num_encoded, "grid_points": len(base.grid), "cache": True}
    out = run["mean"] if representation == "both" else run["sampled"]
    out["settings"]["representation"] = representation
    out["encoder"] = encoder
    if representation == "both":
        sampled = run["sampled"]
        sampled.pop("encoder", None)
        out["sampled"] = sampled
    return out


def encode_arrays(model, dataset, flat: np.ndarray, representation: str, seed: int = 0, batch_size: int = 256,
                  progress: bool = True) -> dict[str, np.ndarray]:
    """A codes file's arrays for ``factorvae encode --representation``: ``codes`` = the means
    or the samples; ``both``: ``codes`` (means) and ``codes_sampled``; the log-variances are
    not stored. ``factors``, ``sizes``, ``names`` as ``api.encode_points``."""
    check_representation(representation)
    grid = require_grid(dataset)
    codes = posterior_codes(model, dataset, seed=seed, batch_size=batch_size, progress=progress)
    out = {"factors": grid.classes(flat), "sizes": np.asarray(grid.sizes, dtype=np.int64), "names": np.asarray(grid.names)}
    if representation == "both":
        out["codes"], out["codes_sampled"] = codes["mean"].get_flat(flat), codes["sampled"].get_flat(flat)
    else:
        out["codes"] = codes[representation].get_flat(flat)
    out = {k: (v.astype(np.float32) if k.startswith("codes") else v) for k, v in out.items()}
    out["representation"] = np.asarray(representation)
    return out
