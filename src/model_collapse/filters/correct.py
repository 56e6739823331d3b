"""Self-correction (Gillman et al. 2024, "Self-correcting self-consuming loops"): map each generation's
samples toward the data before they are reused, instead of dropping any.

On a truth with known modes (a ring or grid of Gaussians of sd sigma) the correction is exact: a sample
farther than k sigma from its nearest mode m is moved the fraction `gamma` of the way to the nearest
point of that mode's k-sigma ball, x + gamma (m + k sigma (x - m) / |x - m| - x); samples inside a ball
are left alone. gamma = 0 is no correction, gamma = 1 puts every sample inside a ball. Every sample is
kept (the acceptance rate is 1); the share corrected and the mean distance moved are the columns
correct_share and correct_distance.

On images (`correct-kmeans`) the truth has no modes to step toward; Gillman et al.'s digit experiment
corrects toward k-means cluster centres of the real data instead: k centres per class, fitted once on
the real training images of that class, and each sample moved the share gamma of the way to the nearest
centre of its own class (of every class when it is unlabelled, or of a class the real data lacks),
x + gamma (c - x). correct_distance is
then the Euclidean length of the move with pixels on [0, 1].
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..data import UNLABELLED
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


class KMeansCorrectFilterConfig(Component):
    """Move each image sample a share gamma of the way to the nearest k-means centre of real images of its class."""

    kind: Literal["correct-kmeans"] = Field("correct-kmeans", description=(
        "the filter: correct-kmeans, Gillman et al.'s self-correction of digits: samples moved toward k-means "
        "centres of the real images of their class, none dropped"))
    needs: ClassVar[Needs] = Needs(kinds=("image",), model=("items",))
    gamma: float = Field(1.0, ge=0, le=1, description=(
        "the correction's strength: the share of the way to the nearest centre a sample is moved"))
    k: int = Field(10, ge=1, description="k-means centres per class")
    n: int = Field(60000, ge=1, description="real training images the centres are fitted on (all, if fewer)")
    seed: int = Field(0, ge=0, description="seed of k-means (k-means++ starts, scikit-learn)")
    max_rounds: int = Field(1, ge=1, description="rounds of drawing (every sample is kept: one suffices)")
    example: ClassVar[dict] = {"gamma": 0.5, "k": 2}

    def build(self, source):
        """The correction for a run: k-means on the source's real training images, class by class."""
        from sklearn.cluster import KMeans
        real = np.asarray(source.real(self.n, np.random.default_rng(self.seed))[0])
        pixels, labels = real[:, :-1].astype(np.float64), real[:, -1].astype(int)
        centres, owner = [], []
        for c in np.unique(labels):
            x = pixels[labels == c]
            km = KMeans(n_clusters=min(self.k, len(x)), n_init=1, random_state=self.seed).fit(x)
            centres.append(km.cluster_centers_)
            owner.append(np.full(len(km.cluster_centers_), c))
        return KMeansCorrection(self, np.concatenate(centres), np.concatenate(owner))


class KMeansCorrection:
    """Gillman et al.'s k-means correction of image samples; columns as the toy correction's."""

    def __init__(self, cfg: KMeansCorrectFilterConfig, centres: np.ndarray, owner: np.ndarray):
        self.cfg, self.centres, self.owner = cfg, centres, owner      # (M, P) on 0..255, (M,) classes
        self.last: dict[str, np.ndarray] = {}

    def transform(self, samples, model, rng) -> np.ndarray:
        """Corrected samples (S, n, P + 1), in their own dtype, labels kept."""
        x = np.asarray(samples)
        out, share, dist = x.copy(), np.zeros(x.shape[0]), np.zeros(x.shape[0])
        c2 = (self.centres ** 2).sum(1)
        for s in range(x.shape[0]):
            px, lab = x[s, :, :-1].astype(np.float64), x[s, :, -1].astype(int)
            d2 = c2[None] - 2 * px @ self.centres.T                     # |x - c|^2 up to |x|^2, (n, M)
            other = (lab[:, None] != self.owner[None]) & (lab[:, None] != UNLABELLED)
            other[other.all(1)] = False       # a class the real data lacks: the nearest centre of any class
            d2[other] = np.inf
            moved = self.cfg.gamma * (self.centres[d2.argmin(1)] - px)
            new = px + moved
            out[s, :, :-1] = np.clip(np.rint(new), 0, 255) if x.dtype == np.uint8 else new
            share[s] = float(self.cfg.gamma > 0) if len(px) else 0.0
            dist[s] = np.sqrt((moved ** 2).sum(1)).mean() / 255.0 if len(px) else 0.0
        self.last = {"correct_share": share, "correct_distance": dist}
        return out

    def __call__(self, samples, model, rng) -> np.ndarray:
        """Keep every sample."""
        return np.ones(np.shape(samples)[:2], bool)

    def columns(self) -> dict[str, np.ndarray]:
        """correct_share and correct_distance of the last batch."""
        return dict(self.last)
