"""Data regimes: how generation g's training set is built from real data and history.

- replace: only the previous model's samples (Shumailov et al., Nature 2024).
- accumulate: all real and synthetic data so far (Gerstgrasser et al. 2024,
  "Is model collapse inevitable?": test error stays bounded).
- accumulate-subsample: a fixed-size random subset of that pool.
- mix: shares of fresh true samples, a fixed real set, the previous training
  set carried over, and fresh model samples. It expresses the three loops of
  Alemohammad et al. (2023, "Self-consuming generative models go MAD") with
  real_n = R real items at generation 0 and n = R + M items later: fitted = 1 is
  the fully synthetic loop; real = R/n keeps the whole fixed real set in every
  generation beside M samples (synthetic augmentation loop); truth = R/n draws R
  real items afresh every generation (fresh data loop; for an image source,
  fresh() draws from the whole training split, independently each generation).
- schedule: the synthetic share grows with the generation (more of the web is
  model-written every year); the rest is true or real data.
Regimes never modify arrays in place: checkpoints hold references to them.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

import numpy as np

from ..data import Data, concat, pack, size, subset, unpack
from ..kinds import Needs
from ..schema import Component


class ReplaceConfig(Component):
    """Train on the previous model's n samples only."""

    kind: Literal["replace"] = Field("replace", description=(
        "the regime: replace, train on the previous model's samples only (Shumailov et al. 2024)"))
    example: ClassVar[dict] = {"n": 40}
    example_sizes: ClassVar[tuple] = (40, 40, 40, 40)
    n: int = Field(1000, gt=0, description=(
        "items per generation: each generation trains on n samples of the previous model (generation 0 on n "
        "real items)"))

    def items_held(self, generations: int) -> int:
        """Items per chain a run keeps in memory at most (the memory estimate of validation)."""
        return 2 * self.n   # a training set and the samples drawn from its fit

    def build(self) -> "Replace":
        """The regime object for a run."""
        return Replace(self)


class AccumulateConfig(ReplaceConfig):
    """Train on the real data plus every generation's n samples so far."""

    kind: Literal["accumulate"] = Field("accumulate", description=(
        "the regime: accumulate, keep all real and synthetic data so far (Gerstgrasser et al. 2024)"))
    example: ClassVar[dict] = {"n": 40}
    example_sizes: ClassVar[tuple] = (80, 120, 160, 200)   # the real set, then n more each generation

    def items_held(self, generations: int) -> int:
        """The pool grows by n a generation."""
        return self.n * (generations + 1)

    def build(self) -> "Accumulate":
        """The regime object for a run."""
        return Accumulate(self)


class AccumulateSubsampleConfig(ReplaceConfig):
    """Train on a random subset of n items of the accumulated pool."""

    kind: Literal["accumulate-subsample"] = Field("accumulate-subsample", description=(
        "the regime: accumulate-subsample, a random n-item subset of the accumulated pool (Kazdan et al. 2024)"))
    example: ClassVar[dict] = {"n": 40}
    example_sizes: ClassVar[tuple] = (40, 40, 40, 40)
    needs: ClassVar[Needs] = Needs(model=("items",))   # random subsets need the items themselves

    def items_held(self, generations: int) -> int:
        """The whole pool is kept, to draw subsets from."""
        return self.n * (generations + 1)

    def build(self) -> "Accumulate":
        """The regime object for a run."""
        return Accumulate(self)


class Replace:
    """Training set of generation g >= 1 = samples of generation g-1."""

    def __init__(self, cfg):
        self.cfg = cfg

    def size(self, g: int) -> int:
        """Training-set size at generation g (also the real set's size at g = 0)."""
        return self.cfg.n

    def samples_needed(self, g: int) -> int:
        """How many samples to draw from generation g's model."""
        return self.cfg.n

    def first(self, real) -> None:
        """Called once with generation 0's training set (the real data)."""

    def next(self, g, samples, real, source, rng) -> Data:
        """Generation g's training set."""
        return samples

    def state_dict(self) -> dict:
        """Nothing to carry."""
        return {}

    def load_state_dict(self, state) -> None:
        """Nothing to restore."""


