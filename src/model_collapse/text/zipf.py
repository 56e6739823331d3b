"""A synthetic language with a known law: a Markov chain of order 1 or 2 with Zipfian marginals.

Token frequencies follow Zipf's law, p_i ∝ (i + 1)^-a, the regime in which
Dohmatob et al. (2024, "A tale of tails") show each generation of model
collapse cutting off the tail. Successive tokens depend on each other through
a random coupling: the joint law of a pair (x_{t-1}, x_t) is the matrix with
both marginals equal to p that is nearest (in KL) to a random kernel
exp(c G), G standard normal, found by Sinkhorn's scaling (Sinkhorn 1964), so
the chain's stationary law is exactly p. Order 2 scales a V^3 kernel the same
way for each middle token, so the pair law is stationary too. Everything is
exact: the log-probability of any block (the first tokens under the
stationary law), the entropy rate and the entropy of a block.
"""

from __future__ import annotations

import numpy as np

MAX_V3 = 128 ** 3     # order 2 keeps a dense V^3 table


def zipf(v: int, exponent: float) -> np.ndarray:
    """Zipf probabilities of v ranks: p_i ∝ (i + 1)^-exponent."""
    p = np.arange(1, v + 1, dtype=np.float64) ** -exponent
    return p / p.sum()


def sinkhorn(kernel: np.ndarray, rows: np.ndarray, cols: np.ndarray, tol: float = 1e-13,
             max_iter: int = 5000) -> np.ndarray:
    """diag(u) K diag(v) with row sums `rows` and column sums `cols`, batched over leading axes: (..., A, B)."""
    u = np.ones(rows.shape)
    v = np.ones(cols.shape)
    for _ in range(max_iter):
        u = rows / np.einsum("...ab,...b->...a", kernel, v)
        v = cols / np.einsum("...ab,...a->...b", kernel, u)
        got = u * np.einsum("...ab,...b->...a", kernel, v)
        if np.max(np.abs(got - rows) / np.maximum(rows, 1e-300)) < tol:
            break
    return u[..., :, None] * kernel * v[..., None, :]


def _entropy(p: np.ndarray, axis=-1) -> np.ndarray:
    """-sum p log p along an axis (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=axis)


def rows_inverse_cdf(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """First j with cdf[rows, j] > u, for each query: a binary search vectorised over queries (no Python per token)."""
    lo = np.zeros(rows.shape, np.int64)
    hi = np.full(rows.shape, cdf.shape[1] - 1, np.int64)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        right = cdf[rows, mid] <= u           # the answer lies right of mid
        lo = np.where(open_ & right, mid + 1, lo)
        hi = np.where(open_ & ~right, mid, hi)


class ZipfMarkov:
    """The true language: `order` 1 or 2, V tokens, Zipf `exponent`, coupling strength `coupling`."""

    def __init__(self, vocab: int, order: int = 1, exponent: float = 1.1, coupling: float = 2.0, seed: int = 0):
        self.v, self.order = vocab, order
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
        self.marginal = zipf(vocab, exponent)                                      # (V,)
        pair = sinkhorn(np.exp(coupling * rng.standard_normal((vocab, vocab))), self.marginal, self.marginal)
        self.p1 = pair / pair.sum(axis=1, keepdims=True)                           # P(x_t | x_{t-1}) (V, V)
        self.pair = self.marginal[:, None] * self.p1                               # stationary pair law
        self.p2 = None
        if order == 2:
            if vocab ** 3 > MAX_V3:
                raise ValueError(f"order 2 keeps a V^3 table; vocab must be <= {round(MAX_V3 ** (1 / 3))}")
            k3 = np.exp(coupling * rng.standard_normal((vocab, vocab, vocab)))     # (a, b, c)
            # For each middle token b: M[a, b, c] with sum_c = pair[a, b] and sum_a = pair[b, c].
            m3 = sinkhorn(k3.transpose(1, 0, 2), self.pair.T, self.pair)           # (b, a, c)
            m3 = m3.transpose(1, 0, 2)
            self.p2 = m3 / m3.sum(axis=2, keepdims=True)                            # P(x_t | x_{t-2}, x_{t-1})
        self._cdf1 = self._cdf(self.p1)
        self._cdf0 = self._cdf(self.marginal[None, :])
        self._cdf2 = None if self.p2 is None else self._cdf(self.p2.reshape(vocab * vocab, vocab))

    @staticmethod
    def _cdf(p: np.ndarray) -> np.ndarray:
        c = np.cumsum(p, axis=1)
        c[:, -1] = 1.0
        return c

    # -- exact quantities -------------------------------------------------------------------------
    def entropy_rate(self) -> float:
        """h = lim H(X_t | past), nats per token."""
        if self.order == 1:
            return float((self.marginal * _entropy(self.p1)).sum())
        return float((self.pair * _entropy(self.p2)).sum())

    def block_entropy(self, t: int) -> float:
        """H(X_0 .. X_{t-1}) of a stationary block of t tokens, nats."""
        h0 = float(_entropy(self.marginal))
        h1 = float((self.marginal * _entropy(self.p1)).sum())
        if t <= 1:
            return h0 * t
        if self.order == 1:
            return h0 + (t - 1) * h1
        return h0 + h1 + (t - 2) * self.entropy_rate()

    def token_logprob(self, x) -> np.ndarray:
        """Exact log P(x_t | x_<t) of each token of blocks x (..., T): the same shape."""
        x = np.asarray(x, np.int64)
        out = np.empty(x.shape)
        out[..., 0] = np.log(self.marginal[x[..., 0]])
        if x.shape[-1] > 1:
            out[..., 1] = np.log(self.p1[x[..., 0], x[..., 1]])
        if x.shape[-1] > 2:
            if self.order == 1:
                out[..., 2:] = np.log(self.p1[x[..., 1:-1], x[..., 2:]])
            else:
                out[..., 2:] = np.log(self.p2[x[..., :-2], x[..., 1:-1], x[..., 2:]])
        return out

    def log_prob(self, x) -> np.ndarray:
        """Exact log-probability of each block of x (..., T): shape (...)."""
        return self.token_logprob(x).sum(axis=-1)

    def sample(self, shape: tuple, t: int, rng: np.random.Generator) -> np.ndarray:
        """Stationary blocks of t tokens: shape + (t,), int32 (one vectorised step per position)."""
        m = int(np.prod(shape))
        x = np.empty((m, t), np.int32)
        u = rng.random((t, m))
        x[:, 0] = rows_inverse_cdf(self._cdf0, np.zeros(m, np.int64), u[0])
        for i in range(1, t):
            if self.order == 1 or i == 1:
                x[:, i] = rows_inverse_cdf(self._cdf1, x[:, i - 1].astype(np.int64), u[i])
            else:
                rows = x[:, i - 2].astype(np.int64) * self.v + x[:, i - 1]
                x[:, i] = rows_inverse_cdf(self._cdf2, rows, u[i])
        return x.reshape(tuple(shape) + (t,))
