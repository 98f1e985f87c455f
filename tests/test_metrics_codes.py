"""The Codes cache: validation of arrays, reordering into grid order, lazy encoding with each
grid point encoded at most once, the re-encoding baseline, dropping one-class factors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from factorvae.data.grid import FactorGrid
from factorvae.errors import UserError
from factorvae.metrics.codes import Codes

PARITY = Path(__file__).parent / "fixtures" / "parity"


def small_grid_arrays(rng, sizes=(2, 3, 4), D=3):
    grid = FactorGrid(tuple(f"f{k}" for k in range(len(sizes))), sizes)
    factors = grid.all_classes()
    codes = rng.normal(size=(len(grid), D))
    return grid, factors, codes


def test_rows_in_any_order_are_put_in_grid_order():
    d = np.load(PARITY / "ii_rotated.npz")
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(d["factors"]))
    c = Codes.from_arrays(d["factors"][perm], d["codes"][perm], d["sizes"])
    pick = rng.integers(0, len(perm), 50)
    np.testing.assert_array_equal(c.get(d["factors"][pick]), d["codes"][pick].astype(np.float64))
    assert c.num_codes == 5 and c.grid.sizes == (3, 6, 10, 8, 8)
    # leading shapes are kept
    assert c.get(d["factors"][pick].reshape(5, 10, 5)).shape == (5, 10, 5)


@pytest.mark.parametrize("case, message", [
    ("incomplete", "incomplete grid"),
    ("duplicate", "duplicated grid points"),
    ("lengths", "one code per factor row"),
    ("nan", "NaN"),
    ("inf", "infinite"),
    ("range", "classes outside"),
    ("fractional", "integer classes"),
    ("sizes", "shape (N, 4)"),
])
def test_bad_arrays_raise_one_clear_user_error(case, message):
    rng = np.random.default_rng(1)
    grid, factors, codes = small_grid_arrays(rng)
    sizes = np.array(grid.sizes)
    if case == "incomplete":
        factors, codes = factors[1:], codes[1:]
    elif case == "duplicate":
        factors = factors.copy()
        factors[0] = factors[1]
    elif case == "lengths":
        codes = codes[:-1]
    elif case == "nan":
        codes[3, 1] = np.nan
    elif case == "inf":
        codes[3, 1] = np.inf
    elif case == "range":
        factors = factors.copy()
        factors[0, 2] = 4
    elif case == "fractional":
        factors = factors + 0.5
    elif case == "sizes":
        sizes = np.array([2, 3, 4, 1])
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Codes.from_arrays(factors, codes, sizes)


class CountingEncoder:
    """images(idx) -> the flat index written into pixel 0; encode -> fixed function of it."""

    def __init__(self, D=4):
        self.requested: list[np.ndarray] = []
        self.grad_enabled: list[bool] = []
        self.D = D

    def images(self, idx):
        idx = np.asarray(idx)
        self.requested.append(idx.copy())
        x = torch.zeros(len(idx), 1, 64, 64)
        x[:, 0, 0, 0] = torch.as_tensor(idx, dtype=torch.float32)
        return x

    def encode(self, x):
        self.grad_enabled.append(torch.is_grad_enabled())
        i = x[:, 0, 0, 0:1]
        return torch.cat([torch.sin(i * (k + 1)) for k in range(self.D)], dim=1)

    @staticmethod
    def expected(flat, D=4):
        f = np.asarray(flat, dtype=np.float32)[:, None]
        return np.sin(f * np.arange(1, D + 1, dtype=np.float32))


def test_encoder_codes_each_grid_point_at_most_once():
    grid = FactorGrid(("a", "b", "c"), (4, 5, 6))
    enc = CountingEncoder()
    codes = Codes.from_encoder(enc.encode, enc.images, grid, batch_size=32, progress=False)
    rng = np.random.default_rng(0)
    first = grid.sample(300, rng)
    z1 = codes.get(first)
    np.testing.assert_allclose(z1, CountingEncoder.expected(grid.index(first)), rtol=1e-6)
    second = np.concatenate([first[:100], grid.sample(200, rng)])
    codes.get(second)
    codes.prefetch(grid.all_classes())
    codes.get(grid.all_classes())
    seen = np.concatenate(enc.requested)
    assert len(seen) == len(np.unique(seen)) == len(grid)  # every point once, none twice
    assert codes.images_encoded == len(grid) and codes.num_encoded == len(grid)
    assert max(len(r) for r in enc.requested) == 32  # batched
    assert not any(enc.grad_enabled)  # under torch.no_grad


def test_without_cache_every_request_is_encoded_again():
    grid = FactorGrid(("a", "b"), (3, 4))
    enc = CountingEncoder()
    codes = Codes.from_encoder(enc.encode, enc.images, grid, batch_size=8, cache=False, progress=False)
    probe = codes.images_encoded
    classes = np.array([[0, 1], [0, 1], [2, 3]])
    for _ in range(3):
        z = codes.get(classes)
    assert codes.images_encoded - probe == 9
    np.testing.assert_allclose(z, CountingEncoder.expected(grid.index(classes)), rtol=1e-6)


def test_one_class_factors_are_dropped_and_indices_kept():
    grid = FactorGrid(("color", "shape", "pos"), (1, 3, 4))
    enc = CountingEncoder()
    codes = Codes.from_encoder(enc.encode, enc.images, grid, batch_size=8, progress=False)
    assert codes.grid.names == ("shape", "pos") and codes.dropped_factors == ["color"]
    z = codes.get(np.array([[2, 3], [1, 0]]))
    full = grid.index(np.array([[0, 2, 3], [0, 1, 0]]))
    np.testing.assert_allclose(z, CountingEncoder.expected(full), rtol=1e-6)
    with pytest.raises(UserError, match="single class"):
        Codes.from_encoder(enc.encode, enc.images, FactorGrid(("a",), (1,)), progress=False)


def test_encoder_returning_nan_is_a_user_error():
    grid = FactorGrid(("a",), (4,))
    with pytest.raises(UserError, match="NaN or infinite"):
        Codes.from_encoder(lambda x: torch.full((len(x), 2), float("nan")),
                           lambda i: torch.zeros(len(i), 1, 64, 64), grid, progress=False)
