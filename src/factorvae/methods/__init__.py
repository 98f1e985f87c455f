"""Method registry: ``--model NAME`` -> class."""

from __future__ import annotations

from factorvae.errors import UserError
from factorvae.methods.base import Method
from factorvae.methods.factorvae import FactorVAE
from factorvae.methods.vae import VAE, BetaVAE

METHODS: dict[str, type[Method]] = {
    "vae": VAE,
    "betavae": BetaVAE,
    "factorvae": FactorVAE,
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(sorted(METHODS))}") from None
