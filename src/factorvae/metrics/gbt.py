"""Gradient-boosted trees for DCI: an exact, vectorised re-implementation of
``sklearn.ensemble.GradientBoostingClassifier()`` with its default settings, the model
disentanglement_lib's DCI fits once per factor (Eastwood & Williams 2018; disentanglement_lib's dci.py).

Why: scikit-learn grows each depth-3 regression tree by re-sorting the samples of every
node for every feature, one tree at a time (K trees per boosting stage for K classes).
On 10,000 codes that is ~20 ms per tree: ~50 s for DCI on a [3, 6, 10, 8, 8] grid and
several minutes on dSprites (113 classes). Here every feature is sorted once per fit,
node membership is kept as a stable grouping of those orders (a radix sort of small node
ids), and the K trees of a stage are grown together, level by level, with numpy.

The same model, decision for decision:
- init: class priors through the (symmetric multinomial / binomial) logit link;
- per stage and class: negative gradient of the log-loss, a least-squares regression tree of
  depth 3 on float32 features, best split = max of sum_l^2/n_l + sum_r^2/n_r over thresholds
  between consecutive sorted values more than 1e-7 apart (sklearn's FEATURE_THRESHOLD),
  threshold = the midpoint, nodes with impurity <= machine epsilon not split;
- leaves: one Newton step, (K-1)/K * sum(g) / sum(p(1-p)) (binary: without the factor),
  learning rate 0.1, 100 stages;
- ``feature_importances_``: total weighted impurity decrease per feature over all trees,
  normalised to sum to 1 (sklearn's impurity-based importance).

Two details differ, neither measurably: exact ties between candidate splits are broken by a
random priority per feature and node (scikit-learn visits features in a random order, so
its choice is random too); and "more than 1e-7 apart" is decided on the whole sample's
sorted values (runs of values each within 1e-7 of the previous cannot be split), where
scikit-learn compares neighbours within a node: the two differ only for chains of three or
more distinct values inside 2e-7. ``tests/test_metrics_semantics.py`` checks importances and
predictions against scikit-learn.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

FEATURE_THRESHOLD = np.float32(1e-7)
EPSILON = np.finfo(np.float64).eps
_TINY = 1e-150
#: candidate splits this close (relative) to the best count as ties (rounding noise)
_TIE = 1e-12
_RUN_SHIFT = 36
_IDX_MASK = (1 << _RUN_SHIFT) - 1
_IDX_LIMIT = 1 << _RUN_SHIFT


class GradientBoostedTrees:
    """``fit(X, y)``, ``predict(X)``, ``feature_importances_``, ``classes_`` like sklearn's."""

    def __init__(self, n_estimators: int = 100, learning_rate: float = 0.1, max_depth: int = 3,
                 random_state: int | None = None, n_jobs: int = 1, trees_per_chunk: int = 8):
        if max_depth < 1 or max_depth > 6:
            raise ValueError("max_depth must be in 1..6")
        self.n_estimators = int(n_estimators)
        self.learning_rate = float(learning_rate)
        self.max_depth = int(max_depth)
        self.trees_per_chunk = int(trees_per_chunk)
        self.random_state = random_state
        #: threads growing the chunks of one stage's K trees (results do not depend on it)
        self.n_jobs = max(1, int(n_jobs))

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> "GradientBoostedTrees":
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        n, D = X32.shape
        seed = np.random.SeedSequence(self.random_state).entropy
        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        K = len(self.classes_)
        self.n_features_in_ = D
        n_nodes = 2 ** (self.max_depth + 1) - 1
        n_internal = 2**self.max_depth - 1
        self._importance = np.zeros(D, dtype=np.float64)
        if K == 1:  # sklearn refuses; a constant prediction is the honest answer here
            self._T, self._raw0 = 0, np.zeros(0)
            self._feat = np.zeros((0, 0, n_internal), np.int8)
            self.feature_importances_ = self._importance  # no split: no feature matters
            return self
        T = 1 if K == 2 else K
        prior = np.bincount(yi, minlength=K) / n
        eps = np.finfo(np.float64).eps
        if K == 2:
            p1 = np.clip(prior[1], eps, 1 - eps)
            raw0 = np.array([np.log(p1 / (1 - p1))])
            Y = (yi == 1)[None, :].astype(np.float64)
        else:
            lp = np.log(np.clip(prior, eps, 1 - eps))
            raw0 = lp - lp.mean()
            Y = (yi[None, :] == np.arange(K)[:, None]).astype(np.float64)
        raw = np.repeat(raw0[:, None], n, axis=1)  # (T, n)
        XT = np.ascontiguousarray(X32.T)
        order = np.argsort(XT, axis=1, kind="stable")  # (D, n), once per fit
        xs = np.take_along_axis(XT, order, axis=1)
        # values closer than 1e-7 to their sorted predecessor cannot be split apart (sklearn's
        # FEATURE_THRESHOLD): number the runs of such values, per feature
        gap = np.ones((D, n), dtype=bool)
        gap[:, 1:] = xs[:, 1:] > xs[:, :-1] + FEATURE_THRESHOLD
        run = np.empty((D, n), dtype=np.int64)
        np.put_along_axis(run, order, np.cumsum(gap, axis=1) - 1, axis=1)
        tied = ~gap.all(axis=1)
        # per feature: samples in value order, their run number in the high bits
        base_P = order | (np.take_along_axis(run, order, axis=1) << _RUN_SHIFT)
        S = self.n_estimators
        self._feat = np.full((S, T, n_internal), -1, dtype=np.int8)
        self._thr = np.zeros((S, T, n_internal), dtype=np.float64)
        self._val = np.zeros((S, T, n_nodes), dtype=np.float64)
        factor = (K - 1) / K if K > 2 else 1.0
        chunks = [(a, min(T, a + self.trees_per_chunk)) for a in range(0, T, self.trees_per_chunk)]
        pool = None
        if self.n_jobs > 1 and len(chunks) > 1:
            pool = ThreadPoolExecutor(max_workers=min(self.n_jobs, len(chunks)))
        try:
            for s in range(S):
                if K == 2:
                    prob = _expit(raw)
                else:
                    prob = np.exp(raw - raw.max(axis=0, keepdims=True))
                    prob /= prob.sum(axis=0, keepdims=True)
                G = Y - prob  # negative gradient of the (half) log-loss

                def grow(chunk, s=s, G=G):
                    a, b = chunk
                    rng = np.random.default_rng([seed, s, a])  # tie-breaking, per stage and chunk
                    leaf, gain = self._grow(G[a:b], XT, base_P, tied, s, a, rng)
                    pr = Y[a:b] - G[a:b]
                    val = _leaf_values(leaf, G[a:b], pr * (1 - pr), n_nodes) * factor
                    self._val[s, a:b] = val
                    raw[a:b] += self.learning_rate * np.take_along_axis(val, leaf.astype(np.intp), axis=1)
                    return gain

                gains = list(pool.map(grow, chunks)) if pool else [grow(c) for c in chunks]
                for g in gains:  # summed in a fixed order: the same result with any n_jobs
                    self._importance += g
        finally:
            if pool:
                pool.shutdown()
        self._T, self._raw0, self._raw_train = T, raw0, raw
        total = self._importance.sum()
        self.feature_importances_ = self._importance / total if total > 0 else self._importance
        return self

    def _grow(self, G: np.ndarray, XT: np.ndarray, base_P: np.ndarray, tied: np.ndarray,
              stage: int, t0: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Grow one tree per row of G (T, n) together, level by level; returns each sample's
        leaf (heap id: node h has children 2h+1, 2h+2) and the trees' importance per feature.

        ``P[t, f]`` lists the samples (as flat indices t*n + i into G) grouped by node, heap
        id ascending, and sorted by feature f within each node: every node is a contiguous
        segment of positions, its candidate splits are the boundaries inside the segment, and
        one cumulative sum per row gives every left-child sum. The high bits of each entry
        hold the sample's run of equal values in that feature: no split between
        two entries of one run. Features without such runs (``tied`` False) skip that check.
        """
        T, n = G.shape
        D = XT.shape[0]
        NN = 2 ** (self.max_depth + 1) - 1
        tix = np.arange(T)[:, None]
        row_t = (np.arange(T, dtype=np.int64) * n)[:, None, None]
        row_td = (np.arange(T * D, dtype=np.int64) * n).reshape(T, D, 1)
        tied_idx = np.flatnonzero(tied)
        Gf = G.ravel()
        P = base_P[None, :, :] + row_t
        node = np.zeros((T, n), dtype=np.int8)
        cnt = np.zeros((T, NN))
        s1 = np.zeros((T, NN))
        s2 = np.zeros((T, NN))
        feat = self._feat[stage, t0:t0 + T]
        thr = self._thr[stage, t0:t0 + T]
        pos = np.arange(n)
        heap = np.arange(NN)
        for depth in range(self.max_depth + 1):
            gid = (node + tix * NN).ravel()
            c = np.bincount(gid, minlength=T * NN).reshape(T, NN)
            seen = c > 0
            cnt[seen] = c[seen]
            s1[seen] = np.bincount(gid, weights=Gf, minlength=T * NN).reshape(T, NN)[seen]
            s2[seen] = np.bincount(gid, weights=Gf * Gf, minlength=T * NN).reshape(T, NN)[seen]
            if depth == self.max_depth:
                break
            with np.errstate(invalid="ignore", divide="ignore"):
                imp = s2 / cnt - (s1 / cnt) ** 2
            level = (heap >= 2**depth - 1) & (heap < 2 ** (depth + 1) - 1)
            splittable = level[None, :] & (cnt >= 2) & (imp > EPSILON) & seen
            if not splittable.any():
                break
            cflat = c.ravel()
            starts = np.cumsum(c, axis=1) - c
            pos_node = np.repeat(np.tile(heap, T), cflat).reshape(T, n)
            pstart = np.repeat(starts.ravel(), cflat).reshape(T, n)
            n_left = pos - pstart + 1
            n_right = np.repeat(cflat, cflat).reshape(T, n) - n_left
            ok = np.repeat(splittable.ravel(), cflat).reshape(T, n) & (n_right >= 1)
            with np.errstate(divide="ignore"):
                inv_left = np.where(ok, 1.0 / n_left, np.nan)[:, None, :]
                inv_right = np.where(ok, 1.0 / n_right, np.nan)[:, None, :]
            node_sum = s1[tix, pos_node][:, None, :]

            # sum of the left child at every boundary: one running sum per row, restarted at
            # each segment start by subtracting the previous segment's total
            flat = P & _IDX_MASK
            sl = Gf.take(flat)
            ts, js = np.nonzero(seen & (starts > 0))
            st = starts[ts, js]
            sl[ts, :, st] -= s1[ts, pos_node[ts, st - 1]][:, None]
            np.cumsum(sl, axis=2, out=sl)
            sr = node_sum - sl
            np.multiply(sl, sl, out=sl)
            sl *= inv_left
            np.multiply(sr, sr, out=sr)
            sr *= inv_right
            proxy = np.add(sl, sr, out=sl)  # sklearn's proxy: sum_l^2/n_l + sum_r^2/n_r; NaN: no split
            del sr
            if len(tied_idx):
                sub = P if len(tied_idx) == D else P[:, tied_idx]
                same = np.bitwise_xor(sub[:, :, 1:], sub[:, :, :-1])
                bad = np.zeros(sub.shape, dtype=bool)
                np.less(same, _IDX_LIMIT, out=bad[:, :, :-1])  # equal run bits: no split here
                del same
                if len(tied_idx) == D:
                    proxy = np.where(bad, np.nan, proxy)
                else:
                    proxy[:, tied_idx] = np.where(bad, np.nan, proxy[:, tied_idx])
                del bad, sub

            # Best split per node. Exact (and rounding-level) ties are broken like sklearn's
            # random feature order: a random priority per (tree, node, feature), then the
            # lowest position within the feature.
            nonempty = np.broadcast_to(seen[:, None, :], (T, D, NN))
            gstart = (tix[:, :, None] * D + np.arange(D)[None, :, None]) * n + starts[:, None, :]
            segmax = np.full((T, D, NN), np.nan)
            segmax[nonempty] = np.fmax.reduceat(proxy.ravel(), gstart[nonempty])
            best = np.fmax.reduce(segmax, axis=1)  # (T, NN), NaN: nothing to split
            do_split = splittable & ~np.isnan(best)
            if not do_split.any():
                break
            near = best - _TIE * np.abs(best)
            prio = rng.random((T, D, NN))
            prio[~(segmax >= near[:, None, :])] = np.inf
            fstar_seg = prio.argmin(axis=1)  # (T, NN)
            fpos = np.repeat(fstar_seg.ravel(), cflat).reshape(T, n)
            rowsel = ((tix * D + fpos) * n + pos).ravel()
            sel = proxy.ravel().take(rowsel).reshape(T, n)
            del proxy
            near_pos = np.repeat(near.ravel(), cflat).reshape(T, n)
            split_pos = np.repeat(do_split.ravel(), cflat).reshape(T, n)
            hits = np.flatnonzero(split_pos & (sel >= near_pos))
            st_idx, nd_idx = np.nonzero(do_split)
            gpos = hits[np.searchsorted(hits, starts[st_idx, nd_idx] + st_idx * n)]
            pstar = gpos - st_idx * n  # last position of the left child in the tree's row
            fstar = fstar_seg[st_idx, nd_idx]
            lo = XT[fstar, (P[st_idx, fstar, pstar] & _IDX_MASK) - st_idx * n].astype(np.float64)
            hi = XT[fstar, (P[st_idx, fstar, pstar + 1] & _IDX_MASK) - st_idx * n].astype(np.float64)
            mid = lo / 2.0 + hi / 2.0
            mid = np.where((mid == hi) | ~np.isfinite(mid), lo, mid)
            feat[st_idx, nd_idx] = fstar
            thr[st_idx, nd_idx] = mid

            # children: left = positions start..pstar of the chosen feature's order
            seg_p = np.zeros((T, NN), dtype=np.int64)
            seg_p[st_idx, nd_idx] = pstar
            ppos = np.repeat(seg_p.ravel(), cflat).reshape(T, n)
            sample = flat.ravel().take(rowsel).reshape(T, n)  # flat index t*n + i
            child = (2 * pos_node + 1 + (pos > ppos)).astype(np.int8)
            nodef = node.ravel().copy()
            nodef[sample[split_pos]] = child[split_pos]
            node = nodef.reshape(T, n)
            if depth + 1 < self.max_depth:  # regroup the orders by the new nodes (stable)
                perm = np.argsort(nodef.take(flat), axis=2, kind="stable")
                perm += row_td
                P = P.ravel().take(perm)
            del flat

        # impurity-based importance of these trees (sklearn's compute_feature_importances)
        with np.errstate(invalid="ignore", divide="ignore"):
            imp = np.where(cnt > 0, s2 / np.maximum(cnt, 1) - (s1 / np.maximum(cnt, 1)) ** 2, 0.0)
        w = cnt * imp
        split_t, split_h = np.nonzero(feat >= 0)
        gain = (w[split_t, split_h] - w[split_t, 2 * split_h + 1] - w[split_t, 2 * split_h + 2]) / n
        return node, np.bincount(feat[split_t, split_h].astype(np.intp), weights=gain, minlength=D)

    # -- prediction ------------------------------------------------------------------------
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw scores (T, m): T = 1 for two classes, else one row per class."""
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        m = X32.shape[0]
        if self._T == 0:
            return np.zeros((0, m))
        XT = X32.T
        raw = np.repeat(self._raw0[:, None], m, axis=1)
        T = self._T
        tix = np.arange(T)[:, None]
        cols = np.arange(m)[None, :]
        for s in range(self.n_estimators):
            node = np.zeros((T, m), dtype=np.intp)
            feat, thr = self._feat[s], self._thr[s]
            for _ in range(self.max_depth):
                internal = node < feat.shape[1]
                f = np.where(internal, feat[tix, np.minimum(node, feat.shape[1] - 1)], -1)
                go = f >= 0
                x = XT[np.maximum(f, 0), np.broadcast_to(cols, (T, m))]
                t = thr[tix, np.minimum(node, feat.shape[1] - 1)]
                node = np.where(go, 2 * node + 1 + (x > t), node)
            raw += self.learning_rate * self._val[s][tix, node]
        return raw

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self._T == 0:
            return np.full(len(X), self.classes_[0])
        raw = self.decision_function(X)
        enc = (raw[0] >= 0).astype(np.intp) if self._T == 1 else np.argmax(raw, axis=0)
        return self.classes_[enc]

    def predict_train(self) -> np.ndarray:
        """Predictions on the training set, from the scores accumulated while fitting (the
        same trees, so the same as ``predict(X_train)``)."""
        if self._T == 0:
            return None
        raw = self._raw_train
        enc = (raw[0] >= 0).astype(np.intp) if self._T == 1 else np.argmax(raw, axis=0)
        return self.classes_[enc]


class SklearnGBT:
    """scikit-learn's own ``GradientBoostingClassifier`` behind this module's interface (``fit``,
    ``predict``, ``predict_train``, ``feature_importances_``, ``classes_``): the model dlib fits,
    for checking and for timing dlib's learner (``random_state=None``: NumPy's global stream,
    as dlib leaves it)."""

    def __init__(self, n_estimators: int = 100, random_state: int | None = None, n_jobs: int = 1, **_):
        from sklearn.ensemble import GradientBoostingClassifier  # heavy: only when asked for

        self.model = GradientBoostingClassifier(n_estimators=n_estimators, random_state=random_state)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "SklearnGBT":
        self.model.fit(X, y)
        self._X, self.classes_ = X, self.model.classes_
        self.feature_importances_ = self.model.feature_importances_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)

    def predict_train(self) -> np.ndarray:
        return self.model.predict(self._X)


