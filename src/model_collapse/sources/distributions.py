"""Sources with a known true distribution: Gaussian, Gaussian mixture, categorical.

The truth is held as a family object (one chain per replicate, all equal), so
metrics compare fitted and true distributions through the same methods.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

import numpy as np
from pydantic import Field

from ..families.categorical import CategoricalFamily
from ..families.gaussian import GaussianFamily
from ..kinds import SourceDecl
from ..schema import Component


def _pd_error(cov: np.ndarray, path: str) -> list[tuple[str, str]]:
    """An error if cov is not a symmetric positive-definite matrix."""
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        return [(path, f"must be a square matrix, got shape {cov.shape}")]
    if not np.allclose(cov, cov.T) or np.linalg.eigvalsh(cov).min() <= 0:
        return [(path, "must be symmetric positive definite (all eigenvalues > 0)")]
    return []


def weights_errors(weights) -> list[tuple[str, str]]:
    """An error unless the mixture weights are positive and sum to 1."""
    w = np.asarray(weights, float)
    if (w <= 0).any() or abs(w.sum() - 1) > 1e-6:
        return [("source.weights", f"must be positive and sum to 1 (sum is {w.sum():g})")]
    return []


class MixtureTruth:
    """`build` and `truth` of a source config whose truth is the Gaussian mixture its `arrays()` gives."""

    def build(self, chains: int) -> "DistributionSource":
        """The source object for a run."""
        return DistributionSource(self, chains)

    def truth(self, chains: int):
        """The true mixture as a family object with `chains` identical chains."""
        from ..families.gmm import GMMFamily
        return GMMFamily.from_params(*self.arrays(), chains)


class GaussianSourceConfig(Component):
    """Truth N(mean, cov); give std (per axis, diagonal) or cov (full)."""

    kind: Literal["gaussian"] = Field("gaussian", description=(
        "the source: gaussian, a known Gaussian truth N(mean, cov)"))
    mean: list[float] = Field([0.0], description="the true mean, one value per dimension")
    std: Optional[list[float]] = Field(None, description=(
        "the true standard deviation per axis (a diagonal covariance); give std or cov"))
    cov: Optional[list[list[float]]] = Field(None, description=(
        "the full true covariance matrix (d x d, positive definite); give std or cov"))

    def declare(self) -> SourceDecl:
        """Vectors of len(mean) dimensions from a known Gaussian truth."""
        return SourceDecl(self.kind, "vector", frozenset({"truth"}), dim=len(self.mean), truth="gaussian")

    def build(self, chains: int) -> "DistributionSource":
        """The source object for a run."""
        return DistributionSource(self, chains)

    def truth(self, chains: int) -> GaussianFamily:
        """The true distribution as a family object with `chains` identical chains."""
        return GaussianFamily.from_params(self.mean, self.covariance(), chains)

    def covariance(self) -> np.ndarray:
        """The (d, d) true covariance."""
        if self.cov is not None:
            return np.asarray(self.cov, float)
        std = np.asarray(self.std if self.std is not None else [1.0] * len(self.mean), float)
        return np.diag(std ** 2)

    def check(self, exp) -> list[tuple[str, str]]:
        """std/cov must match mean's dimension; cov must be positive definite."""
        d = len(self.mean)
        if self.std is not None and self.cov is not None:
            return [("source", "give std or cov, not both")]
        if self.std is not None:
            if len(self.std) != d:
                return [("source.std", f"needs {d} entries like source.mean")]
            if min(self.std) <= 0:
                return [("source.std", "must be > 0")]
        if self.cov is not None:
            cov = np.asarray(self.cov, float)
            if cov.shape != (d, d):
                return [("source.cov", f"must be {d}x{d} to match source.mean")]
            return _pd_error(cov, "source.cov")
        return []


