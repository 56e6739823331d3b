"""Self-correction (Gillman et al. 2024, "Self-correcting self-consuming loops"): map each generation's
samples toward the data before they are reused, instead of dropping any.

On a truth with known modes (a ring or grid of Gaussians of sd sigma) the correction is exact: a sample
farther than k sigma from its nearest mode m is moved the fraction `gamma` of the way to the nearest
point of that mode's k-sigma ball, x + gamma (m + k sigma (x - m) / |x - m| - x); samples inside a ball
are left alone. gamma = 0 is no correction, gamma = 1 puts every sample inside a ball. Every sample is
kept (the acceptance rate is 1); the share corrected and the mean distance moved are the columns
correct_share and correct_distance.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..kinds import Needs
from ..schema import Component


class CorrectFilterConfig(Component):
    """Move samples outside the k-sd balls of the truth's modes a share gamma of the way into them."""

    kind: Literal["correct"] = Field("correct", description=(
        "the filter: correct, Gillman et al.'s self-correction: samples mapped toward the truth's modes, none "
        "dropped"))
    needs: ClassVar[Needs] = Needs(kinds=("vector",), source=("modes",), model=("items",))
    gamma: float = Field(1.0, ge=0, le=1, description=(
        "the correction's strength: the share of the way to the nearest mode's k-sd ball a sample is moved"))
    k: float = Field(3.0, gt=0, description="the ball's radius in mode standard deviations")
    max_rounds: int = Field(1, ge=1, description="rounds of drawing (every sample is kept: one suffices)")
    example: ClassVar[dict] = {"gamma": 0.5}

    def build(self, source):
        """The correction for a run."""
        return Correction(self, np.asarray(source.modes, float), float(source.mode_std))


class Correction:
    """The exact toy correction; remembers what it did to the last batch for correct_share / correct_distance."""

    def __init__(self, cfg: CorrectFilterConfig, modes: np.ndarray, sd: float):
        self.cfg, self.modes, self.radius = cfg, modes, cfg.k * sd
        self.last: dict[str, np.ndarray] = {}

    def transform(self, samples, model, rng) -> np.ndarray:
        """Corrected samples (S, n, d)."""
        x = np.asarray(samples, float)
        d2 = ((x[:, :, None, :] - self.modes[None, None]) ** 2).sum(-1)
        m = self.modes[d2.argmin(-1)]                                        # (S, n, d) nearest modes
        off = x - m
        dist = np.sqrt((off ** 2).sum(-1, keepdims=True))
        outside = dist[..., 0] > self.radius
        target = m + off * (self.radius * (1 - 1e-9) / np.maximum(dist, 1e-300))   # just inside the ball
        moved = np.where(outside[..., None], self.cfg.gamma * (target - x), 0.0)
        self.last = {"correct_share": outside.mean(1) if self.cfg.gamma > 0 else np.zeros(x.shape[0]),
                     "correct_distance": np.sqrt((moved ** 2).sum(-1)).mean(1)}
        return x + moved

    def __call__(self, samples, model, rng) -> np.ndarray:
        """Keep every sample."""
        return np.ones(np.shape(samples)[:2], bool)

    def columns(self) -> dict[str, np.ndarray]:
        """correct_share and correct_distance of the last batch."""
        return dict(self.last)
