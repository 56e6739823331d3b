"""Categorical distribution over K outcomes, refitted by multinomial MLE.

Under replace, a category that draws zero samples is gone for good: the
expected Gini diversity 1 - sum p^2 decays as (1 - 1/K)(1 - 1/N)^t (a
Wright-Fisher drift; Shumailov et al. 2024 discuss the discrete case), and
the number of surviving categories falls until one is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..schema import ClosedFormFit


class CategoricalConfig(ClosedFormFit):
    """Config of the ``categorical`` family."""

    kind: Literal["categorical"] = Field("categorical", description=(
        "the family: categorical, K probabilities refitted by multinomial MLE"))
    smoothing: float = Field(0.0, description=(
        "Additive pseudo-count per category; 0 is the MLE (lost categories stay lost)."))
    summary: bool = Field(False, description=(
        "Draw category counts (exact multinomial) instead of N individual items."))

    data_kinds: ClassVar[frozenset] = frozenset({"category"})

    def theory(self, exp, column: str):
        """E[gini] under replace without smoothing: gini_0 (1 - 1/N)^(g+1) (a multinomial refit)."""
        if (exp.regime.kind != "replace" or exp.source.declare().truth != "categorical" or self.smoothing != 0
                or column != "gini"):
            return None
        n, gini = exp.regime.n, 1 - (exp.source.probs() ** 2).sum()
        return lambda g: gini * (1 - 1 / n) ** (np.asarray(g) + 1)

    def capabilities(self, source) -> frozenset:
        """Exact probabilities; items unless it draws counts."""
        return frozenset({"log_prob", "probs"} | (set() if self.summary else {"items"}))

    def build(self, source, chains: int) -> "CategoricalFamily":
        """The family for a built source."""
        return CategoricalFamily(self, source.k, chains)


@dataclass
class CategoricalCounts:
    """Exact summary of N items per chain: counts (S, K)."""

    n: int
    counts: np.ndarray

    @classmethod
    def from_array(cls, x: np.ndarray, k: int | None = None) -> "CategoricalCounts":
        """Count items (S, N) with values in [0, K)."""
        s, n = x.shape
        k = k if k is not None else int(x.max()) + 1
        flat = (x + np.arange(s)[:, None] * k).ravel()
        return cls(n, np.bincount(flat, minlength=s * k).reshape(s, k))

    def merge(self, other: "CategoricalCounts") -> "CategoricalCounts":
        """Counts of the pooled items."""
        k = max(self.counts.shape[1], other.counts.shape[1])
        a = np.pad(self.counts, ((0, 0), (0, k - self.counts.shape[1])))
        b = np.pad(other.counts, ((0, 0), (0, k - other.counts.shape[1])))
        return CategoricalCounts(self.n + other.n, a + b)


class CategoricalFamily:
    """S independent categorical fits over K outcomes."""

    def __init__(self, cfg: CategoricalConfig, k: int, chains: int):
        self.cfg, self.k, self.chains = cfg, k, chains
        self.p = np.full((chains, k), 1.0 / k)

    @classmethod
    def from_params(cls, p, chains: int, cfg: CategoricalConfig | None = None) -> "CategoricalFamily":
        """A family whose every chain holds the probabilities p (K,)."""
        p = np.asarray(p, float)
        fam = cls(cfg or CategoricalConfig(), len(p), chains)
        fam.p[:] = p / p.sum()
        return fam

    def fit(self, data, rng=None) -> None:
        """Frequencies (plus optional pseudo-counts) on each chain."""
        if not isinstance(data, CategoricalCounts):
            data = CategoricalCounts.from_array(np.asarray(data), self.k)
        counts = data.counts[:, : self.k] + self.cfg.smoothing
        self.p = counts / counts.sum(axis=1, keepdims=True)

    def sample(self, n: int, rng: np.random.Generator):
        """n category indices per chain (S, n), or exact counts when cfg.summary."""
        if self.cfg.summary:
            return CategoricalCounts(n, rng.multinomial(n, self.p))
        # Inverse CDF for all chains at once: offset chain c's CDF by c so one
        # searchsorted over the flattened table serves every chain.
        s = self.chains
        cdf = np.cumsum(self.p, axis=1)
        cdf[:, -1] = 1.0
        offsets = np.arange(s)[:, None]
        u = rng.random((s, n)) + offsets
        flat = np.searchsorted((cdf + offsets).ravel(), u.ravel(), side="right")
        return np.minimum(flat.reshape(s, n) - offsets * self.k, self.k - 1)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Log mass of shared items x (M,) under each chain: (S, M); -inf for lost categories."""
        with np.errstate(divide="ignore"):
            return np.log(self.p[:, np.asarray(x, int).ravel()])

    def params(self) -> dict[str, np.ndarray]:
        """Entropy (nats), Gini diversity 1 - sum p^2, surviving categories, top share."""
        p = self.p
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
        return {"entropy": ent, "gini": 1 - (p ** 2).sum(axis=1),
                "surviving": (p > 0).sum(axis=1).astype(float), "top_share": p.max(axis=1)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The probability table."""
        return {"p": self.p}

    def load_state_dict(self, state) -> None:
        """Restore from state_dict()."""
        self.p = np.array(state["p"])
