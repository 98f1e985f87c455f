"""The Codes cache: every metric reads representations through it (each image is encoded at most once per evaluation).

A representation of a ground-truth data set is a function of the grid point: one code vector
per flat grid index (the official index order, ``FactorGrid.index``). Metrics ask for the
codes of factor classes with :meth:`Codes.get`; they never call the model.

- :meth:`Codes.from_arrays` holds a complete table (``factorvae metrics GRID.npz``).
- :meth:`Codes.from_sample` holds codes of a random sample of grid points (any number, repeats
  allowed; ``factorvae encode`` writes one). It serves the metrics that only draw random points
  (MIG, DCI, SAP, modularity/explicitness), not those that fix a factor (FactorVAE, Higgins).
  :meth:`Codes.from_points` picks between the two.
- :meth:`Codes.from_encoder` encodes lazily: a grid index is encoded the first time a metric
  asks for it and memoised (a float32 table plus a mask), so one evaluation encodes each
  needed image at most once, in large batches. disentanglement_lib instead encodes afresh
  for every vote (~970,000 images for one FactorVAE score at its defaults);
  ``cache=False`` reproduces that for the benchmark.

Factors with a single class (dSprites' colour) carry no information and are dropped: the
metrics score the remaining factors (as disentanglement_lib's
``dsprites_full`` uses the 5 factors shape, scale, orientation, posX, posY). Dropping a
one-class factor leaves every flat index unchanged, so the images are still addressed by
the data set's own index.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from factorvae.data import no_grid_error
from factorvae.data.grid import FactorGrid
from factorvae.errors import UserError

__all__ = ["Codes", "encode_batch"]


def encode_batch(device, cpu: int = 256) -> int:
    """Images per encoder pass of an evaluation or analysis: 4,096 on a GPU, where a pass of a few
    hundred small images is bound by kernel launches and host syncs; ``cpu`` on a CPU (the
    activations of 4,096 images are ~0.5 GB)."""
    return 4096 if torch.device(device).type == "cuda" else cpu


def _metric_grid(grid: FactorGrid) -> FactorGrid:
    keep = [k for k, s in enumerate(grid.sizes) if s > 1]
    if not keep:
        raise UserError("every factor of the grid has a single class; metrics need a factor with two or more")
    if len(keep) == grid.num_factors:
        return grid
    return grid.subset(keep)[0]


def _validate(factors, codes, sizes, names, source):
    """Checked (grid, int64 factors, codes, flat indices) of factor/code arrays; every problem
    raises a UserError naming it."""
    sizes = np.asarray(sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise UserError(f"{source}: 'sizes' must be a 1-D list of factor sizes, got shape {sizes.shape}")
    if not np.issubdtype(sizes.dtype, np.integer):
        if not np.issubdtype(sizes.dtype, np.floating) or not np.all(np.mod(sizes, 1) == 0):
            raise UserError(f"{source}: 'sizes' must be whole numbers, got {sizes.tolist()}")
    sizes = sizes.astype(np.int64)
    if (sizes < 1).any():
        raise UserError(f"{source}: factor sizes must be >= 1, got {sizes.tolist()}")
    K = len(sizes)
    if names is None:
        names = [f"factor{k}" for k in range(K)]
    names = [str(n) for n in np.asarray(names).ravel().tolist()]
    if len(names) != K:
        raise UserError(f"{source}: {len(names)} factor names for {K} factor sizes")
    if len(set(names)) != K:
        raise UserError(f"{source}: factor names must be unique, got {names}")
    grid = FactorGrid(tuple(names), tuple(int(s) for s in sizes))

    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != K:
        raise UserError(f"{source}: 'factors' must have shape (N, {K}) for {K} factor sizes, got {factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer):
        if not np.issubdtype(factors.dtype, np.floating) or not np.all(np.isfinite(factors)) \
                or not np.all(np.mod(factors, 1) == 0):
            raise UserError(f"{source}: 'factors' must hold integer classes, got dtype {factors.dtype}")
        factors = factors.astype(np.int64)
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2 or codes.shape[1] < 1:
        raise UserError(f"{source}: 'codes' must have shape (N, D) with D >= 1, got {codes.shape}")
    if not (np.issubdtype(codes.dtype, np.floating) or np.issubdtype(codes.dtype, np.integer)):
        raise UserError(f"{source}: 'codes' must be numbers, got dtype {codes.dtype}")
    if len(codes) != len(factors):
        raise UserError(f"{source}: 'codes' has {len(codes)} rows but 'factors' has {len(factors)}; "
                        "one code per factor row is needed")
    bad = ~np.isfinite(codes)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        kind = "NaN" if np.isnan(codes).any() else "infinite"
        raise UserError(f"{source}: 'codes' has {kind} values in {len(rows)} row(s) (first: row {rows[0]}); "
                        "codes must be finite")
    out_of_range = (factors < 0) | (factors >= sizes)
    if out_of_range.any():
        k = int(np.nonzero(out_of_range.any(axis=0))[0][0])
        raise UserError(f"{source}: factor {names[k]!r} has classes outside 0..{sizes[k] - 1} "
                        f"(e.g. {int(factors[out_of_range[:, k], k][0])})")
    index = factors @ np.asarray(grid.strides, dtype=np.int64)
    return grid, factors, codes, index


class Codes:
    """Codes of every (needed) grid point, addressed by factor classes.

    Attributes: ``grid`` (the scored factors), ``num_codes`` (D), ``images_encoded`` and
    ``encoder_calls`` (work done by the encoder so far; 0 for arrays), ``fits`` (classifiers
    fitted on these codes, keyed by their training data: metrics that train on the same draw
    share one fit, ``gbt.fit_gbt``).
    """

    full_grid: FactorGrid
    #: True for a random sample of grid points (``from_sample``): only random draws, no ``get``
    is_sample = False

    def __init__(self, grid: FactorGrid, num_codes: int):
        self.grid = grid
        self.num_codes = int(num_codes)
        self.images_encoded = 0
        self.encoder_calls = 0
        self.fits: dict = {}

    def __repr__(self) -> str:  # short: never the code table
        kind = f"a sample of {self.num_points:,} points" if self.is_sample else f"{self.num_encoded:,} points held"
        factors = ", ".join(f"{n}={s}" for n, s in zip(self.grid.names, self.grid.sizes))
        return f"Codes({self.num_codes} codes, {kind}, factors {factors})"

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, factors, codes, sizes, names=None, source: str = "input") -> "Codes":
        """A complete representation: ``factors`` (N, K) integer classes covering the grid of
        ``sizes`` exactly once (rows in any order), ``codes`` (N, D) finite floats. Rows are
        reordered into grid index order. Every problem raises a UserError naming it."""
        grid, factors, codes, index = _validate(factors, codes, sizes, names, source)
        n_grid = len(grid)
        counts = np.bincount(index, minlength=n_grid)
        shape = "x".join(str(sz) for sz in grid.sizes)
        if (counts > 1).any():
            dup = int(np.flatnonzero(counts > 1)[0])
            raise UserError(f"{source}: duplicated grid points: {int((counts > 1).sum())} point(s) appear more than once "
                            f"(e.g. classes {grid.classes(dup).tolist()} appears {counts[dup]} times); "
                            "each grid point must appear exactly once")
        if len(index) != n_grid:
            miss = int(np.flatnonzero(counts == 0)[0])
            raise UserError(f"{source}: incomplete grid: {len(index)} rows for a {shape} grid of {n_grid} points "
                            f"(e.g. classes {grid.classes(miss).tolist()} is missing); every grid point is needed")
        table = np.empty((n_grid, codes.shape[1]), dtype=np.float64)
        table[index] = codes
        return _TableCodes(grid, table)

    @classmethod
    def from_sample(cls, factors, codes, sizes, names=None, source: str = "input") -> "Codes":
        """Codes of a random sample of grid points: ``factors`` (n, K) integer classes of any
        n >= 2 points drawn uniformly from the grid of ``sizes`` (repeats allowed), ``codes``
        (n, D). Supports the metrics that only draw random points (MIG, DCI, SAP,
        modularity/explicitness): :meth:`sample` and :meth:`sample_split` hand out rows of the
        sample without replacement, so training and test rows never overlap."""
        grid, factors, codes, _ = _validate(factors, codes, sizes, names, source)
        if len(factors) < 2:
            raise UserError(f"{source}: {len(factors)} point(s); a sample needs at least 2")
        return _SampleCodes(grid, factors, codes.astype(np.float64))

    @classmethod
    def from_points(cls, factors, codes, sizes, names=None, source: str = "input") -> "Codes":
        """A complete table when the rows cover the grid exactly once (every metric), else a
        random sample (:meth:`from_sample`)."""
        grid, f, _, index = _validate(factors, codes, sizes, names, source)
        if len(index) == len(grid) and np.bincount(index, minlength=len(grid)).max(initial=0) == 1:
            return cls.from_arrays(factors, codes, sizes, names, source)
        return cls.from_sample(factors, codes, sizes, names, source)

    @classmethod
    def from_encoder(cls, encode_fn: Callable[[torch.Tensor], torch.Tensor],
                     images: Callable[[np.ndarray], torch.Tensor], grid: FactorGrid, batch_size: int = 256,
                     cache: bool = True, progress: bool = True, with_index: bool = False) -> "Codes":
        """Codes computed on demand by ``encode_fn(images(flat_indices))`` under no_grad.

        ``images(indices)`` returns the images (B, C, 64, 64) in [0, 1] of flat grid indices;
        ``encode_fn`` maps them to (B, D) codes (``with_index``: ``encode_fn(images, indices)``,
        for codes that depend on the grid point, e.g. a seeded draw per image). With ``cache``
        each index is encoded at most once; without it every request is encoded again
        (disentanglement_lib's behaviour)."""
        if grid is None:
            raise no_grid_error(None)
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        return _EncoderCodes(encode_fn, images, grid, int(batch_size), bool(cache), bool(progress), bool(with_index))

    # -- access ------------------------------------------------------------------------------
    def get(self, classes: np.ndarray) -> np.ndarray:
        """Codes (N, D) float64 of factor classes (N, K) of ``self.grid``; any leading shape
        (..., K) gives (..., D)."""
        classes = np.asarray(classes)
        lead = classes.shape[:-1]
        flat = self.grid.index(classes.reshape(-1, self.grid.num_factors))
        return self._lookup(flat).reshape(*lead, self.num_codes)

    def get_flat(self, flat: np.ndarray) -> np.ndarray:
        """Codes (N, D) float64 of flat grid indices (the data set's own index order)."""
        return self._lookup(np.asarray(flat, dtype=np.int64))

    def prefetch(self, classes: np.ndarray) -> None:
        """Make sure the codes of these classes are available (encodes what is missing in
        big batches); a no-op for complete tables."""

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n uniformly drawn grid points (with replacement, like disentanglement_lib's
        ``sample_factors``): (classes (n, K), codes (n, D))."""
        classes = self.grid.sample(int(n), rng)
        return classes, self.get(classes)

    def sample_split(self, n_train: int, n_test: int, rng: np.random.Generator):
        """A training and a test draw: ((classes, codes), (classes, codes)). From the grid: two
        independent uniform draws (dlib draws them with two ``sample_factors`` calls)."""
        return self.sample(n_train, rng), self.sample(n_test, rng)

    def _lookup(self, flat: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def num_encoded(self) -> int:
        """Distinct grid points whose codes are held."""
        return len(self.grid)

    @property
    def dropped_factors(self) -> list[str]:
        """Names of the single-class factors left out of the scores."""
        return [n for n, s in zip(self.full_grid.names, self.full_grid.sizes) if s == 1]


class _TableCodes(Codes):
    def __init__(self, grid: FactorGrid, table: np.ndarray):
        self.full_grid = grid
        super().__init__(_metric_grid(grid), table.shape[1])
        self.table = table

    def _lookup(self, flat):
        return self.table[flat]


class _EncoderCodes(Codes):
    def __init__(self, encode_fn, images, grid, batch_size, cache, progress, with_index=False):
        self.full_grid = grid
        super().__init__(_metric_grid(grid), num_codes=0)
        self.encode_fn, self.images, self.with_index = encode_fn, images, with_index
        self.batch_size, self.cache, self.progress = batch_size, cache, progress
        self._table: np.ndarray | None = None
        self._have = np.zeros(len(grid), dtype=bool)
        # one probe batch fixes D (and checks the encoder early)
        first = self._encode(np.zeros(1, dtype=np.int64))
        self.num_codes = first.shape[1]
        if cache:
            self._table = np.empty((len(grid), self.num_codes), dtype=np.float32)
            self._table[0] = first[0]
            self._have[0] = True

    def _encode(self, flat: np.ndarray) -> np.ndarray:
        out = []
        steps = range(0, len(flat), self.batch_size)
        bar = tqdm(steps, desc="encoding", unit="batch", leave=False,
                   disable=not self.progress or len(steps) < 4)
        with torch.no_grad():
            for a in bar:
                idx = flat[a:a + self.batch_size]
                z = self.encode_fn(self.images(idx), idx) if self.with_index else self.encode_fn(self.images(idx))
                z = torch.as_tensor(z).detach().float().cpu().numpy()
                if z.ndim != 2 or z.shape[0] != len(idx):
                    raise UserError(f"the encoder returned codes of shape {tuple(z.shape)} for {len(idx)} images; "
                                    "expected (batch, D)")
                if not np.isfinite(z).all():
                    raise UserError("the encoder returned NaN or infinite codes; the model may have diverged")
                out.append(z)
                self.images_encoded += len(idx)
                self.encoder_calls += 1
        bar.close()
        return np.concatenate(out) if out else np.zeros((0, self.num_codes), np.float32)

    def prefetch(self, classes):
        if self.cache:
            flat = self.grid.index(np.asarray(classes).reshape(-1, self.grid.num_factors))
            self._fill(flat)

    def _fill(self, flat):
        need = np.unique(flat[~self._have[flat]])
        if len(need):
            self._table[need] = self._encode(need)
            self._have[need] = True

    def _lookup(self, flat):
        if not self.cache:
            return self._encode(flat).astype(np.float64)
        self._fill(flat)
        return self._table[flat].astype(np.float64)

    @property
    def num_encoded(self) -> int:
        return int(self._have.sum())


#: why a sample cannot serve the FactorVAE / Higgins metrics, and what to do instead
FIXES_FACTORS = ("{metric} fixes one factor at a time, so it needs the codes of grid points it chooses; a random "
                 "sample of {n} points cannot give them. Score the model instead: factorvae.evaluate(model=..., "
                 "dataset=...) or `factorvae eval RUN_DIR`, or give codes for every grid point")


class _SampleCodes(Codes):
    """Rows of a random sample of grid points. Draws are without replacement within one
    request, so a train/test split never shares a row; a request larger than the sample gets
    every row (recorded in ``draws``, reported by the suite)."""

    is_sample = True

    def __init__(self, grid: FactorGrid, factors: np.ndarray, codes: np.ndarray):
        self.full_grid = grid
        super().__init__(_metric_grid(grid), codes.shape[1])
        keep = [grid.names.index(n) for n in self.grid.names]
        self.factors = factors[:, keep]
        self.codes = codes
        self.draws: list[dict] = []  # what each request asked for and got

    @property
    def num_points(self) -> int:
        return len(self.codes)

    @property
    def num_encoded(self) -> int:
        return self.num_points

    def missing_classes(self) -> dict[str, int]:
        """Per scored factor, how many of its classes the sample never shows."""
        out = {}
        for k, (name, size) in enumerate(zip(self.grid.names, self.grid.sizes)):
            seen = len(np.unique(self.factors[:, k]))
            if seen < size:
                out[name] = size - seen
        return out

    def _lookup(self, flat):
        raise UserError(FIXES_FACTORS.format(metric="this metric", n=self.num_points))

    def sample(self, n, rng):
        n = int(n)
        idx = rng.choice(self.num_points, size=min(n, self.num_points), replace=False)
        self.draws.append({"asked": n, "got": len(idx)})
        return self.factors[idx], self.codes[idx]

    def sample_split(self, n_train, n_test, rng):
        n_train, n_test = int(n_train), int(n_test)
        N = self.num_points
        if n_train + n_test <= N:
            a, b = n_train, n_test
        else:  # too few points: split all of them in the asked proportion
            a = min(N - 1, max(1, round(N * n_train / (n_train + n_test))))
            b = N - a
        idx = rng.choice(N, size=a + b, replace=False)
        self.draws.append({"asked": [n_train, n_test], "got": [a, b]})
        tr, te = idx[:a], idx[a:]
        return (self.factors[tr], self.codes[tr]), (self.factors[te], self.codes[te])
