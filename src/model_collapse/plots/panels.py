"""Metric-vs-generation panels: the median over chains, its 5-95% band, the mean and the closed form.

Shared by a run's figures (plots/runs.py, plots/text.py) and the sweep's (sweeps/figures.py).
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from .canvas import subplots

SKIP = {"generation", "chain"}
# Histogram columns have figures of their own (plots/images.py), not one panel each.
HISTOGRAM = re.compile(r"(class|pix_hist)_\d+")
# A panel is ~250 px wide: past ~150 points a line only costs drawing time (7 panels of 300-point
# lines took ~12 ms more than of 50 here); metrics.csv keeps every generation.
MAX_POINTS = 150


def table(g_all: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(generations (G,), values (G, W)): one row per generation, its values in file order, NaN-padded
    where a generation has fewer rows than the widest one (chains missing at a generation)."""
    gens, inv = np.unique(g_all, return_inverse=True)
    counts = np.bincount(inv, minlength=len(gens))
    width = int(counts.max()) if len(counts) else 0
    if len(v) == len(gens) * width and np.array_equal(inv, np.repeat(np.arange(len(gens)), width)):
        return gens, v.reshape(len(gens), width)        # the usual layout: sorted, every chain every time
    order = np.argsort(inv, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gi = inv[order]
    out = np.full((len(gens), width), np.nan)
    out[gi, np.arange(len(v)) - start[gi]] = v[order]
    return gens, out


def percentiles(values: np.ndarray, q) -> np.ndarray:
    """np.nanpercentile(values, q, axis=1), (len(q), G), without its per-row Python loop.

    Rows are grouped by their count n of finite values; each group's finite values (moved to the
    front by one sort) go through np.percentile along axis 1 at once, which runs the same
    order-statistic + interpolation code as nanpercentile's per-row path: the same numbers."""
    q = np.asarray(q, float)
    out = np.full((len(q), values.shape[0]), np.nan)
    n = np.isfinite(values).sum(axis=1)
    if values.shape[1] == 0:
        return out
    full = n == values.shape[1]
    if full.all():
        return np.percentile(values, q, axis=1)
    if full.any():
        out[:, full] = np.percentile(values[full], q, axis=1)
    part = ~full & (n > 0)
    if part.any():
        s = np.sort(values[part], axis=1)              # NaN sorts last
        idx = np.flatnonzero(part)
        for k in np.unique(n[part]):
            sel = n[part] == k
            out[:, idx[sel]] = np.percentile(s[sel, :k], q, axis=1)
    return out


def bands(cols, rows, name):
    """Per-generation generations, median, 5%, 95%, mean of one column across chains."""
    gens, values = table(rows[:, cols.index("generation")], rows[:, cols.index(name)])
    values = np.where(np.isfinite(values), values, np.nan)  # all-inf columns (e.g. NLL of a lost category)
    q = percentiles(values, [5, 50, 95])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN generations: NaN mean
        mean = np.nanmean(values, axis=1)
    return gens, q[1], q[0], q[2], mean


def panel(ax, cols, rows, name, label=None, color=None, theory=None, bound=None):
    """Draw one metric column: median line, 5-95% band, mean dashed, theory dotted, a bound dash-dotted.

    Overlaid runs (variants) draw their closed forms in their own colour, so replace's and
    accumulate's curves can be told apart; a single run draws it in black."""
    gens, med, lo, hi, mean = bands(cols, rows, name)
    several = rows.shape[0] > len(gens)   # more than one chain: a band and a mean say something
    step = max(1, -(-len(gens) // MAX_POINTS))
    if step > 1:
        keep = np.r_[np.arange(0, len(gens) - 1, step), len(gens) - 1]
        gens, med, lo, hi, mean = (a[keep] for a in (gens, med, lo, hi, mean))
    line, = ax.plot(gens, med, color=color, lw=1.5, label=f"{label or ''} median".strip())
    if several:
        ax.fill_between(gens, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.plot(gens, mean, color=line.get_color(), lw=1, ls="--", label=f"{label or ''} mean".strip())
    ink = "k" if label is None else line.get_color()
    if theory is not None:
        ax.plot(gens, theory(gens), color=ink, lw=1.2, ls=":", label=f"{label or ''} theory".strip())
    if bound is not None:
        ax.axhline(bound, color=ink, lw=0.8, ls="-.", label=f"{label or ''} bound".strip())
    ax.set_title(name, fontsize=9, y=1.0)   # a fixed y skips matplotlib's title placement pass
    ax.tick_params(labelsize=7)
    ax.locator_params(nbins=4)   # few ticks: drawing tick objects is most of a figure's cost


def grid(n):
    """A figure with n panels (at most 4 a row) and its axes, flat."""
    ncol = min(n, 4)
    nrow = int(np.ceil(n / ncol))
    fig, axes = subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.remove()
    return fig, axes.ravel()
