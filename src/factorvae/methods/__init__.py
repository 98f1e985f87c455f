"""Method registry: ``--model NAME`` -> class."""

from __future__ import annotations

from factorvae.errors import UserError
from factorvae.methods.aae import AAE
from factorvae.methods.annealedvae import AnnealedVAE
from factorvae.methods.base import Method
from factorvae.methods.betatcvae import BetaTCVAE
from factorvae.methods.dipvae import DIPVAE1, DIPVAE2
from factorvae.methods.factorvae import FactorVAE
from factorvae.methods.infogan import InfoWGANGP
from factorvae.methods.vae import VAE, BetaVAE

METHODS: dict[str, type[Method]] = {
    "vae": VAE,
    "betavae": BetaVAE,
    "factorvae": FactorVAE,
    "betatcvae": BetaTCVAE,
    "annealedvae": AnnealedVAE,
    "dipvae1": DIPVAE1,
    "dipvae2": DIPVAE2,
    "aae": AAE,
    "infowgan_gp": InfoWGANGP,
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(sorted(METHODS))}") from None
