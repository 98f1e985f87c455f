"""factorvae: disentangled representations (FactorVAE, Kim & Mnih 2018, and its baselines).

``factorvae.evaluate(...)`` scores a run, a model or arrays of codes (see its help).
"""


def __getattr__(name):
    # lazy: `import factorvae` stays free of torch and scikit-learn until something is used
    if name == "evaluate":
        from factorvae.metrics.api import evaluate

        return evaluate
    raise AttributeError(f"module 'factorvae' has no attribute {name!r}")
