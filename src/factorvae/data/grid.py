"""FactorGrid: the discrete ground-truth factor space of a data set.

Index order is the official one for dSprites and 3D Shapes: row-major over factors, last factor
fastest, so ``index = sum_k class_k * stride_k`` and official files drop in unchanged
(the official dSprites and 3D Shapes files).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class GridError(ValueError):
    """A factor grid, or factor classes given for one, is invalid."""


@dataclass(frozen=True)
class FactorGrid:
    """Immutable description of a complete discrete factor grid.

    ``names[k]`` has ``sizes[k]`` classes; ``values[k]`` optionally maps each class to the
    physical value (e.g. scale 0.5..1). Sampling takes an explicit ``numpy.random.Generator``.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    values: tuple[tuple[float, ...], ...] | None = None
    strides: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        sizes = tuple(int(s) for s in self.sizes)
        if len(names) != len(sizes) or not sizes:
            raise GridError(f"grid needs one size per factor name, got {len(names)} names and {len(sizes)} sizes")
        if len(set(names)) != len(names):
            raise GridError(f"factor names must be unique, got {names}")
        if any(s < 1 for s in sizes):
            raise GridError(f"factor sizes must be >= 1, got {sizes}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "sizes", sizes)
        if self.values is not None:
            values = tuple(tuple(float(v) for v in vs) for vs in self.values)
            if [len(v) for v in values] != list(sizes):
                raise GridError("factor values must list one value per class of each factor")
            object.__setattr__(self, "values", values)
        strides = np.cumprod((sizes[1:] + (1,))[::-1])[::-1]
        object.__setattr__(self, "strides", tuple(int(s) for s in strides))

    # -- shape -----------------------------------------------------------------------------
    @property
    def num_factors(self) -> int:
        return len(self.sizes)

    def __len__(self) -> int:
        return int(np.prod(self.sizes, dtype=np.int64))

    def factor_index(self, name_or_index: str | int) -> int:
        if isinstance(name_or_index, (int, np.integer)):
            if not 0 <= int(name_or_index) < self.num_factors:
                raise GridError(f"factor index {name_or_index} out of range 0..{self.num_factors - 1}")
            return int(name_or_index)
        try:
            return self.names.index(name_or_index)
        except ValueError:
            raise GridError(f"unknown factor {name_or_index!r}; factors are {', '.join(self.names)}") from None

    # -- index <-> classes --------------------------------------------------------------------
    def validate_classes(self, classes: np.ndarray) -> np.ndarray:
        classes = np.asarray(classes)
        if classes.ndim != 2 or classes.shape[1] != self.num_factors:
            raise GridError(f"factor classes must have shape (N, {self.num_factors}), got {classes.shape}")
        if not np.issubdtype(classes.dtype, np.integer):
            if not np.all(np.equal(np.mod(classes, 1), 0)):
                raise GridError("factor classes must be whole numbers")
            classes = classes.astype(np.int64)
        bad = (classes < 0) | (classes >= np.asarray(self.sizes))
        if bad.any():
            k = int(np.nonzero(bad.any(axis=0))[0][0])
            raise GridError(f"factor {self.names[k]!r} has classes outside 0..{self.sizes[k] - 1}")
        return classes.astype(np.int64, copy=False)

    def index(self, classes: np.ndarray) -> np.ndarray:
        """Flat index of each row of factor classes (official order)."""
        classes = self.validate_classes(classes)
        return classes @ np.asarray(self.strides, dtype=np.int64)

    def classes(self, index: np.ndarray) -> np.ndarray:
        """Factor classes (N, K) of flat indices."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise GridError(f"index out of range 0..{len(self) - 1}")
        return (index[..., None] // np.asarray(self.strides)) % np.asarray(self.sizes)

    def all_classes(self) -> np.ndarray:
        return self.classes(np.arange(len(self)))

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor vectors drawn uniformly and independently (dlib ``sample_factors``)."""
        return np.stack([rng.integers(0, s, size=n) for s in self.sizes], axis=1).astype(np.int64)

    def sample_fixed(self, n: int, factor: str | int, rng: np.random.Generator, value: int | None = None) -> np.ndarray:
        """n factor vectors with one factor held at one (random unless given) class, the rest
        uniform: the data the FactorVAE metric (paper §4) draws for one vote."""
        k = self.factor_index(factor)
        out = self.sample(n, rng)
        out[:, k] = rng.integers(0, self.sizes[k]) if value is None else int(value)
        return out

    def factor_values(self, classes: np.ndarray) -> np.ndarray:
        """Physical factor values for classes (falls back to the class numbers)."""
        classes = self.validate_classes(classes)
        if self.values is None:
            return classes.astype(np.float64)
        return np.stack([np.asarray(self.values[k])[classes[:, k]] for k in range(self.num_factors)], axis=1)

    def subset(self, keep: list[str | int]) -> tuple["FactorGrid", list[int]]:
        """The grid over some factors only (e.g. dSprites without its constant colour)."""
        idx = [self.factor_index(f) for f in keep]
        vals = None if self.values is None else tuple(self.values[i] for i in idx)
        return FactorGrid(tuple(self.names[i] for i in idx), tuple(self.sizes[i] for i in idx), vals), idx

    def to_dict(self) -> dict:
        return {"names": list(self.names), "sizes": list(self.sizes)}
