"""disentanglement_lib's own random draws, replayed on a :class:`Codes` table (a test helper).

dlib runs every metric with a fresh ``np.random.RandomState(seed)`` (its ``evaluate.py``; how the
parity values were made: the shared EXT_METRICS.md). Its ground-truth data draws factor vectors
with ``sample_factors``: one ``randint(size)`` per factor, factor by factor. Through
``generate_batch_factor_code`` it does so in batches of 16 (the metrics' ``batch_size``); other
draws (fairness's intervened points, the strong task's sets) are one ``sample_factors`` call.
:func:`replay` gives a metric the same grid points in the same order: ``codes.sample`` /
``sample_split`` are dlib's batched draws, ``codes.grid.sample`` its single call. The metric
code runs unchanged; only its ``rng`` draws of grid points are replaced.

``sklearn_learner`` swaps the project's exact GBT for scikit-learn's
``GradientBoostingClassifier()`` left unseeded, as dlib builds it: with ``np.random.seed(seed)``
first (as the parity run did) its tie-breaks follow dlib's global random stream too.
"""

from __future__ import annotations

import contextlib

import numpy as np

from factorvae.metrics import gbt

#: dlib's ``batch_size`` in ``generate_batch_factor_code`` for every metric here
BATCH = 16


class _Stream:
    """``Generator.integers`` drawn from a legacy ``RandomState`` (what dlib passes around)."""

    def __init__(self, seed: int):
        self.state = np.random.RandomState(seed)

    def integers(self, low, high=None, size=None):
        low, high = (0, low) if high is None else (low, high)
        return self.state.randint(low, high, size=size)


class _Grid:
    def __init__(self, grid, stream: _Stream):
        self._grid, self._stream = grid, stream

    def sample(self, n, rng=None):  # dlib's sample_factors(n, random_state): one call
        return self._grid.sample(n, self._stream)

    def __getattr__(self, name):
        return getattr(self._grid, name)


class _Replay:
    def __init__(self, codes, seed: int):
        self._codes, self._stream = codes, _Stream(seed)
        self.grid = _Grid(codes.grid, self._stream)
        self.fits: dict = {}  # dlib fits every metric's classifiers anew: nothing shared

    def sample(self, n, rng=None):  # dlib's generate_batch_factor_code: batches of 16
        n = int(n)
        classes = np.concatenate([self._codes.grid.sample(min(BATCH, n - i), self._stream) for i in range(0, n, BATCH)])
        return classes, self._codes.get(classes)

    def sample_split(self, n_train, n_test, rng=None):
        return self.sample(n_train), self.sample(n_test)

    def __getattr__(self, name):
        return getattr(self._codes, name)


def replay(codes, seed: int = 0):
    """``codes`` whose grid-point draws are dlib's for ``RandomState(seed)``."""
    return _Replay(codes, seed)


@contextlib.contextmanager
def sklearn_learner(monkeypatch, seed: int = 0):
    """Metrics fit dlib's unseeded scikit-learn GBT, NumPy's global stream seeded with ``seed``."""
    monkeypatch.setattr(gbt, "GradientBoostedTrees", gbt.DlibGBT)  # gbt.fit_gbt's default learner
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
