"""Randomness: one SeedSequence per run, one stream per (role, generation).

Streams are derived, never carried: generation g's fit draws the same numbers
whether the run went straight through or was resumed at g, so a resumed run
reproduces an uninterrupted one exactly. No integer ``random_state`` is ever
handed to a library's sampler (scikit-learn rebuilds the same RNG from an int
on every call, which would freeze samples across generations).
"""

from __future__ import annotations

import numpy as np

# Fixed role ids: the spawn key must not depend on dict ordering or names.
ROLES = {"real": 0, "reference": 1, "regime": 2, "fit": 3, "sample": 4,
         "filter": 5, "metric": 6, "init": 7, "grid": 8, "classifier": 9}


class Seeds:
    """Derives independent generators for (role, generation) from one seed."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def sequence(self, role: str, generation: int = 0) -> np.random.SeedSequence:
        """The SeedSequence for one role at one generation."""
        return np.random.SeedSequence(self.seed, spawn_key=(ROLES[role], int(generation)))

    def rng(self, role: str, generation: int = 0) -> np.random.Generator:
        """A fresh numpy Generator for one role at one generation."""
        return np.random.Generator(np.random.PCG64(self.sequence(role, generation)))

    def torch_seed(self, role: str, generation: int = 0) -> int:
        """A 63-bit integer seed for a torch.Generator, derived the same way."""
        return int(self.sequence(role, generation).generate_state(2, np.uint64)[0] >> np.uint64(1))

    def lazy(self, role: str, generation: int = 0) -> "LazyRng":
        """A generator for (role, generation) built on first use (most generations of a cheap
        family never touch their regime or metric stream, and building one costs ~10 us)."""
        return LazyRng(self, role, generation)


class LazyRng:
    """Stands in for the numpy Generator of one (role, generation) until a method is called."""

    __slots__ = ("_args", "_rng")

    def __init__(self, seeds: Seeds, role: str, generation: int):
        self._args, self._rng = (seeds, role, generation), None

    def __getattr__(self, name):
        if self._rng is None:
            seeds, role, generation = self._args
            self._rng = seeds.rng(role, generation)
        return getattr(self._rng, name)
