"""Percentile-bootstrap intervals of the mean and the median over seeds (stats.csv's numbers).

A resample draws k seeds with replacement; its mean and median are computed per column, and the
interval is the inverted-CDF percentile of the statistic over the resamples (no interpolation,
so inf stays inf). The resampled means are summed seed by seed, in draw order, as numpy's sum
over the seed axis does. The resampled medians are not sorted resample by resample: a median is
an order statistic (or the mid-point of two), so it is the same two seeds of a column for every
column whose seeds sort alike, and its bootstrap distribution is a short list of values with
counts. Both give the very numbers of sorting every resample (tests/test_sweep.py checks it).
"""

from __future__ import annotations

import warnings

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


def resample_indices(k: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, k) indices of seeds drawn with replacement: the bootstrap's resamples."""
    return np.random.default_rng(seed).integers(0, k, size=(resamples, k))


def nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean over axis ignoring NaN (NaN where nothing is left), without numpy's warnings."""
    keep = ~np.isnan(x)
    n = keep.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(keep, x, 0.0).sum(axis=axis) / np.maximum(n, 1), np.nan)


def nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    """Median over axis ignoring NaN, vectorised (numpy's nanmedian loops in Python over short rows)."""
    s = np.sort(np.moveaxis(x, axis, -1), axis=-1)   # NaN sorts last
    n = (~np.isnan(s)).sum(axis=-1)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(s, np.maximum(n // 2, 0)[..., None], -1)[..., 0]
    return np.where(n > 0, _mid(lo, hi), np.nan)


def _mid(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A median from its two middle values (the same value for an odd count; inf stays inf)."""
    with np.errstate(invalid="ignore"):
        return np.where(lo == hi, lo, (lo + hi) / 2)


def _tails(level: float) -> list[float]:
    """The two quantiles of a `level` interval."""
    tail = round((1 - level) / 2, 12)   # 0.025, not 0.025000000000000022 (one resample off at B = 200)
    return [tail, 1 - tail]


def _quantiles(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap statistics (resamples, C); no interpolation, so inf stays inf."""
    fn = np.nanquantile if np.isnan(boot).any() else np.quantile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # columns with no value at all: NaN
        lo, hi = fn(boot, _tails(level), axis=0, method="inverted_cdf")
    return lo, hi


def resampled_means(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """nanmean(values[idx], 1), (resamples, C), one seed at a time: no (resamples, k, C) array."""
    keep = ~np.isnan(values)
    x = np.where(keep, values, 0.0)
    total = x[idx[:, 0]] + 0.0   # + 0.0: numpy's sum starts at 0 (so -0.0 sums to 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):   # inf - inf: NaN, as in nanmean
        for j in range(1, idx.shape[1]):   # and adds the seeds in draw order
            total += x[idx[:, j]]
        if keep.all():
            return total / idx.shape[1]
        n = keep[idx[:, 0]].astype(np.int64)
        for j in range(1, idx.shape[1]):
            n += keep[idx[:, j]]
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _order_stat(size: np.ndarray, q: float) -> np.ndarray:
    """Which value (0-based, in sorted order) an inverted-CDF quantile q of `size` values is."""
    sizes, back = np.unique(size, return_inverse=True)
    pick = [np.quantile(np.arange(s, dtype=float), q, method="inverted_cdf") if s else 0 for s in sizes]
    return np.asarray(pick, np.int64)[back.reshape(-1)]


def median_intervals(values: np.ndarray, idx: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """_quantiles(nanmedian(values[idx], 1), level) for values (k, C), from counts of order statistics."""
    k, c = values.shape
    order = np.argsort(values, axis=0, kind="stable")                 # (k, C), NaN last
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(k)[:, None], axis=0)    # each seed's rank in its column
    shapes, group = np.unique(np.vstack([ranks, (~np.isnan(values)).sum(axis=0)]).T, axis=0,
                              return_inverse=True)                    # (S, k + 1): ranks, values
    if len(shapes) > c // 2:   # many seeds: nearly every column sorts its own way, nothing to share
        step = max(1, int(4e6 // idx.size))   # columns per chunk: ~32 MB of resampled values
        parts = [_quantiles(nanmedian(values[:, a:a + step][idx], 1), level) for a in range(0, c, step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    group = group.reshape(-1)
    # Each resample's middle ranks, per group of columns that sort alike: (resamples, S).
    picked = np.sort(shapes[:, :k].T[idx], axis=1)                    # (resamples, k, S)
    n = (picked < shapes[:, k]).sum(axis=1)
    lo = np.take_along_axis(picked, np.maximum((n - 1) // 2, 0)[:, None], 1)[:, 0]
    hi = np.take_along_axis(picked, np.maximum(n // 2, 0)[:, None], 1)[:, 0]
    # How many resamples pick each (lo, hi) pair in each group; code 0: no seed with a value.
    width = k * k + 1
    code = np.where(n > 0, lo * k + hi + 1, 0) + width * np.arange(len(shapes))
    key, count = np.unique(code, return_counts=True)
    grp, code = np.divmod(key, width)
    grp, code, count = grp[code > 0], code[code > 0] - 1, count[code > 0]
    first = np.searchsorted(grp, np.arange(len(shapes)))
    per_col = np.searchsorted(grp, np.arange(len(shapes)), "right")[group] - first[group]
    # Every column with each pair of its group: the candidate medians and their counts, flat.
    start = np.cumsum(per_col) - per_col
    col = np.repeat(np.arange(c), per_col)
    entry = np.arange(per_col.sum()) + np.repeat(first[group] - start, per_col)
    ordered = np.take_along_axis(values, order, axis=0)               # (k, C), each column sorted
    mid = _mid(ordered[code[entry] // k, col], ordered[code[entry] % k, col])
    weight = np.where(np.isnan(mid), 0, count[entry])                 # inf - inf: NaN, left out as before
    srt = np.lexsort((mid, col))                                      # by column, then by value
    mid, cum = mid[srt], np.cumsum(weight[srt])
    size = np.bincount(col, weights=weight, minlength=c).astype(np.int64)
    if not len(mid):
        return np.full(c, np.nan), np.full(c, np.nan)
    base = np.concatenate([[0], cum])[start]
    out = []
    for q in _tails(level):   # the first candidate whose running count passes the order statistic
        at = np.searchsorted(cum, base + _order_stat(size, q), side="right")
        out.append(np.where(size > 0, mid[np.minimum(at, len(mid) - 1)], np.nan))
    return out[0], out[1]


def bootstrap(values: np.ndarray, resamples: int = RESAMPLES, level: float = LEVEL,
              seed: int = SEED) -> dict[str, np.ndarray]:
    """Mean and median of each column of values (seeds, columns) with bootstrap intervals.

    Returns arrays (columns,): n, mean, mean_lo, mean_hi, median, median_lo, median_hi."""
    values = np.asarray(values, float)
    if values.ndim == 1:
        values = values[:, None]
    k, c = values.shape
    out = {"n": (~np.isnan(values)).sum(axis=0), "mean": nanmean(values, 0), "median": nanmedian(values, 0)}
    for key in ("mean_lo", "mean_hi", "median_lo", "median_hi"):
        out[key] = np.full(c, np.nan)
    if k == 0 or c == 0:
        return out
    idx = resample_indices(k, resamples, seed)
    step = max(1, int(4e6 // resamples))   # columns per chunk: ~32 MB of resampled means
    for a in range(0, c, step):
        part = values[:, a:a + step]
        out["mean_lo"][a:a + step], out["mean_hi"][a:a + step] = _quantiles(resampled_means(part, idx), level)
        out["median_lo"][a:a + step], out["median_hi"][a:a + step] = median_intervals(part, idx, level)
    return out
