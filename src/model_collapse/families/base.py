"""The protocol every generative family implements.

Arrays carry a leading chain axis S: the family holds S independent fits and
advances them together (DESIGN.md, "Chains").
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Family(Protocol):
    """A generative model family fitted independently on each chain."""

    chains: int

    def fit(self, data, rng: np.random.Generator) -> None:
        """Refit every chain on its data (S, N, ...); a warm start may use the current state."""

    def sample(self, n: int, rng: np.random.Generator):
        """Draw n items per chain: (S, n, ...) or an exact summary."""

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Log density (or mass) of shared points x (M, ...) under each chain: (S, M)."""

    def params(self) -> dict[str, np.ndarray]:
        """Fitted parameters as metric columns, each of shape (S,)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume (arrays only)."""

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict()."""
