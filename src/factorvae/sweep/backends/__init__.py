"""Sweep backends by name: where a sweep's units run (``backends/base.py`` has the contract).
Adding a backend: one module with a ``Backend`` subclass and one line below."""

from __future__ import annotations

from factorvae.errors import UserError
from factorvae.sweep.backends.base import Backend
from factorvae.sweep.backends.local import LocalBackend
from factorvae.sweep.backends.pool import PoolBackend
from factorvae.sweep.backends.raytasks import RayBackend
from factorvae.sweep.backends.slurm import SlurmBackend, SlurmOptions

BACKENDS: dict[str, type[Backend]] = {
    "local": LocalBackend,
    "pool": PoolBackend,
    "ray": RayBackend,
    "slurm": SlurmBackend,
}

__all__ = ["BACKENDS", "Backend", "SlurmOptions", "get_backend"]


def get_backend(name: str, **options) -> Backend:
    """The backend ``name`` built with ``options`` (its constructor's keywords)."""
    if name not in BACKENDS:
        raise UserError(f"unknown sweep backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name](**options)
