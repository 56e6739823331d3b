"""Labelled pairs from a known linear model: x ~ N(0, I_d), y = x.w* + N(0, sigma^2).

The regression setting of Dohmatob et al. 2024 and Gerstgrasser et al. 2024
(Sec. 2). Data are pairs (S, N, d + 1), the label in the last column; the
truth is a `linreg` family object whose every chain holds w* and sigma.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field

from ..families.linreg import LinRegFamily
from ..kinds import SourceDecl
from ..schema import Component
from .distributions import DistributionSource


class LinRegSourceConfig(Component):
    """Truth: y = x.w* + noise with x ~ N(0, I_dim); w* defaults to 1/sqrt(dim) per entry (||w*|| = 1)."""

    kind: Literal["linreg"] = Field("linreg", description=(
        "the source: linreg, a known linear truth y = x.w* + noise (Dohmatob et al. 2024, Gerstgrasser et al. 2024)"))
    dim: int = Field(10, ge=1, description="d, the number of features (x ~ N(0, I_d))")
    weights: Optional[list[float]] = Field(None, description=(
        "the true w* (d values); default 1/sqrt(d) per entry, so ||w*|| = 1"))
    noise: float = Field(1.0, gt=0, description="sigma, the sd of the label noise")

    def declare(self) -> SourceDecl:
        """Pairs of dim features and a label, from a known linear-model truth."""
        return SourceDecl(self.kind, "pairs", frozenset({"truth"}), dim=self.dim, truth="linreg")

    def build(self, chains: int) -> DistributionSource:
        """The source object for a run."""
        return DistributionSource(self, chains)

    def true_weights(self) -> np.ndarray:
        """w* (dim,)."""
        if self.weights is not None:
            return np.asarray(self.weights, float)
        return np.full(self.dim, 1.0 / np.sqrt(self.dim))

    def truth(self, chains: int) -> LinRegFamily:
        """The true model as a family object with `chains` identical chains (fresh x per draw)."""
        return LinRegFamily.from_params(self.true_weights(), self.noise, chains)

    def check(self, exp) -> list[tuple[str, str]]:
        """weights match dim; more than dim + 1 rows per generation (else E[test error] is infinite)."""
        errs = []
        if self.weights is not None and len(self.weights) != self.dim:
            errs.append(("source.weights", f"needs {self.dim} entries (source.dim), got {len(self.weights)}"))
        n = getattr(getattr(exp, "regime", None), "n", None)
        if isinstance(n, int) and n <= self.dim + 1:
            errs.append(("regime.n", f"linear regression in {self.dim} dimensions needs more than dim + 1 = "
                         f"{self.dim + 1} rows per generation (regime n = {n}): with fewer the expected "
                         "error sigma^2 d/(T-d-1) is infinite; raise regime.n or lower source.dim"))
        return errs
