"""A two-component Gaussian-mixture truth drawn from a seed, with a biased selection target drawn with it.

Qiao et al. (2025, "When sample selection bias precipitates model collapse") draw every replicate's truth
at random: a centre mu ~ N(0, I_d), a covariance Sigma = A A^T + ridge I with A's entries N(0, 1), and two
components at mu +- shift u along a random unit direction u, with covariances c_1 Sigma and c_2 Sigma
(0.7 and 0.9). The verifier's biased reference is drawn from the same seed: its centre is mu with a share
of the coordinates moved by bias_scale N(0, 1), its covariance bias_cov Sigma. The draws are made in the
order of their script (mu, A, the biased coordinates and their moves, then one direction per mixture it
builds: its `gmm` takes the first, its `unequal_gmm` the second, `direction` here), so a truth_seed of
theirs gives their truth. The `select` filter takes the target with `target: source`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..kinds import SourceDecl
from ..schema import Component
from .distributions import MixtureTruth, weights_errors


class RandomGMMSourceConfig(MixtureTruth, Component):
    """Truth: Qiao et al.'s random two-component mixture of a seed, with the biased target of the same seed."""

    kind: Literal["random-gmm"] = Field("random-gmm", description=(
        "the source: random-gmm, a two-component Gaussian-mixture truth drawn from truth_seed as Qiao et al. "
        "(2025) draw theirs, with a biased selection target drawn with it"))
    dim: int = Field(10, ge=1, description="the dimension d")
    weights: list[float] = Field([0.5, 0.5], min_length=2, max_length=2, description=(
        "the two components' weights (Qiao et al.: 0.5 / 0.5 for gmm, 0.8 / 0.2 for unequal_gmm)"))
    truth_seed: int = Field(42, ge=0, description=(
        "the seed the truth and target are drawn from (Qiao et al.'s replicates: 42, 123, 456, 789, 2024)"))
    direction: int = Field(0, ge=0, description=(
        "which successive random direction the means lie along: Qiao et al.'s script draws one per mixture, "
        "0 for its gmm and 1 for its unequal_gmm"))
    shift: float = Field(0.9, ge=0, description="each mean's distance from the centre mu along the direction")
    cov_scales: list[float] = Field([0.7, 0.9], min_length=2, max_length=2, description=(
        "the components' covariances as multiples of Sigma"))
    ridge: float = Field(0.1, gt=0, description="Sigma = A A^T + ridge I")
    bias_share: float = Field(0.5, ge=0, le=1, description=(
        "the share of coordinates in which the target's centre is moved (at least one)"))
    bias_scale: float = Field(3.0, ge=0, description="the moves' scale: bias_scale N(0, 1) per moved coordinate")
    bias_cov: float = Field(0.3, gt=0, description="the target's covariance as a multiple of Sigma")

    def declare(self) -> SourceDecl:
        """Vectors from a known Gaussian-mixture truth that offers a selection target."""
        return SourceDecl(self.kind, "vector", frozenset({"truth", "target"}), dim=self.dim, truth="gmm")

    def draws(self) -> dict[str, np.ndarray]:
        """mu, Sigma, the target's centre and covariance, and the direction, in the script's order."""
        rng = np.random.default_rng(self.truth_seed)
        d = self.dim
        mu = rng.normal(size=d)
        a = rng.normal(size=(d, d))
        sigma = a @ a.T + self.ridge * np.eye(d)
        target = mu.copy()
        moved = rng.choice(d, size=max(1, int(d * self.bias_share)), replace=False)
        target[moved] += rng.normal(size=len(moved)) * self.bias_scale
        for _ in range(self.direction + 1):
            u = rng.normal(size=d)
            u = u / (np.linalg.norm(u) + 1e-12)
        return {"mu": mu, "sigma": sigma, "target_mean": target, "target_cov": self.bias_cov * sigma,
                "direction": u}

    def arrays(self):
        """weights (2,), means (2, d), covs (2, d, d)."""
        g = self.draws()
        means = np.stack([g["mu"] + self.shift * g["direction"], g["mu"] - self.shift * g["direction"]])
        covs = np.stack([s * g["sigma"] for s in self.cov_scales])
        return np.asarray(self.weights, float), means, covs

    def target(self) -> tuple[np.ndarray, np.ndarray]:
        """The biased selection target: its centre (d,) and covariance (d, d)."""
        g = self.draws()
        return g["target_mean"], g["target_cov"]

    def check(self, exp) -> list[tuple[str, str]]:
        """Weights are a distribution; covariance multiples are positive."""
        errs = weights_errors(self.weights)
        if min(self.cov_scales) <= 0:
            errs.append(("source.cov_scales", "must be > 0"))
        return errs
