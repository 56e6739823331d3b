"""The interfaces a component implements, as typed Protocols: what the loop and the metrics call.

A component's config class declares what it is (kinds.py: data kinds, capabilities, needs) and
builds the object described here. What a capability adds to a family is kinds.CAPABILITY_METHODS
(`decode` -> decode, latent_dim, temperature); the optional hooks below are Protocols the loop
resolves once per run, before the first generation, never per generation. The contract suites
(model_collapse.testing) check built-in components and plugins against these.

Arrays carry a leading chain axis S: a family holds S independent fits and advances them together.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


class Source(Protocol):
    """Where true data comes from (sources/)."""

    def real(self, n: int, rng: np.random.Generator) -> Any:
        """Generation 0's training set: (S, n, ...) (shared by the chains where the data is fixed)."""

    def fresh(self, n: int, rng: np.random.Generator) -> Any:
        """New true draws (S, n, ...) for regimes that mix in fresh data."""

    def reference(self, m: int, rng: np.random.Generator) -> Any:
        """Held-out true data (m, ...), shared by every chain, for metrics."""


class Family(Protocol):
    """A generative model family fitted independently on each chain (families/)."""

    chains: int

    def fit(self, data, rng: np.random.Generator) -> None:
        """Refit every chain on its data (S, N, ...) or a summary; a warm start may use the current state."""

    def sample(self, n: int, rng: np.random.Generator):
        """Draw n items per chain: (S, n, ...), or an exact summary (capability `items` absent)."""

    def params(self) -> dict[str, np.ndarray]:
        """The fitted parameters as columns of shape (S,); the loop refuses to record non-finite ones."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume (arrays only: checkpoints never unpickle)."""

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict()."""


class Regime(Protocol):
    """How generation g's training set is made from samples, real and fresh data (regimes/)."""

    def size(self, g: int) -> int:
        """Training-set size at generation g (the real set's size at g = 0)."""

    def samples_needed(self, g: int) -> int:
        """How many samples to draw from generation g's model."""

    def first(self, real) -> None:
        """Called once with generation 0's training set."""

    def next(self, g: int, samples, real, source, rng) -> Any:
        """Generation g's training set; never modifies its inputs in place."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """What a resume needs (an accumulated pool)."""

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict()."""


class Filter(Protocol):
    """A stage between sampling and reuse (filters/stage.py); its config has `max_rounds`."""

    def __call__(self, samples: np.ndarray, model: Family, rng: np.random.Generator) -> np.ndarray:
        """A (S, n) boolean keep mask for a batch (S, n, ...)."""


class Metric(Protocol):
    """A function (or an instance of a class) of one generation's Context (metrics/)."""

    def __call__(self, ctx) -> dict[str, np.ndarray]:
        """Columns of shape (S,), the same names at every generation."""


@runtime_checkable
class Stateful(Protocol):
    """Optional hook of filters and metrics that keep state across generations: checkpointed, so a
    resumed run continues exactly (a filter under the generation-0 model, latent_std's encoder)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state as arrays."""

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore it."""


@runtime_checkable
class Begins(Protocol):
    """Optional hook of filters with memory across the rounds of one generation (dedupe)."""

    def begin(self) -> None:
        """Called before a generation's first round."""


@runtime_checkable
class Draws(Protocol):
    """Optional hook of filters that keep a set share of a batch: the size of a generation's first round."""

    def first_draw(self, n: int) -> int:
        """Items to draw in the first round when the regime needs n (select: n / share)."""


@runtime_checkable
class Transforms(Protocol):
    """Optional hook of filters that map samples rather than only drop them (self-correction)."""

    def transform(self, samples, model, rng):
        """The corrected samples (same shape), before the keep mask is taken."""


@runtime_checkable
class Reports(Protocol):
    """Optional hook of filters with columns of their own (S,) for the generation just drawn."""

    def columns(self) -> dict:
        """{column: (S,) array} recorded beside accept_rate."""


@runtime_checkable
class Timed(Protocol):
    """Optional hook of families that time their own phases (written to timings.csv)."""

    timings: dict[str, float]


__all__ = ["Begins", "Family", "Filter", "Metric", "Regime", "Source", "Stateful", "Timed"]
