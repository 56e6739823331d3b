"""n-gram language models with add-k or Kneser-Ney smoothing, vectorised over chains.

The fast baseline where rare tokens vanish: an n-gram never seen in a
generation's training text is never generated (add-k with k = 0), or only
through the smoothed lower orders (Kneser-Ney), so the tail of the token
distribution is cut a little more every generation (Dohmatob et al. 2024).

Data are blocks of token ids (S, N, T). Each block starts after n-1 BOS
symbols (id V, never generated), so the first tokens are scored and sampled
from the model's own start-of-block distribution and `log_prob` is the exact
log-probability of a whole block under the model.

All chains are counted at once: an m-gram (context c of m-1 tokens, token w)
of chain s has the integer key (s * (V+1)^(m-1) + c) * V + w, with c written
in base V+1; one np.unique over every position of every block counts the
top order, and lower orders are aggregated from the distinct top-order keys.
Keys are sorted, so the continuations of one context are one contiguous
segment: sampling is an inverse CDF on that segment of a cumulative sum, one
numpy step per position for every block of every chain.

Smoothing (Chen & Goodman 1999, "An empirical study of smoothing techniques"):
- add-k: p(w|c) = (n(c,w) + k) / (n(c) + kV); a context never seen backs off
  to its longest seen suffix (k = 0 is maximum likelihood);
- interpolated Kneser-Ney (Kneser & Ney 1995) with discount D:
  p(w|c) = max(n(c,w) - D, 0) / n(c) + D N1+(c.) / n(c) p(w|c'), where lower
  orders count distinct left extensions N1+(.c'w) (raw counts for contexts
  starting at BOS), and the recursion ends in the uniform 1/V.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..datasets.errors import DataError
from ..errors import ConfigError
from ..schema import Component

CHUNK = 1 << 20   # tokens scored at a time (bounds temporary memory)


class NgramConfig(Component):
    """Config of the ``ngram`` family."""

    kind: Literal["ngram"] = Field("ngram", description="the family: ngram, an n-gram language model")
    order: int = Field(3, ge=1, le=16, description="n: each token depends on the n-1 before it (1 = unigram)")
    smoothing: Literal["kneser-ney", "add-k"] = Field("kneser-ney", description="interpolated Kneser-Ney, or "
                                                      "add-k pseudo-counts with back-off for unseen contexts")
    k: float = Field(0.0, ge=0, description="add-k: pseudo-count of every token in a seen context (0 = MLE)")
    discount: float = Field(0.75, gt=0, le=1, description="Kneser-Ney: absolute discount D")
    temperature: float = Field(1.0, gt=0, description="sampling only: p^(1/temperature), renormalised")
    mode: Literal["unconditional", "prompted"] = Field(
        "unconditional", description="prompted: each block starts with `prompt` tokens of a real training block "
                                     "and the model writes the rest (Shumailov et al. 2024)")
    prompt: int = Field(32, ge=1, description="prompted: tokens of real text before the model's continuation")

    data_kinds: ClassVar[frozenset] = frozenset({"text"})

    def capabilities(self, source) -> frozenset:
        """Samples items, exact block log-probabilities, per-token scores."""
        return frozenset({"items", "log_prob", "score_text"})

    def check(self, exp) -> list[tuple[str, str]]:
        """The n-gram and the prompt must fit in a block."""
        block = getattr(exp.source, "block", None)
        errs = []
        if block is not None and self.order > block:
            errs.append(("model.order", f"an order-{self.order} model's context of {self.order - 1} tokens is "
                                        f"longer than a block (source.block = {block}); lower model.order"))
        if block is not None and self.mode == "prompted" and self.prompt >= block:
            errs.append(("model.prompt", f"the prompt ({self.prompt} tokens) leaves nothing to write in a block "
                                         f"of {block}; make it shorter than source.block"))
        return errs

    def build(self, source, chains: int) -> "NgramFamily":
        """The family for a built text source."""
        return NgramFamily(self, source, chains)


@dataclass
class _Level:
    """The m-grams of one order m, all chains: sorted keys, counts, and their contexts' segments."""

    gkey: np.ndarray      # (G,) int64 sorted m-gram keys
    cnt: np.ndarray       # (G,) float64 counts used at this order (raw, or Kneser-Ney continuation counts)
    cum: np.ndarray       # (G+1,) cumulative sampling weights (cnt, or cnt - D)
    ckey: np.ndarray      # (U,) sorted context keys s * C + c
    cstart: np.ndarray    # (U,) first m-gram of each context
    cend: np.ndarray      # (U,) one past its last
    ctotal: np.ndarray    # (U,) n(c): total count of the context
    stay: np.ndarray      # (U,) probability that a draw is taken from this order's counts

    @classmethod
    def empty(cls) -> "_Level":
        z, zf = np.zeros(0, np.int64), np.zeros(0)
        return cls(z, zf, np.zeros(1), z, z, z, zf, zf)