class Accumulate(Replace):
    """Pool = real + all samples; train on the pool (or an n-subset of it)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.pool = None

    def next(self, g, samples, real, source, rng) -> Data:
        """Add the new samples to the pool and train on it."""
        self.pool = concat([real if self.pool is None else self.pool, samples])
        if self.cfg.kind == "accumulate-subsample":
            return subset(self.pool, self.cfg.n, rng)
        return self.pool

    def state_dict(self) -> dict:
        """The pool."""
        return pack("pool", self.pool)

    def load_state_dict(self, state) -> None:
        """Restore the pool."""
        self.pool = unpack("pool", state)


SHARES = ("truth", "real", "previous", "fitted")


class MixConfig(Component):
    """Shares of fresh true samples, the fixed real set, the previous training set, fresh model samples."""

    kind: Literal["mix"] = Field("mix", description=(
        "the regime: mix, set shares of fresh true, fixed real, previous and fresh model data"))
    example: ClassVar[dict] = {"n": 40, "truth": 0.25, "real": 0.25, "previous": 0.25, "fitted": 0.25, "grow": 10}
    example_sizes: ClassVar[tuple] = (50, 60, 70, 80)   # n + grow * g
    n: int = Field(1000, gt=0, description="training-set size at generation 1 (n + grow * g at generation g)")
    grow: int = Field(0, ge=0, description="training-set size at generation g >= 1 is n + grow * g")
    real_n: Optional[int] = Field(None, gt=0, description=(
        "Size of the real set generation 0 trains on (default n). The `real` share draws from this set, so "
        "real * n >= real_n puts all of it in every generation (Alemohammad et al. 2023)."))
    truth: float = Field(0.0, description="fresh draws from the true distribution (or the real pool)")
    real: float = Field(0.0, description=(
        "share of each training set drawn from the fixed real set (Bertrand et al. 2024's lambda)"))
    previous: float = Field(0.0, description="share drawn from the previous generation's training set")
    fitted: float = Field(1.0, description="share of fresh samples of the latest fitted model")

    def items_held(self, generations: int) -> int:
        """The largest training set, the previous one and the real set."""
        return 2 * (self.n + self.grow * generations) + (self.real_n or self.n)

    def build(self) -> "Mix":
        """The regime object for a run."""
        return Mix(self)

    def check(self, exp):
        """Shares in [0, 1] summing to 1; positive size."""
        errs = [(f"regime.{k}", "must be in [0, 1]") for k in SHARES if not 0 <= getattr(self, k) <= 1]
        total = sum(getattr(self, k) for k in SHARES)
        if abs(total - 1) > 1e-9:
            errs.append(("regime", f"shares truth + real + previous + fitted must sum to 1 (they sum to {total:g})"))
        return errs


class ScheduleConfig(Component):
    """Synthetic share grows from start to end over `over` generations; the rest is true (or real) data."""

    kind: Literal["schedule"] = Field("schedule", description=(
        "the regime: schedule, a synthetic share that grows over the generations"))
    example: ClassVar[dict] = {"n": 40}
    example_sizes: ClassVar[tuple] = (40, 40, 40, 40)
    n: int = Field(1000, gt=0, description="training-set size at generation 1 (n + grow * g at generation g)")
    grow: int = Field(0, ge=0, description="items added to the training set per generation")
    shape: Literal["linear", "step", "exponential"] = Field("linear", description=(
        "how the synthetic share moves from start to end: linear over `over` generations, a step at `over`, "
        "or exponential at `rate`"))
    start: float = Field(0.0, description="synthetic share at generation 1")
    end: float = Field(1.0, description="synthetic share reached (linear, step) or approached (exponential)")
    over: int = Field(100, gt=0, description="generations to go from start to end")
    rate: float = Field(0.05, description="exponential: share = end - (end - start) * exp(-rate * g)")
    rest: Literal["truth", "real"] = Field("truth", description=(
        "fresh true samples, or a subset of the fixed real set"))

    def items_held(self, generations: int) -> int:
        """The largest training set, the previous one and the real set."""
        return 3 * (self.n + self.grow * generations)

    def build(self) -> "Schedule":
        """The regime object for a run."""
        return Schedule(self)

    def check(self, exp):
        """Shares in [0, 1]."""
        errs = [(f"regime.{k}", "must be in [0, 1]") for k in ("start", "end") if not 0 <= getattr(self, k) <= 1]
        return errs

    def synthetic_share(self, g: int) -> float:
        """Fraction of generation g's training set drawn from the previous model."""
        if self.shape == "linear":
            return self.start + (self.end - self.start) * min(g / self.over, 1.0)
        if self.shape == "step":
            return self.end if g >= self.over else self.start
        return self.end - (self.end - self.start) * float(np.exp(-self.rate * g))


def split_counts(n: int, shares: list[float]) -> list[int]:
    """Integer counts summing to n, proportional to shares (largest remainder)."""
    raw = np.asarray(shares, float) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts.tolist()


class Mix(Replace):
    """Training set = truth + real + previous + fitted parts, sized by shares."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.previous = None

    def size(self, g: int) -> int:
        """n + grow * g; real_n (when set) at generation 0."""
        first = getattr(self.cfg, "real_n", None)
        return first if g == 0 and first is not None else self.cfg.n + self.cfg.grow * g

    def shares(self, g: int) -> list[float]:
        """(truth, real, previous, fitted) shares at generation g."""
        return [getattr(self.cfg, k) for k in SHARES]

    def samples_needed(self, g: int) -> int:
        """The fitted part of generation g+1 (at least 1, so metrics have samples)."""
        return max(split_counts(self.size(g + 1), self.shares(g + 1))[3], 1)

    def next(self, g, samples, real, source, rng) -> Data:
        """Draw each part and pool them."""
        n_true, n_real, n_prev, n_fit = split_counts(self.size(g), self.shares(g))
        prev = self.previous if self.previous is not None else real
        parts = [source.fresh(n_true, rng) if n_true else None,
                 subset(real, n_real, rng) if n_real else None,
                 subset(prev, n_prev, rng) if n_prev else None,
                 subset(samples, n_fit, rng) if n_fit else None]
        self.previous = concat([p for p in parts if p is not None])
        return self.previous

    def first(self, real) -> None:
        """Remember generation 0's training set as 'previous'."""
        self.previous = real

    def state_dict(self) -> dict:
        """The previous training set."""
        return pack("previous", self.previous)

    def load_state_dict(self, state) -> None:
        """Restore the previous training set."""
        self.previous = unpack("previous", state)


class Schedule(Mix):
    """Mix whose synthetic share follows cfg.synthetic_share(g)."""

    def shares(self, g: int) -> list[float]:
        """(truth, real, previous, fitted) shares at generation g."""
        s = self.cfg.synthetic_share(g)
        return [1 - s, 0.0, 0.0, s] if self.cfg.rest == "truth" else [0.0, 1 - s, 0.0, s]
