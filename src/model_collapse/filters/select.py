"""Selection bias: keep the top share of each batch by closeness to (or density under) a stated target.

Qiao et al. (2025, "When sample selection bias precipitates model collapse") keep, each generation, the n
samples out of n / alpha draws that lie closest, by Mahalanobis distance, to an external and biased target
distribution: the selection a verifier with a small, local reference makes. With `share: alpha` the first
round draws ceil(n / alpha) items (the `Draws` hook) and keeps the floor(alpha M) >= n best of its M, so
the kept set is exactly their top n of n / alpha; the acceptance-rate column records alpha as for any
filter. Scores: `mahalanobis` (to N(mean, cov)), `euclidean` (to the point `mean`) or `log_density`
(under N(mean, cov)); ties keep the earlier draw. The target is stated in the config or, with `target:
source`, the one a `random-gmm` source draws with its truth from the same seed (Qiao et al.'s protocol).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from ..kinds import Needs
from ..schema import Component


class SelectFilterConfig(Component):
    """Keep the top `share` of each chain's batch by distance to a target (closest first) or density under it."""

    kind: Literal["select"] = Field("select", description=(
        "the filter: select, keep the share of samples closest to a stated target (Qiao et al. 2025's "
        "selection bias)"))
    needs: ClassVar[Needs] = Needs(kinds=("vector",), model=("items",))
    by: Literal["mahalanobis", "euclidean", "log_density"] = Field("mahalanobis", description=(
        "the score: Mahalanobis distance to N(mean, cov), Euclidean distance to the point mean, or the "
        "log-density under N(mean, cov) (highest kept)"))
    target: Literal["stated", "source"] = Field("stated", description=(
        "where the target comes from: stated = mean and cov below; source = the source's own biased target "
        "(random-gmm draws one with its truth, as Qiao et al. do)"))
    mean: Optional[list[float]] = Field(None, min_length=1, description=(
        "the target's centre (one value per dimension); None = the origin"))
    cov: Optional[list[list[float]]] = Field(None, description=(
        "the target's covariance (d x d, positive definite); None = the identity"))
    share: float = Field(0.5, gt=0, le=1, description=(
        "alpha: each generation keeps the best n of ceil(n / alpha) draws (and of every later round, the "
        "best alpha share)"))
    max_rounds: int = Field(10, ge=1, description="draws before giving up with a clear error")
    example: ClassVar[dict] = {"share": 0.5}

    def check(self, exp) -> list[tuple[str, str]]:
        """The target's dimension is the data's; its covariance is positive definite."""
        decl = exp.source.declare()
        dim = decl.dim
        errs = []
        if self.target == "source":
            if "target" not in decl.caps:
                errs.append(("filter.target", f"target: source needs a source with a selection target of its own "
                                              f"(random-gmm), not {decl.name}; state mean and cov instead"))
            if self.mean is not None or self.cov is not None:
                errs.append(("filter.target", "target: source takes the source's mean and cov; drop filter.mean "
                                              "and filter.cov, or set target: stated"))
            return errs
        if dim is not None and self.mean is not None and len(self.mean) != dim:
            errs.append(("filter.mean", f"has {len(self.mean)} values but the data has {dim} dimensions"))
        d = len(self.mean) if self.mean is not None else dim
        if self.cov is not None and d is not None:
            c = np.asarray(self.cov, float)
            if c.shape != (d, d):
                errs.append(("filter.cov", f"must be {d} x {d}, got {c.shape}"))
            elif not np.allclose(c, c.T) or np.linalg.eigvalsh(c).min() <= 0:
                errs.append(("filter.cov", "must be symmetric positive definite"))
        return errs

    def build(self, source):
        """The filter object for a run."""
        if self.target == "source":
            mean, cov = source.cfg.target()
        else:
            mean = np.zeros(source.dim) if self.mean is None else np.asarray(self.mean, float)
            cov = np.eye(len(mean)) if self.cov is None else np.asarray(self.cov, float)
        return SelectFilter(self, mean, cov)


class SelectFilter:
    """Scores each batch against the target; keeps the best floor(share M) of every chain's M items."""

    def __init__(self, cfg: SelectFilterConfig, mean: np.ndarray, cov: np.ndarray):
        self.cfg = cfg
        self.mean = np.asarray(mean, float)
        d = len(self.mean)
        chol = np.linalg.cholesky(cov)
        self.chol_inv = np.linalg.inv(chol)
        self.log_norm = -0.5 * (d * math.log(2 * math.pi) + 2 * np.log(np.diag(chol)).sum())

    def first_draw(self, n: int) -> int:
        """ceil(n / share): one round then holds the top n of n / share (Qiao et al.'s protocol)."""
        return int(math.ceil(n / self.cfg.share - 1e-9))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Higher is better: minus the distance, or the log-density; (S, M)."""
        diff = np.asarray(x, float).reshape(x.shape[0], x.shape[1], -1) - self.mean
        if self.cfg.by == "euclidean":
            return -np.sqrt((diff ** 2).sum(-1))
        z2 = ((diff @ self.chol_inv.T) ** 2).sum(-1)
        return -np.sqrt(z2) if self.cfg.by == "mahalanobis" else self.log_norm - 0.5 * z2

    def __call__(self, samples, model, rng: np.random.Generator) -> np.ndarray:
        """Keep mask (S, M): the floor(share M) best-scored items of each chain; deterministic."""
        sc = self.score(np.asarray(samples))
        s, m = sc.shape
        k = max(1, int(math.floor(self.cfg.share * m + 1e-9)))
        order = np.argsort(-sc, axis=1, kind="stable")[:, :k]
        keep = np.zeros((s, m), bool)
        keep[np.arange(s)[:, None], order] = True
        return keep