class DlibGBT(SklearnGBT):
    """dlib's ``GradientBoostingClassifier()``: ``random_state`` left None whatever is asked, so
    scikit-learn draws its tie-breaks from NumPy's global stream (for timing and replaying dlib)."""

    def __init__(self, n_estimators: int = 100, random_state=None, n_jobs: int = 1, **_):
        super().__init__(n_estimators)


def _digest(*arrays: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.digest()


def fit_seed(X: np.ndarray, y: np.ndarray, digest: bytes | None = None) -> int:
    """The trees' tie-breaking seed: a hash of their training data (``digest``, when already
    taken), so the same data gives the same trees in every metric (and one fit can serve them all)."""
    return int.from_bytes((digest or _digest(X, y))[:4], "little") & 0x7FFFFFFF


def fit_gbt(X: np.ndarray, y: np.ndarray, cache: dict | None = None, n_estimators: int = 100, n_jobs: int = 1,
            learner=None):
    """A fitted GBT (``learner``, default this module's exact one) seeded by :func:`fit_seed`.
    ``cache`` (``Codes.fits``): a fit on the same data, learner and size is reused, not
    repeated; DCI, the boosted-tree downstream task and fairness train on the same draw of
    the same grid points (dlib's DCI and fairness do too: each starts from ``RandomState(seed)``)."""
    learner = learner or GradientBoostedTrees
    digest = _digest(X, y)  # once: the cache key and the seed
    key = (learner.__module__, learner.__qualname__, int(n_estimators), digest)
    if cache is not None and key in cache:
        return cache[key]
    model = learner(n_estimators=n_estimators, random_state=fit_seed(X, y, digest), n_jobs=n_jobs).fit(X, y)
    if cache is not None:
        cache[key] = model
    return model


def _expit(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _leaf_values(leaf: np.ndarray, G: np.ndarray, hess: np.ndarray, n_nodes: int) -> np.ndarray:
    """Newton step per leaf: mean(g) / mean(p(1-p)), 0 where the hessian vanishes."""
    T = G.shape[0]
    gid = (leaf.astype(np.intp) + np.arange(T)[:, None] * n_nodes).ravel()
    size = T * n_nodes
    c = np.bincount(gid, minlength=size)
    num = np.bincount(gid, weights=G.ravel(), minlength=size)
    den = np.bincount(gid, weights=hess.ravel(), minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        num_avg = num / c
        den_avg = den / c
        val = np.where((c > 0) & (np.abs(den_avg) >= _TINY), num_avg / den_avg, 0.0)
    return val.reshape(T, n_nodes)