class GMMSourceConfig(MixtureTruth, Component):
    """Truth: a Gaussian mixture; means (K,) or (K, d), stds (K,) / (K, d) or covs (K, d, d)."""

    kind: Literal["gmm"] = Field("gmm", description="the source: gmm, a known Gaussian-mixture truth")
    weights: list[float] = Field([0.5, 0.5], description="the true component weights (summing to 1)")
    means: Union[list[float], list[list[float]]] = Field([-2.0, 2.0], description=(
        "component means: (K,) in 1-D or (K, d)"))
    stds: Optional[Union[list[float], list[list[float]]]] = Field(None, description=(
        "component standard deviations: (K,) or (K, d) per axis; give stds or covs"))
    covs: Optional[list[list[list[float]]]] = Field(None, description=(
        "component covariance matrices (K, d, d); give stds or covs"))

    def declare(self) -> SourceDecl:
        """Vectors from a known Gaussian-mixture truth."""
        m = self.means
        dim = len(m[0]) if m and isinstance(m[0], list) else 1
        return SourceDecl(self.kind, "vector", frozenset({"truth"}), dim=dim, truth="gmm")

    def arrays(self):
        """weights (K,), means (K, d), covs (K, d, d)."""
        w = np.asarray(self.weights, float)
        m = np.asarray(self.means, float)
        m = m[:, None] if m.ndim == 1 else m
        if self.covs is not None:
            c = np.asarray(self.covs, float)
        else:
            s = np.ones_like(m) if self.stds is None else np.asarray(self.stds, float)
            s = s[:, None] if s.ndim == 1 else s
            c = np.stack([np.diag(v ** 2) for v in s])
        return w, m, c

    def check(self, exp) -> list[tuple[str, str]]:
        """Shapes agree, weights are a distribution, covariances positive definite."""
        errs = weights_errors(self.weights)
        try:
            w, m, c = self.arrays()
        except ValueError as e:
            return errs + [("source", f"means/stds/covs have inconsistent shapes: {e}")]
        if len(m) != len(w) or len(c) != len(w) or c.shape[1:] != (m.shape[1],) * 2:
            return errs + [("source", "weights, means and stds/covs need one entry per component, same dimension")]
        for k, ck in enumerate(c):
            errs += _pd_error(ck, f"source.covs.{k}" if self.covs else f"source.stds.{k}")
        return errs


class CategoricalSourceConfig(Component):
    """Truth: K categories, uniform or Zipfian p_k proportional to k^-exponent."""

    kind: Literal["categorical"] = Field("categorical", description=(
        "the source: categorical, a known truth over K categories (uniform or Zipfian)"))
    k: int = Field(10, description="number of categories")
    dist: Literal["uniform", "zipf"] = Field("uniform", description=(
        "the true probabilities: uniform, or Zipf (p_i proportional to i^-exponent)"))
    exponent: float = Field(1.0, description="the Zipf exponent s (dist: zipf)")

    def declare(self) -> SourceDecl:
        """Category indices from a known categorical truth."""
        return SourceDecl(self.kind, "category", frozenset({"truth"}), truth="categorical")

    def build(self, chains: int) -> "DistributionSource":
        """The source object for a run."""
        return DistributionSource(self, chains)

    def truth(self, chains: int) -> CategoricalFamily:
        """The true distribution as a family object with `chains` identical chains."""
        return CategoricalFamily.from_params(self.probs(), chains)

    def probs(self) -> np.ndarray:
        """The (K,) true probabilities."""
        if self.dist == "uniform":
            return np.full(self.k, 1.0 / self.k)
        p = np.arange(1, self.k + 1, dtype=float) ** -self.exponent
        return p / p.sum()

    def check(self, exp) -> list[tuple[str, str]]:
        """K >= 2."""
        return [] if self.k >= 2 else [("source.k", "needs at least 2 categories")]


class DistributionSource:
    """A source that samples from a known truth (a family object)."""

    def __init__(self, cfg, chains: int):
        self.cfg, self.chains = cfg, chains
        decl = cfg.declare()
        self.data_kind, self.dim = decl.data_kind, decl.dim
        self.k = getattr(cfg, "k", None)
        self.truth = cfg.truth(chains)
        self.one_truth = cfg.truth(1)   # a one-chain copy: the shared reference set, and scores of S chains' points in one call

    def real(self, n: int, rng: np.random.Generator):
        """Generation 0's training set: n true draws per chain."""
        return self.truth.sample(n, rng)

    def fresh(self, n: int, rng: np.random.Generator):
        """n new true draws per chain (the 'true' share of mixed regimes)."""
        return self.truth.sample(n, rng)

    def reference(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Held-out true data shared by all chains, for metrics only: (M, ...)."""
        return self.one_truth.sample(n, rng)[0]
