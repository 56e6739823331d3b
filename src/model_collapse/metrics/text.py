"""Metrics for text: perplexity, perplexity under the generation-0 model and the truth, diversity, tails.

Samples follow the project's text layout: (S, n, T) token ids, S chains, n
blocks of T tokens. Every metric returns columns of shape (S,). Where the
source has a known truth (zipf-markov), a metric also records the truth's own
value of its column once, in the table RUN/truth_values.csv (column, value),
so the figures can draw it (plots/text.py).
"""

from __future__ import annotations

import copy

import numpy as np

from .distribution import Context

HIST_TABLE = "ppl_hist"
TRUTH_TABLE = "truth_values"
SAMPLES_TABLE = "text_samples"


def _record_truth(ctx: Context, values: dict[str, float]) -> None:
    """Write the truth's value of some columns once (at generation 0), when the source has a truth."""
    if ctx.generation == 0 and ctx.store is not None:
        ctx.store.add_table(TRUTH_TABLE, [{"column": k, "value": float(v)} for k, v in values.items()])


def _has_truth(ctx: Context) -> bool:
    return getattr(ctx.source, "truth", None) is not None and hasattr(ctx.source.truth, "entropy_rate")


def _characters(tokenizer, blocks: np.ndarray) -> int:
    """Characters of the text of token blocks (M, T), each block decoded on its own."""
    return sum(len(tokenizer.decode(b)) for b in np.asarray(blocks))


def perplexity(ctx: Context) -> dict[str, np.ndarray]:
    """Cross-entropy test_ce (nats per token) and perplexity test_ppl of held-out real blocks under each chain,
    test_bpc, the same in bits per character of their text (so models with different tokenizers compare), and
    test_zero, the share of held-out tokens given probability 0 (then test_ce is infinite: add-k, k = 0)."""
    lp = ctx.model.token_logprob(ctx.reference)
    ce = -lp.mean(axis=(1, 2))
    ref = np.asarray(ctx.reference)
    chars = (np.array([_characters(ctx.source.tokenizer, r) for r in ref]) if ref.ndim == 3   # per-chain sets
             else _characters(ctx.source.tokenizer, ref))
    bpc = -lp.sum(axis=(1, 2)) / np.log(2) / np.maximum(chars, 1)
    if _has_truth(ctx):
        t = ctx.reference.shape[-1]
        _record_truth(ctx, {"test_ce": ctx.source.truth.block_entropy(t) / t,
                            "test_ppl": np.exp(ctx.source.truth.block_entropy(t) / t)})
    with np.errstate(over="ignore"):
        return {"test_ce": ce, "test_ppl": np.exp(ce), "test_bpc": bpc, "test_zero": np.isneginf(lp).mean(axis=(1, 2))}


def truth_ppl(ctx: Context) -> dict[str, np.ndarray]:
    """Cross-entropy truth_ce and perplexity truth_ppl of the samples under the true language (exact)."""
    truth = ctx.source.truth
    ce = -truth.token_logprob(ctx.samples).mean(axis=(1, 2))
    t = ctx.samples.shape[-1]
    _record_truth(ctx, {"truth_ce": truth.block_entropy(t) / t, "truth_ppl": np.exp(truth.block_entropy(t) / t)})
    return {"truth_ce": ce, "truth_ppl": np.exp(ce)}


def _seq_ppl(token_logprob: np.ndarray) -> np.ndarray:
    """Per-block perplexity exp(-mean log p) of (S, n, T) token scores: (S, n)."""
    with np.errstate(over="ignore"):
        return np.exp(-token_logprob.mean(axis=-1))


