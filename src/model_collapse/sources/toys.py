"""Two-dimensional toy truths of the diffusion and flow-matching literature, with exact samplers.

- `ring`: `modes` Gaussians (default 8) of sd `std` evenly on a circle of radius `radius`;
- `grid`: a `side` x `side` grid (default 5 x 5) of Gaussians of sd `std`, `spacing` apart, centred;
- `moons`: scikit-learn's two interleaving half circles, plus N(0, noise^2) per axis;
- `swiss-roll`: the 2-D swiss roll (t cos t, t sin t) / 5 for t ~ U(1.5 pi, 4.5 pi), plus noise;
- `checkerboard`: uniform on the dark squares of a `side` x `side` board of unit squares, centred.

Ring and grid are Gaussian mixtures, held as a `gmm` family object (exact log-density, moments,
the GMM metrics), and declare their modes (locations `modes_at` and the sd), which mode coverage
and the share of high-quality samples read (metrics/modes.py). The checkerboard has an exact
(piecewise constant) log-density. Moons and the swiss roll have exact samplers only.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from ..kinds import SourceDecl
from ..schema import Component


class ToySourceConfig(Component):
    """A 2-D toy truth: ring or grid of Gaussians, two moons, swiss roll, checkerboard."""

    kind: Literal["toy"] = Field("toy", description=(
        "the source: toy, a 2-D truth of the diffusion literature (ring, grid, moons, swiss-roll, checkerboard)"))
    shape: Literal["ring", "grid", "moons", "swiss-roll", "checkerboard"] = Field("ring", description=(
        "ring: Gaussians on a circle; grid: a square grid of Gaussians; moons, swiss-roll: noisy curves; "
        "checkerboard: uniform on alternate squares"))
    modes: int = Field(8, ge=2, description="ring: the number of Gaussians on the circle")
    radius: float = Field(2.0, gt=0, description="ring: the circle's radius")
    side: int = Field(5, ge=2, description="grid: Gaussians per side; checkerboard: squares per side")
    spacing: float = Field(1.0, gt=0, description="grid: distance between neighbouring modes")
    std: float = Field(0.05, gt=0, description="ring, grid: the standard deviation of every Gaussian")
    noise: float = Field(0.05, ge=0, description="moons, swiss-roll: sd of the Gaussian noise added per axis")

    def declare(self) -> SourceDecl:
        """2-D vectors; ring and grid are Gaussian mixtures with known modes."""
        if self.shape in ("ring", "grid"):
            return SourceDecl(self.kind, "vector", frozenset({"truth", "modes"}), dim=2, truth="gmm")
        if self.shape == "checkerboard":
            return SourceDecl(self.kind, "vector", frozenset({"truth"}), dim=2, truth="checkerboard")
        return SourceDecl(self.kind, "vector", frozenset(), dim=2)

    def modes_at(self) -> np.ndarray:
        """Mode locations (K, 2) of a ring or grid."""
        if self.shape == "ring":
            a = 2 * np.pi * np.arange(self.modes) / self.modes
            return self.radius * np.stack([np.cos(a), np.sin(a)], 1)
        g = (np.arange(self.side) - (self.side - 1) / 2) * self.spacing
        return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)

    def build(self, chains: int) -> "ToySource":
        """The source object for a run."""
        return ToySource(self, chains)


class Checkerboard:
    """Uniform on the dark squares ((i + j) even) of a side x side board of unit squares centred at 0."""

    def __init__(self, side: int, chains: int):
        self.side, self.chains = side, chains
        self.dark = [(i, j) for i in range(side) for j in range(side) if (i + j) % 2 == 0]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points per chain (S, n, 2)."""
        sq = np.array(self.dark, float)[rng.integers(0, len(self.dark), (self.chains, n))]
        return sq + rng.random((self.chains, n, 2)) - self.side / 2

    def log_prob(self, x) -> np.ndarray:
        """Exact log-density of shared points x (M, 2): (S, M) (-inf off the dark squares)."""
        x = np.asarray(x, float).reshape(-1, 2) + self.side / 2
        ij = np.floor(x).astype(np.int64)
        inside = ((ij >= 0) & (ij < self.side)).all(1) & ((ij.sum(1) % 2) == 0)
        lp = np.where(inside, -math.log(len(self.dark)), -np.inf)
        return np.broadcast_to(lp, (self.chains, len(lp))).copy()


def _curve(cfg: ToySourceConfig, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Moons or swiss-roll points of shape (..., 2)."""
    if cfg.shape == "moons":   # scikit-learn's make_moons: upper half circle, and the lower one shifted
        t = np.pi * rng.random(shape)
        lower = rng.random(shape) < 0.5
        x = np.where(lower, 1 - np.cos(t), np.cos(t))
        y = np.where(lower, 0.5 - np.sin(t), np.sin(t))
        pts = np.stack([x, y], -1)
    else:
        t = 1.5 * np.pi * (1 + 2 * rng.random(shape))
        pts = np.stack([t * np.cos(t), t * np.sin(t)], -1) / 5
    return pts + cfg.noise * rng.standard_normal(pts.shape)


class ToySource:
    """Real, fresh and reference draws from the toy truth."""

    data_kind = "vector"
    dim = 2

    def __init__(self, cfg: ToySourceConfig, chains: int):
        self.cfg, self.chains = cfg, chains
        self.modes = cfg.modes_at() if cfg.shape in ("ring", "grid") else None
        self.truth, self.one_truth = self._truth(chains), self._truth(1)
        self.mode_std = cfg.std if self.modes is not None else None

    def _truth(self, chains: int):
        cfg = self.cfg
        if cfg.shape in ("ring", "grid"):
            from ..families.gmm import GMMFamily
            m = cfg.modes_at()
            return GMMFamily.from_params(np.full(len(m), 1 / len(m)), m, np.eye(2)[None] * cfg.std ** 2 * np.ones((len(m), 1, 1)),
                                         chains)
        if cfg.shape == "checkerboard":
            return Checkerboard(cfg.side, chains)
        return None

    def _draw(self, chains: int, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.truth is not None:   # a mixture samples grouped by component: shuffled, so any prefix is a sample
            x = (self.truth if chains == self.chains else self.one_truth).sample(n, rng)
            if self.modes is None:
                return x
            order = rng.permuted(np.broadcast_to(np.arange(n), x.shape[:2]), axis=1)   # rows, not coordinates
            return np.take_along_axis(x, order[:, :, None], axis=1)
        return _curve(self.cfg, (chains, n), rng)

    def real(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Generation 0's training set: n true draws per chain (S, n, 2)."""
        return self._draw(self.chains, n, rng)

    def fresh(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n new true draws per chain."""
        return self._draw(self.chains, n, rng)

    def reference(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Held-out true points shared by all chains (n, 2)."""
        return self._draw(1, n, rng)[0]
