"""Drop near-duplicates: a sample within eps of an earlier kept sample of its chain.

Generated data loses variety as a loop collapses (Shumailov et al. 2024); web-scale
pipelines deduplicate before reuse, so a loop that reuses its own samples should be
able to as well. The rule, per chain, in draw order: a sample is dropped when its
Euclidean distance to an earlier *kept* sample is <= eps; with `across_rounds` (the
default) the samples this filter accepted in the generation's earlier refill rounds
count as earlier kept samples too. Distances are taken on the float values of the
items: vectors as they are, images on their pixels (0..255, the label column left out,
so the same picture with two labels is a duplicate), text blocks never (text is
compared exactly, and eps must stay 0). eps = 0 (the default) drops exact copies
only, compared byte for byte.

Near pairs are found with matrix products in blocks of rows against the samples kept
so far (|a - b|^2 = |a|^2 + |b|^2 - 2 a.b: exact for uint8 pixels, float64 otherwise);
only rows with a near earlier row in their own block are settled one by one, so no
Python loop runs over pairs (10,000 MNIST digits: see benchmarks/bench_filters.py).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..kinds import Needs
from ..schema import Component

BLOCK = 1024   # rows per matrix product: bounds the temporary (BLOCK, kept) matrix


class DedupeFilterConfig(Component):
    """Drop samples within Euclidean distance eps (<= eps; 0: exact copies) of an earlier kept
    sample of the same chain, including those accepted in earlier refill rounds (across_rounds)."""

    kind: Literal["dedupe"] = Field("dedupe", description=(
        "the filter: dedupe, drop near-copies of earlier kept samples"))
    needs: ClassVar[Needs] = Needs(kinds=("vector", "image", "text", "pairs"), model=("items",))
    eps: float = Field(0.0, ge=0, description=(
        "Euclidean distance at or below which a sample duplicates an earlier kept one; 0 drops exact copies"))
    across_rounds: bool = Field(True, description=(
        "also compare with samples kept in earlier refill rounds of the same generation"))
    max_rounds: int = Field(10, ge=1, description="draws before giving up with a clear error")

    def check(self, exp) -> list[tuple[str, str]]:
        """Text blocks are compared exactly."""
        if self.eps > 0 and exp.source.declare().data_kind == "text":
            return [("filter.eps", "dedupe compares text blocks exactly (token ids have no distance); "
                                   "leave eps at 0")]
        return []

    def build(self, source):
        """The filter object for a run."""
        return DedupeFilter(self, getattr(source, "data_kind", None))


def _features(x: np.ndarray, data_kind) -> np.ndarray:
    """The values compared, (n, D): image pixels without the label; a scalar item as one column."""
    x = x[..., :-1] if data_kind == "image" else x
    return x.reshape(len(x), -1)


def exact_first(rows: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """Keep mask (n,): the first copy of each row of `rows` that is not already in `earlier` (m, D)."""
    both = np.ascontiguousarray(np.concatenate([earlier, rows]))
    keys = both.view(np.dtype((np.void, both.dtype.itemsize * both.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)   # index of each distinct row's first copy
    keep = np.zeros(len(both), bool)
    keep[first] = True
    return keep[len(earlier):]


def _values(rows: np.ndarray) -> tuple[np.ndarray, bool]:
    """The rows as the matrix products take them, and whether those products are exact integers.

    uint8 pixels shifted to -128..127 make every product sum of up to 1,024 values an integer
    below 2^24, which float32 holds exactly: 2.5x faster products than float64, still exact.
    """
    if rows.dtype == np.uint8 and rows.shape[1] * 128 * 128 <= 2 ** 24:
        return rows.astype(np.float32) - 128, True
    return np.asarray(rows, np.float64), False


def _near(xb: np.ndarray, sb: np.ndarray, y: np.ndarray, sy: np.ndarray, eps2: float, exact: bool) -> np.ndarray:
    """(len(xb), len(y)) mask of pairs with squared distance <= eps2, from one matrix product.

    Exact products: the float32 sum |a|^2 + |b|^2 - 2 a.b errs by a few units at most, so pairs
    within a margin of eps^2 either way are settled in int64; in float64 the rounding is far
    below any useful eps.
    """
    g = xb @ y.T
    d2 = g * -2
    d2 += sb[:, None]
    d2 += sy[None, :]
    if not exact:
        return d2 <= eps2
    margin = 8 + eps2 * 2 ** -20
    near = d2 <= eps2 - margin
    i, j = np.nonzero((d2 <= eps2 + margin) & ~near)   # the thin band rounding could decide
    near[i, j] = (sb[i].astype(np.int64) + sy[j].astype(np.int64) - 2 * g[i, j].astype(np.int64)) <= eps2
    return near


def near_first(rows: np.ndarray, earlier: np.ndarray, eps: float) -> np.ndarray:
    """Keep mask (n,): greedy in order, a row is kept unless within eps of `earlier` or of a kept row before it."""
    x, exact = _values(rows)
    e, _ = _values(earlier) if len(earlier) else (x[:0], exact)
    n, eps2 = len(x), eps * eps
    kept = np.empty((len(e) + n, x.shape[1]), x.dtype)     # every row kept so far, in order
    kept[:len(e)] = e
    nk = len(e)
    sq = np.einsum("ij,ij->i", x, x)
    kept_sq = np.empty(len(kept), sq.dtype)
    kept_sq[:nk] = np.einsum("ij,ij->i", e, e)
    keep = np.zeros(n, bool)
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        xb, sb = x[a:b], sq[a:b]
        # rows near a row kept before this block: products against everything kept so far
        free = np.ones(b - a, bool)
        for c in range(0, nk, 8 * BLOCK):
            d = min(c + 8 * BLOCK, nk)
            free &= ~_near(xb, sb, kept[c:d], kept_sq[c:d], eps2, exact).any(axis=1)
        # near pairs inside the block (j < i): only rows that have one need the sequential rule
        near = _near(xb, sb, xb, sb, eps2, exact) & np.tri(b - a, k=-1, dtype=bool)
        mine = free.copy()
        for i in np.flatnonzero(near.any(axis=1) & free):
            mine[i] = not (near[i, :i] & mine[:i]).any()
        keep[a:b] = mine
        m = int(mine.sum())
        kept[nk:nk + m], kept_sq[nk:nk + m] = xb[mine], sb[mine]
        nk += m
    return keep


class DedupeFilter:
    """Per chain: exact copies (eps = 0) or near copies (eps > 0) of earlier kept samples are dropped."""

    def __init__(self, cfg: DedupeFilterConfig, data_kind):
        self.cfg, self.data_kind = cfg, data_kind
        self.memory: list[np.ndarray] | None = None   # per chain: the rows kept in this generation's earlier rounds

    def begin(self) -> None:
        """A new generation: forget the rows kept in the previous one (the stage calls this first)."""
        self.memory = None

    def __call__(self, samples, model, rng: np.random.Generator) -> np.ndarray:
        """Keep mask (S, n); deterministic (the rng is not used)."""
        x = np.asarray(samples)
        exact = self.cfg.eps == 0
        keep = np.zeros(x.shape[:2], bool)
        if self.memory is None or not self.cfg.across_rounds:
            self.memory = [None] * x.shape[0]
        for s in range(x.shape[0]):
            rows = _features(x[s], self.data_kind)
            earlier = self.memory[s] if self.memory[s] is not None else rows[:0]
            keep[s] = exact_first(rows, earlier) if exact else near_first(rows, earlier, self.cfg.eps)
            self.memory[s] = np.concatenate([earlier, rows[keep[s]]])
        return keep