class PplGen0:
    """Per-sequence perplexity of each generation's samples under the generation-0 model (Shumailov et al. 2024).

    The generation-0 model (fitted on real text) scores every block each later generation writes:
    as the models forget the tails, their text becomes ever more likely under the first model and the
    histogram of per-block perplexities narrows and moves left. Columns: ppl0_median, ppl0_mean (over
    the blocks the first model can write at all) and ppl0_impossible (the share it gives probability 0:
    maximum-likelihood models that back off to shorter contexts can write n-grams the first model never
    saw). The histogram of the finite values (fixed log-spaced bins from 1 to `max_ppl`, default twice
    the vocabulary size; larger values go to the last bin) is the table RUN/ppl_hist.csv: generation,
    chain, bin, lo, hi, count.
    """

    PREFIX = "gen0/"

    def __init__(self, bins: int = 100, max_ppl: float | None = None):
        self.bins, self.max_ppl = bins, max_ppl
        self.state0: dict[str, np.ndarray] | None = None
        self._model0 = None

    def __call__(self, ctx: Context) -> dict[str, np.ndarray]:
        """Columns ppl0_median, ppl0_mean, ppl0_impossible (S,); NaN if generation 0 was never seen."""
        s_count = ctx.samples.shape[0]
        if self.state0 is None:
            if ctx.generation != 0:
                return {k: np.full(s_count, np.nan) for k in ("ppl0_median", "ppl0_mean", "ppl0_impossible")}
            self.state0 = {k: np.array(v, copy=True) for k, v in ctx.model.state_dict().items()}
        model0 = self._model_like(ctx.model, ctx.source)
        ppl = _seq_ppl(model0.token_logprob(ctx.samples))                      # (S, n)
        v = len(ctx.source.vocab)
        edges = np.geomspace(1.0, self.max_ppl or 2.0 * v, self.bins + 1)
        finite = np.isfinite(ppl)
        idx = np.clip(np.searchsorted(edges, ppl, side="right") - 1, 0, self.bins - 1)
        counts = np.stack([np.bincount(i[f], minlength=self.bins) for i, f in zip(idx, finite)])   # (S, bins)
        if ctx.store is not None:
            ctx.store.add_table(HIST_TABLE, [
                {"generation": ctx.generation, "chain": c, "bin": b, "lo": float(edges[b]),
                 "hi": float(edges[b + 1]), "count": int(counts[c, b])}
                for c in range(s_count) for b in range(self.bins)])
        with np.errstate(invalid="ignore"):
            mean = np.where(finite, ppl, 0.0).sum(axis=1) / finite.sum(axis=1)
        return {"ppl0_median": np.median(ppl, axis=1), "ppl0_mean": mean,
                "ppl0_impossible": 1 - finite.mean(axis=1)}

    def _model_like(self, model, source):
        """A copy of the family holding the generation-0 state (made once)."""
        if self._model0 is None:
            m0 = copy.deepcopy(model, {id(source): source})
            m0.load_state_dict(self.state0)
            self._model0 = m0
        return self._model0

    def state_dict(self) -> dict[str, np.ndarray]:
        """The generation-0 family state under the prefix gen0/ (empty before generation 0)."""
        return {} if self.state0 is None else {self.PREFIX + k: v for k, v in self.state0.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict()."""
        got = {k[len(self.PREFIX):]: np.asarray(v) for k, v in state.items() if k.startswith(self.PREFIX)}
        self.state0, self._model0 = (got or None), None


def _ngram_keys(x: np.ndarray, n: int, v: int) -> np.ndarray:
    """One key per n-gram of blocks x (S, M, T): (S, M, T - n + 1), equal exactly when the n-grams are; int64
    codes where v^n fits (any vocabulary for n <= 3 up to 2 M tokens), else rows of n ids viewed as bytes."""
    t = x.shape[-1]
    if float(v) ** n < 2 ** 62:
        key = np.zeros(x[:, :, : t - n + 1].shape, np.int64)
        for j in range(n):
            key = key * v + x[:, :, j:t - n + 1 + j]
        return key
    grams = np.ascontiguousarray(np.stack([x[:, :, j:t - n + 1 + j] for j in range(n)], -1), np.int64)
    return grams.view(np.dtype((np.void, 8 * n)))[..., 0]


def _distinct(x: np.ndarray, n: int, v: int) -> np.ndarray:
    """Distinct n-grams within blocks / all n-grams, per chain (Li et al. 2016, distinct-n): (S,)."""
    s_count, _, t = x.shape
    if t < n:
        return np.full(s_count, np.nan)
    key = _ngram_keys(x, n, v)
    return np.array([len(np.unique(k)) for k in key]) / key[0].size


def _repetition(x: np.ndarray, v: int, n: int = 4) -> np.ndarray:
    """Share of each block's n-grams that repeat an earlier one in the same block, pooled per chain: (S,)."""
    s_count, m, t = x.shape
    if t < n + 1:
        return np.zeros(s_count)
    key = _ngram_keys(x, n, v)
    key.sort(axis=2)
    return (key[:, :, 1:] == key[:, :, :-1]).sum(axis=(1, 2)) / key[0].size


def diversity(ctx: Context) -> dict[str, np.ndarray]:
    """distinct_1/2/3, repetition (share of repeated 4-grams within a block) and unigram_entropy (nats)."""
    x = np.asarray(ctx.samples, np.int64)
    v = len(ctx.source.vocab)
    out = {f"distinct_{n}": _distinct(x, n, v) for n in (1, 2, 3)}
    out["repetition"] = _repetition(x, v)
    s_count = x.shape[0]
    counts = np.bincount((np.arange(s_count)[:, None, None] * v + x).ravel(),
                         minlength=s_count * v).reshape(s_count, v).astype(float)
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["unigram_entropy"] = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    if _has_truth(ctx):
        pi = ctx.source.truth.marginal
        _record_truth(ctx, {"unigram_entropy": float(-(pi * np.log(pi)).sum())})
    return out


def _real_ranks(source) -> np.ndarray:
    """Rank of each token in the real training frequency table (0 = most frequent; ties by id): (V,)."""
    order = np.argsort(-source.train_counts, kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(len(order))
    return ranks


def token_tail(ctx: Context, r: int | None = None) -> dict[str, np.ndarray]:
    """Share of sampled tokens whose rank in the real training frequency table is r or beyond (default r = V/2)."""
    v = len(ctx.source.vocab)
    r = v // 2 if r is None else r
    tail = _real_ranks(ctx.source) >= r                                      # (V,) bool
    share = tail[np.asarray(ctx.samples)].mean(axis=(1, 2))
    if _has_truth(ctx):
        _record_truth(ctx, {"token_tail": float(ctx.source.truth.marginal[tail].sum())})
    return {"token_tail": share}


def vocab_survival(ctx: Context) -> dict[str, np.ndarray]:
    """Share of the real vocabulary (tokens present in the real training split) still present in the samples."""
    real = ctx.source.train_counts > 0
    x = np.asarray(ctx.samples, np.int64)
    s_count, v = x.shape[0], len(real)
    seen = np.bincount((np.arange(s_count)[:, None, None] * v + x).ravel(), minlength=s_count * v) > 0
    seen = seen.reshape(s_count, v)                                           # (S, V)
    return {"vocab_survival": (seen & real).sum(axis=1) / real.sum()}


def text_samples(ctx: Context, n: int = 3, chains: int = 1) -> dict[str, np.ndarray]:
    """Keep the first n decoded sample blocks of the first `chains` chains in RUN/text_samples.csv (no columns)."""
    if ctx.store is not None:
        x = np.asarray(ctx.samples)
        decode = ctx.source.tokenizer.decode
        rows = [{"generation": ctx.generation, "chain": c, "index": i, "text": _csv_field(decode(x[c, i]))}
                for c in range(min(chains, x.shape[0])) for i in range(min(n, x.shape[1]))]
        ctx.store.add_table(SAMPLES_TABLE, rows)
    return {}


def _csv_field(text: str) -> str:
    """A CSV field holding any text (quoted, quotes doubled; newlines kept inside the quotes)."""
    return '"' + text.replace('"', '""') + '"'