def _count(keys: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys in [0, space) (sorted) and their counts: one bincount when the key space is small
    next to the data (no sort), else np.unique."""
    keys = keys.ravel()
    if space <= max(1 << 22, 4 * keys.size):
        counts = np.bincount(keys, minlength=space)
        distinct = np.flatnonzero(counts)
        return distinct, counts[distinct]
    return np.unique(keys, return_counts=True)


def _find(sorted_keys: np.ndarray, q: np.ndarray):
    """(index, found) of each query in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(q.shape, np.int64), np.zeros(q.shape, bool)
    i = np.minimum(np.searchsorted(sorted_keys, q), len(sorted_keys) - 1)
    return i, sorted_keys[i] == q


class NgramFamily:
    """S independent n-gram models over a text source's vocabulary."""

    def __init__(self, cfg: NgramConfig, source, chains: int):
        self.cfg, self.source, self.chains = cfg, source, chains
        self.n, self.v = cfg.order, len(source.vocab)
        self.base, self.bos = self.v + 1, self.v                 # contexts are base-(V+1) numbers; BOS = V
        self.block = source.block
        self.vocab_hash = source.tokenizer.hash   # recorded in every state; checked on load
        if chains * self.base ** (self.n - 1) * self.v >= 2 ** 62:
            raise ConfigError(f"model.order = {self.n} with a vocabulary of {self.v} tokens and {chains} chains "
                              f"needs n-gram keys beyond 64 bits; lower model.order (or the vocabulary)")
        self._set(np.zeros(0, np.int64), np.zeros(0, np.int64))

    # -- counting ---------------------------------------------------------------------------------
    def _contexts(self, x: np.ndarray) -> np.ndarray:
        """Top-order context id (base V+1, BOS-padded) of every position of blocks x (..., T): int64."""
        ctx = np.zeros(x.shape, np.int64)
        if self.n == 1:
            return ctx
        pad = np.concatenate([np.full(x.shape[:-1] + (self.n - 1,), self.bos, np.int64),
                              x.astype(np.int64)], axis=-1)
        t = x.shape[-1]
        for j in range(self.n - 1):
            ctx *= self.base
            ctx += pad[..., j:j + t]
        return ctx

    def fit(self, data, rng=None) -> None:
        """Count every n-gram of every chain's blocks (S, N, T); no per-token Python."""
        x = np.asarray(data)
        s_count, top = x.shape[0], self.base ** (self.n - 1) * self.v
        if x.size and (x.min() < 0 or x.max() >= self.v):
            raise DataError(f"ngram: token ids must lie in [0, {self.v}); got {x.min()} .. {x.max()}")
        if x.strides[0] == 0 and s_count > 1:      # real data shared by every chain: count once
            keys, counts = _count(self._contexts(x[0]) * self.v + x[0], top)
            offsets = np.arange(s_count, dtype=np.int64)[:, None] * top
            keys, counts = (keys[None, :] + offsets).ravel(), np.tile(counts, s_count)
        else:
            chain = np.arange(s_count, dtype=np.int64)[:, None, None] * top
            keys, counts = _count(chain + self._contexts(x) * self.v + x, s_count * top)
        self._set(keys, counts)

    def _set(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Build every order's tables from the distinct top-order keys and their counts."""
        self.keys, self.counts = keys.astype(np.int64), counts.astype(np.int64)
        kn = self.cfg.smoothing == "kneser-ney"
        self.levels: list[_Level | None] = [None] * (self.n + 1)
        k, raw, cont = self.keys, self.counts.astype(np.float64), None
        for m in range(self.n, 0, -1):
            cm = self.base ** (m - 1)
            if m < self.n:                           # drop the leftmost context token of order m+1
                c1 = cm * self.base
                s, rest = np.divmod(k, c1 * self.v)
                ctx, w = np.divmod(rest, self.v)
                k, inv = np.unique((s * cm + ctx % cm) * self.v + w, return_inverse=True)
                raw = np.bincount(inv, weights=raw, minlength=len(k))
                cont = np.bincount(inv, minlength=len(k)).astype(np.float64)
            if not kn or m == self.n:
                cnt = raw
            elif m == 1:
                cnt = cont
            else:                                    # contexts starting at BOS have no left extensions
                lead = (k // self.v) % cm // (cm // self.base)
                cnt = np.where(lead == self.bos, raw, cont)
            self.levels[m] = self._level(k, cnt, kn)

    def _level(self, gkey: np.ndarray, cnt: np.ndarray, kn: bool) -> _Level:
        """Segments and sampling weights of one order."""
        if len(gkey) == 0:
            return _Level.empty()
        ck = gkey // self.v
        start = np.flatnonzero(np.concatenate([[True], ck[1:] != ck[:-1]]))
        end = np.append(start[1:], len(gkey))
        total = np.add.reduceat(cnt, start)
        d = self.cfg.discount
        weights = np.maximum(cnt - d, 0.0) if kn else cnt
        stay = 1 - d * (end - start) / total if kn else total / (total + self.cfg.k * self.v)
        return _Level(gkey, cnt, np.concatenate([[0.0], np.cumsum(weights)]), ck[start], start, end, total,
                      np.clip(stay, 0.0, 1.0))

    # -- scoring ----------------------------------------------------------------------------------
    def token_logprob(self, x) -> np.ndarray:
        """log p(x_t | x_<t) of every token: x (M, T) shared by all chains, or (S, M, T) one set per chain."""
        x = np.asarray(x)
        out = np.empty((self.chains,) + x.shape[-2:])
        step = max(1, CHUNK // max(1, self.chains * x.shape[-1]))
        for i in range(0, x.shape[-2], step):
            chunk = x[..., i:i + step, :]             # shared blocks: their contexts once, not per chain
            out[:, i:i + step] = self._logp(chunk, self._contexts(chunk))
        return out

    def _logp(self, x: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        """token_logprob for one chunk of blocks (m, T) or (S, m, T) and their contexts: (S, m, T)."""
        s = np.arange(self.chains, dtype=np.int64)[:, None, None]
        w = x.astype(np.int64)
        p = np.full((self.chains,) + x.shape[-2:], 1.0 / self.v)
        kn, d, k = self.cfg.smoothing == "kneser-ney", self.cfg.discount, self.cfg.k
        for m in range(1, self.n + 1):
            lv = self.levels[m]
            if len(lv.ckey) == 0:
                continue
            ck = s * self.base ** (m - 1) + ctx % self.base ** (m - 1)
            j, seen = _find(lv.ckey, ck)
            gi, found = _find(lv.gkey, ck * self.v + w)
            cnt = np.where(found, lv.cnt[gi], 0.0)
            total = lv.ctotal[j]
            if kn:
                new = (np.maximum(cnt - d, 0.0) + d * (lv.cend[j] - lv.cstart[j]) * p) / total
            else:
                new = (cnt + k) / (total + k * self.v)
            p = np.where(seen, new, p)
        with np.errstate(divide="ignore"):
            return np.log(p)

    def log_prob(self, x) -> np.ndarray:
        """Exact log-probability of each block: x (M, T) -> (S, M); (S, M, T) -> (S, M)."""
        return self.token_logprob(x).sum(axis=-1)

    def probs(self, chain: np.ndarray, history: np.ndarray) -> np.ndarray:
        """Full next-token distributions (R, V) after R histories (R, n-1) (BOS = V allowed) of the given chains."""
        ctx = np.zeros(len(chain), np.int64)
        for j in range(self.n - 1):
            ctx = ctx * self.base + np.asarray(history, np.int64)[:, j]
        return self._dense(np.asarray(chain, np.int64), ctx)

    def _dense(self, s: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        """Next-token distributions (R, V) for chains s (R,) and top-order context ids ctx (R,)."""
        p = np.full((len(s), self.v), 1.0 / self.v)
        kn, d, k = self.cfg.smoothing == "kneser-ney", self.cfg.discount, self.cfg.k
        for m in range(1, self.n + 1):
            lv = self.levels[m]
            j, seen = _find(lv.ckey, s * self.base ** (m - 1) + ctx % self.base ** (m - 1))
            r = np.flatnonzero(seen)
            if not len(r):
                continue
            jj = j[r]
            lens = lv.cend[jj] - lv.cstart[jj]
            gi = np.repeat(lv.cstart[jj] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
            cnt = np.zeros((len(r), self.v))
            cnt[np.repeat(np.arange(len(r)), lens), lv.gkey[gi] % self.v] = lv.cnt[gi]
            total = lv.ctotal[jj][:, None]
            if kn:
                p[r] = (np.maximum(cnt - d, 0.0) + d * lens[:, None] * p[r]) / total
            else:
                p[r] = (cnt + k) / (total + k * self.v)
        return p

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n blocks per chain (S, n, T) int32: one vectorised draw per position for every block of every chain."""
        s_count, t = self.chains, self.block
        x = np.empty((s_count, n, t), np.int32)
        start = 0
        if self.cfg.mode == "prompted":
            start = self.cfg.prompt
            x[:, :, :start] = self.source.fresh(n, rng)[:, :, :start]
        hist = np.full((s_count, n, self.n - 1 + start), self.bos, np.int64)
        hist[:, :, self.n - 1:] = x[:, :, :start]
        ctx = np.zeros((s_count, n), np.int64)
        for j in range(self.n - 1):                        # the last n-1 tokens before `start`
            ctx = ctx * self.base + hist[:, :, start + j]
        chain = np.repeat(np.arange(s_count, dtype=np.int64), n)
        top = self.base ** (self.n - 1)
        for pos in range(start, t):
            u = rng.random(s_count * n)
            tok = self._draw(chain, ctx.ravel(), u) if self.cfg.temperature == 1.0 else \
                self._draw_tempered(chain, ctx.ravel(), u)
            x[:, :, pos] = tok.reshape(s_count, n)
            if self.n > 1:
                ctx = (ctx * self.base + x[:, :, pos]) % top
        return x

    def _pick(self, lv: _Level, j: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Tokens drawn from the weights of contexts j with uniforms u: inverse CDF on each context's segment."""
        lo, hi = lv.cum[lv.cstart[j]], lv.cum[lv.cend[j]]
        gi = np.searchsorted(lv.cum, lo + u * (hi - lo), side="right") - 1
        return lv.gkey[np.clip(gi, lv.cstart[j], lv.cend[j] - 1)] % self.v

    def _draw(self, chain: np.ndarray, ctx: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One exact draw per row (temperature 1): the smoothed distribution is a mixture over orders, so a
        row takes its token from order m's counts with probability `stay`, else passes on down; one uniform
        per row, rescaled at each decision, drives the whole descent."""
        tok = np.empty(len(ctx), np.int64)
        rows, u = np.arange(len(ctx)), u.copy()
        kn = self.cfg.smoothing == "kneser-ney"
        for m in range(self.n, 0, -1):
            lv = self.levels[m]
            if not len(rows) or not len(lv.ckey):
                continue
            cm = self.base ** (m - 1)
            j, seen = _find(lv.ckey, chain[rows] * cm + ctx[rows] % cm)
            r, jj = rows[seen], j[seen]
            q, us = lv.stay[jj], u[r]
            here = us < q
            tok[r[here]] = self._pick(lv, jj[here], us[here] / q[here])
            away = r[~here]
            if kn:      # pass the rest down to order m-1
                u[away] = (us[~here] - q[~here]) / (1 - q[~here])
                rows = np.concatenate([rows[~seen], away])
            else:       # add-k: the pseudo-count mass is uniform over the vocabulary
                tok[away] = np.minimum(((us[~here] - q[~here]) / (1 - q[~here]) * self.v).astype(np.int64),
                                       self.v - 1)
                rows = rows[~seen]
        tok[rows] = np.minimum((u[rows] * self.v).astype(np.int64), self.v - 1)   # the uniform base
        return tok

    def _draw_tempered(self, chain: np.ndarray, ctx: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One draw per row from p^(1/temperature), renormalised (full rows for the distinct contexts only)."""
        from ..text.zipf import rows_inverse_cdf
        top = self.base ** (self.n - 1)
        uniq, inv = np.unique(chain * top + ctx, return_inverse=True)
        out = np.empty(len(ctx), np.int64)
        step = max(1, CHUNK // self.v)
        for i in range(0, len(uniq), step):
            p = self._dense(uniq[i:i + step] // top, uniq[i:i + step] % top) ** (1.0 / self.cfg.temperature)
            cdf = np.cumsum(p, axis=1)
            cdf /= cdf[:, -1:]
            sel = np.flatnonzero((inv >= i) & (inv < i + step))
            out[sel] = rows_inverse_cdf(cdf, inv[sel] - i, u[sel])
        return out

    # -- parameters and state ---------------------------------------------------------------------
    def params(self) -> dict[str, np.ndarray]:
        """Distinct n-grams and contexts of the top order, and distinct tokens seen, per chain."""
        top, lv1 = self.levels[self.n], self.levels[1]
        per = self.base ** (self.n - 1)
        return {"ngrams": np.bincount(top.gkey // (per * self.v), minlength=self.chains).astype(float),
                "contexts": np.bincount(top.ckey // per, minlength=self.chains).astype(float),
                "vocab_seen": np.bincount(lv1.gkey // self.v, minlength=self.chains).astype(float)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The distinct top-order n-gram keys and counts (everything else is derived), and the vocabulary's hash."""
        return {"keys": self.keys, "counts": self.counts, "vocab_hash": np.array(self.vocab_hash),
                "vocab_size": np.array(self.v)}

    def load_state_dict(self, state) -> None:
        """Restore from state_dict(); refuses counts made with another tokenizer."""
        from ..text.tokenize import check_vocab_hash
        check_vocab_hash(state.get("vocab_hash"), self.source)
        self._set(np.asarray(state["keys"]), np.asarray(state["counts"]))
