"""Keep samples that are likely: log-density at or above a quantile of log-density.

Curation by likelihood is the simplest form of the quality selection studied by
Alemohammad et al. (2023, "Self-Consuming Generative Models Go MAD", their sampling
bias) and Ferbach et al. (2024, curated self-consuming loops). Two scorers:

- `under: truth`: the source's true density (an oracle quality score);
- `under: gen0`: the model fitted at generation 0, i.e. to real data. The filter
  keeps a copy of the first fitted model it sees (the loop filters generation 0's
  samples first) and hands it to the checkpoint through state_dict(), so a resumed
  run scores under the same model.

Two thresholds (`of`):

- `real` (default): the q-quantile of the log-density of 10,000 held-out real points
  under the same scorer, computed once. This is a fixed quality bar: "at least as
  likely as all but the least likely q share of real data". The acceptance rate then
  says how much of a generation passes it, and moves as the model collapses.
- `batch`: the q-quantile of each chain's own batch (Alemohammad et al.'s truncation),
  which keeps the top 1 - q share of every round whatever the model does.

The quantile is the order statistic at rank floor(q (M - 1)) (no interpolation, so
-inf log-densities of lost categories stay comparable); a sample is kept when its
log-density is >= the threshold.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..kinds import Needs, mismatches
from ..schema import Component

REAL_N = 10_000       # held-out real points that set the `of: real` threshold
REAL_SEED = 20240801  # their draw is fixed: the threshold depends on the source only, not on the run's seed


class LikelihoodFilterConfig(Component):
    """Keep samples whose log-density (under the truth or the generation-0 model) is at least
    the q-quantile of real data's log-density (of: real) or of the chain's batch (of: batch)."""

    kind: Literal["likelihood"] = Field("likelihood", description=(
        "the filter: likelihood, keep samples of high log-density (Alemohammad et al. 2023's sampling bias)"))
    needs: ClassVar[Needs] = Needs(model=("items",))   # the scorer's needs depend on `under`: see check()
    under: Literal["truth", "gen0"] = Field("truth", description=(
        "score samples by their log-density under the truth, or under the generation-0 model (kept from the "
        "first fit)"))
    q: float = Field(0.1, ge=0, lt=1, description=(
        "keep samples at or above the q-quantile of the reference log-densities"))
    of: Literal["real", "batch"] = Field("real", description=(
        "the q-quantile of real data's log-densities (real) or of the chain's own batch (batch)"))
    max_rounds: int = Field(10, ge=1, description="draws before giving up with a clear error")

    def check(self, exp) -> list[tuple[str, str]]:
        """under: truth needs a source with a known density; under: gen0 a model with log_prob."""
        need = Needs(source=("truth",)) if self.under == "truth" else Needs(model=("log_prob",))
        src = exp.source.declare()
        caps = exp.model.capabilities(src)
        return [("filter.under", m) for m in
                mismatches(f"filter likelihood (under: {self.under})", need, src, exp.model.kind, caps)]

    def build(self, source):
        """The filter object for a run."""
        return LikelihoodFilter(self, source)


def score(scorer, x: np.ndarray) -> np.ndarray:
    """Log-density (S, n) of every chain's items x (S, n, ...) under a scorer the same for all chains.

    Families score shared points (M, ...) -> (S', M) (identical rows for a truth), text truths
    (M, T) -> (M,): both are read as one row.
    """
    s, n = x.shape[:2]
    out = np.asarray(scorer.log_prob(x.reshape(s * n, *x.shape[2:])), float)
    return (out[0] if out.ndim == 2 else out).reshape(s, n)


def score_per_chain(model, x: np.ndarray) -> np.ndarray:
    """Log-density (S, n) of chain s's items under chain s's model: one call per chain (O(S^2 n))."""
    return np.stack([np.asarray(model.log_prob(x[s]), float)[s] for s in range(x.shape[0])])


def lower_quantile(a: np.ndarray, q: float, axis=None) -> np.ndarray:
    """The order statistic at rank floor(q (M - 1)) along axis (no interpolation: -inf stays -inf)."""
    return np.quantile(a, q, axis=axis, method="lower")


class LikelihoodFilter:
    """Scores samples, compares with a threshold; keeps the generation-0 model when under: gen0."""

    def __init__(self, cfg: LikelihoodFilterConfig, source):
        self.cfg, self.source = cfg, source
        self.state0: dict[str, np.ndarray] | None = None   # the generation-0 model's state (under: gen0)
        self._model0 = None                                # a family holding state0, made on first use
        self._threshold = None                             # of: real, computed once
        self._truth_scorer = None

    def _truth(self):
        """A one-chain copy of the truth where the source can make one (scores S chains' items in one call)."""
        make = getattr(getattr(self.source, "cfg", None), "truth", None)
        return make(1) if callable(make) else self.source.truth

    def _real(self) -> np.ndarray:
        """The held-out real points (M, ...) that set the threshold."""
        return self.source.reference(REAL_N, np.random.default_rng(REAL_SEED))

    def _scorer_and_threshold(self, model):
        """(function x -> (S, n) log-density, threshold () or (S, 1) or None for of: batch)."""
        if self.cfg.under == "truth":
            truth = self._truth_scorer = self._truth_scorer or self._truth()
            fn = lambda x: score(truth, x)   # noqa: E731
            if self.cfg.of == "real" and self._threshold is None:
                ref = self._real()
                self._threshold = lower_quantile(score(truth, ref[None]), self.cfg.q)
        else:
            if self.state0 is None:   # the first fitted model the filter sees is generation 0's
                self.state0 = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
            if self._model0 is None:
                # Share, not copy, the source a family may hold (real data, reference classifier).
                self._model0 = copy.deepcopy(model, {id(self.source): self.source})
                self._model0.load_state_dict(self.state0)
            m0 = self._model0
            fn = lambda x: score_per_chain(m0, x)   # noqa: E731
            if self.cfg.of == "real" and self._threshold is None:
                lp = np.asarray(m0.log_prob(self._real()), float)          # (S, M): each chain's own model
                self._threshold = lower_quantile(lp, self.cfg.q, axis=1)[:, None]
        return fn, (self._threshold if self.cfg.of == "real" else None)

    def __call__(self, samples, model, rng: np.random.Generator) -> np.ndarray:
        """Keep mask (S, n); deterministic (the rng is not used)."""
        fn, threshold = self._scorer_and_threshold(model)
        lp = fn(np.asarray(samples))
        if threshold is None:
            threshold = lower_quantile(lp, self.cfg.q, axis=1)[:, None]
        return lp >= threshold

    def state_dict(self) -> dict[str, np.ndarray]:
        """The generation-0 model's state under gen0/ (empty for under: truth, or before generation 0)."""
        return {} if self.state0 is None else {"gen0/" + k: v for k, v in self.state0.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict(); the threshold is recomputed from it (deterministically)."""
        got = {k[len("gen0/"):]: np.asarray(v) for k, v in state.items() if k.startswith("gen0/")}
        self.state0, self._model0, self._threshold = (got or None), None, None
