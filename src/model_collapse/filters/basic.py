"""The pass-through filter and the random control (keep each sample with probability p)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..kinds import Needs
from ..schema import Component


class NoFilterConfig(Component):
    """Reuse every sample."""

    kind: Literal["none"] = "none"

    def build(self, source):
        """None: the loop then skips the filter stage altogether."""
        return None


class RandomFilterConfig(Component):
    """Keep each sample independently with probability p: the control for any selective filter
    (Feng et al. 2024: selection helps only when it is better than chance)."""

    kind: Literal["random"] = "random"
    needs: ClassVar[Needs] = Needs(model=("items",))   # it keeps a subset of items: summaries cannot be filtered
    p: float = Field(0.5, gt=0, le=1)
    max_rounds: int = Field(10, ge=1)   # draws before giving up with a clear error

    def build(self, source):
        """The filter object for a run."""
        return RandomFilter(self)


class RandomFilter:
    """Bernoulli(p) keep mask, independent of the samples."""

    def __init__(self, cfg: RandomFilterConfig):
        self.cfg = cfg

    def __call__(self, samples, model, rng: np.random.Generator) -> np.ndarray:
        """Keep mask (S, n)."""
        return rng.random(np.shape(samples)[:2]) < self.cfg.p
