"""The diagonal Gaussian log density, the one home of log N(z; μ, σ²) and log 2π (the
posteriors q(z|x) and prior p(z) of Kim & Mnih 2018, Section 2)."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(z; mean, exp(logvar)) (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar))
