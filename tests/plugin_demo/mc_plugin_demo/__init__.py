"""A plugin package: a 1-D Laplace family, a filter keeping central samples, a spread metric."""

from typing import ClassVar, Literal

import numpy as np

from model_collapse.kinds import Needs
from model_collapse.metrics import Params
from model_collapse.schema import Component


class LaplaceConfig(Component):
    """Laplace(location, scale) fitted by maximum likelihood (median, mean absolute deviation)."""

    kind: Literal["laplace"] = "laplace"
    data_kinds: ClassVar[frozenset] = frozenset({"vector"})

    def capabilities(self, source) -> frozenset:
        return frozenset({"items", "log_prob"})

    def build(self, source, chains):
        return Laplace(chains)


class Laplace:
    """S chains of a 1-D Laplace distribution."""

    def __init__(self, chains):
        self.chains, self.loc, self.scale = chains, np.zeros(chains), np.ones(chains)

    def fit(self, data, rng):
        x = np.asarray(data)[..., 0]                       # (S, N)
        self.loc = np.median(x, axis=1)
        self.scale = np.abs(x - self.loc[:, None]).mean(axis=1)

    def sample(self, n, rng):
        return (self.loc[:, None] + self.scale[:, None] * rng.laplace(size=(self.chains, n)))[..., None]

    def log_prob(self, x):
        x = np.asarray(x)[..., 0]
        return -np.log(2 * self.scale[:, None]) - np.abs(x[None] - self.loc[:, None]) / self.scale[:, None]

    def params(self):
        return {"loc": self.loc.copy(), "scale": self.scale.copy()}

    def state_dict(self):
        return {"loc": self.loc.copy(), "scale": self.scale.copy()}

    def load_state_dict(self, state):
        self.loc, self.scale = np.array(state["loc"], float), np.array(state["scale"], float)


class CentralConfig(Component):
    """Keep samples within `width` of the chain's median."""

    kind: Literal["central"] = "central"
    needs: ClassVar[Needs] = Needs(model=("items",))
    width: float = 2.0
    max_rounds: int = 10

    def build(self, source):
        return lambda x, model, rng: np.abs(x[..., 0] - np.median(x[..., 0], axis=1, keepdims=True)) < self.width


class SpreadParams(Params):
    q: float = 0.9


def spread(ctx, q=0.9):
    """Inter-quantile range of each chain's samples."""
    x = np.asarray(ctx.samples)[..., 0]
    return {"spread": np.quantile(x, q, axis=1) - np.quantile(x, 1 - q, axis=1)}


spread.Params = SpreadParams
spread.needs = Needs(kinds=("vector",), model=("items",))


class NotAFamily:
    """Falls short of the protocol: not a Component, no build."""
