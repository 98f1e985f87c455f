"""Disentanglement metrics on a Codes cache (Kim & Mnih 2018, §4 and Appendix B; the others as in disentanglement_lib, Locatello et al. 2019).

Every metric is a pure function ``metric(codes, rng, **params) -> dict`` with parameters
named as in disentanglement_lib; :mod:`factorvae.metrics.suite` runs sets of them with
presets. See docs/metrics.md.

The submodules are imported lazily: ``factorvae.metrics.tc`` and ``likelihood`` (owned
elsewhere) must not pay for scikit-learn.
"""

__all__ = ["Codes", "evaluate", "evaluate_model", "METRICS", "PRESETS"]


def __getattr__(name):
    if name == "Codes":
        from factorvae.metrics.codes import Codes  # lazy: see the docstring

        return Codes
    if name in ("evaluate", "evaluate_model", "METRICS", "PRESETS"):
        from factorvae.metrics import suite  # lazy: suite imports scipy and every metric

        return getattr(suite, name)
    raise AttributeError(name)
