"""FactorGrid: official index order, round trips, sampling with one factor fixed, validation."""

from __future__ import annotations

import numpy as np
import pytest

from factorvae.data.dsprites import GRID as DSPRITES
from factorvae.data.grid import FactorGrid, GridError


def test_dsprites_strides_are_the_official_bases():
    # paper_spec §5.1: bases = [737280, 245760, 40960, 1024, 32, 1]
    assert DSPRITES.strides == (737280, 245760, 40960, 1024, 32, 1)
    assert len(DSPRITES) == 737_280
    assert DSPRITES.index(np.array([[0, 2, 5, 39, 31, 31]]))[0] == len(DSPRITES) - 1
    assert DSPRITES.index(np.array([[0, 0, 0, 0, 0, 1]]))[0] == 1  # posY fastest
    assert DSPRITES.index(np.array([[0, 0, 0, 0, 1, 0]]))[0] == 32


def test_index_classes_round_trip_and_all_classes_order():
    g = FactorGrid(("a", "b", "c"), (3, 4, 5))
    all_c = g.all_classes()
    assert all_c.shape == (60, 3)
    assert np.array_equal(g.index(all_c), np.arange(60))
    # row-major, last factor fastest: the same order as numpy's unravel_index
    assert np.array_equal(all_c, np.stack(np.unravel_index(np.arange(60), (3, 4, 5)), axis=1))
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 60, 100)
    assert np.array_equal(g.index(g.classes(idx)), idx)


def test_sampling_is_uniform_and_fixing_holds_one_factor():
    g = FactorGrid(("a", "b"), (3, 7))
    rng = np.random.default_rng(1)
    s = g.sample(21_000, rng)
    counts = np.bincount(s[:, 1], minlength=7)
    assert counts.min() > 2700 and counts.max() < 3300  # 3000 ± ~5 sigma
    f = g.sample_fixed(500, "b", rng)
    assert len(np.unique(f[:, 1])) == 1 and len(np.unique(f[:, 0])) == 3
    assert np.all(g.sample_fixed(10, 0, rng, value=2)[:, 0] == 2)
    # the same generator state gives the same draws
    assert np.array_equal(g.sample(5, np.random.default_rng(3)), g.sample(5, np.random.default_rng(3)))


def test_validation_errors():
    g = FactorGrid(("a", "b"), (3, 7))
    with pytest.raises(GridError, match="shape"):
        g.index(np.zeros((4, 3), dtype=int))
    with pytest.raises(GridError, match="'b' has classes outside 0..6"):
        g.index(np.array([[0, 7]]))
    with pytest.raises(GridError, match="unknown factor 'c'"):
        g.factor_index("c")
    with pytest.raises(GridError, match="out of range"):
        g.classes(np.array([21]))
    with pytest.raises(GridError, match="unique"):
        FactorGrid(("a", "a"), (2, 2))
    with pytest.raises(GridError, match=">= 1"):
        FactorGrid(("a",), (0,))


def test_subset_and_values():
    sub, idx = DSPRITES.subset(["shape", "scale", "orientation", "posX", "posY"])
    assert idx == [1, 2, 3, 4, 5] and sub.sizes == (3, 6, 40, 32, 32)
    vals = DSPRITES.factor_values(np.array([[0, 2, 5, 39, 31, 0]]))[0]
    assert vals[1] == 3.0 and vals[2] == pytest.approx(1.0) and vals[3] == pytest.approx(2 * np.pi)
    assert vals[4] == pytest.approx(1.0) and vals[5] == 0.0
