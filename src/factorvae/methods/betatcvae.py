"""β-TCVAE (Chen et al. 2018, Eq. 4): the ELBO with the total-correlation part of its
KL term weighted by β.

The KL term of the ELBO decomposes (Chen et al. eq. 2) as

    E_p(n)[KL(q(z|n) || p(z))] = I_q(z; n) + KL(q(z) || Π_j q(z_j)) + Σ_j KL(q(z_j) || p(z_j)),

and β-TCVAE minimises recon + α·I + β·TC + γ·dim-wise KL with α = γ = 1, i.e.

    loss = E_q[−log p(x|z)] + KL(q(z|x) || p(z)) + (β − 1)·TC(z),

the KL taken analytically per data point and TC estimated on the batch's sampled z by minibatch
weighted (``mws``, default, as the authors' code and disentanglement_lib) or stratified
(``mss``) sampling, see :mod:`factorvae.methods.estimators`. β = 1 is the plain VAE.
"""

from __future__ import annotations

from factorvae.errors import UserError
from factorvae.methods.base import check_number
from factorvae.methods.estimators import check_estimator, total_correlation
from factorvae.methods.vae import VAE


class BetaTCVAE(VAE):
    name = "betatcvae"
    # β = 6: a middle value of disentanglement_lib's study grid {1, 2, 4, 6, 8, 10} (Locatello et al. 2019).
    # dataset_size: N in the estimators; null = the training set's size (set by the trainer).
    defaults = {"beta": 6.0, "estimator": "mws", "dataset_size": None}
    group_hparams = ("beta",)

    @classmethod
    def check_options(cls, cfg):
        super().check_options(cfg)
        check_number("model", "beta", cfg["beta"], minimum=0)
        check_estimator(cfg["estimator"])
        if cfg["dataset_size"] is not None:
            check_number("model", "dataset_size", cfg["dataset_size"], minimum=2, integer=True)

    def __init__(self, model_cfg, optim_cfg, in_channels, generator):
        super().__init__(model_cfg, optim_cfg, in_channels, generator)
        self.beta = float(self.cfg["beta"])
        self.estimator = self.cfg["estimator"]
        self.dataset_size = None if self.cfg["dataset_size"] is None else int(self.cfg["dataset_size"])
        self._configured_size = self.dataset_size is not None

    def set_dataset_size(self, n: int) -> None:
        """Called by the trainer with len(dataset); an explicit ``model.dataset_size`` wins."""
        if not self._configured_size:
            self.dataset_size = check_number("data", "size", n, minimum=2, integer=True)

    def regularizer(self, kl_per_dim, mean, logvar, z, hp):
        if self.dataset_size is None:
            raise UserError("betatcvae needs the data set size N for its TC estimator: set model.dataset_size "
                            "or call set_dataset_size(len(dataset)) before training")
        tc = total_correlation(z, mean, logvar, self.dataset_size, self.estimator)
        return kl_per_dim.sum() + (hp["beta"] - 1.0) * tc, {"tc": tc.detach()}
