"""Ordinary least squares refitted on labels from its own predictions (linear regression collapse).

The setting of Dohmatob et al. 2024 ("Model collapse demystified: the case of
regression") and Gerstgrasser et al. 2024 ("Is model collapse inevitable?",
Sec. 2): a design X of T rows is kept fixed; generation g's labels are
y = X w_hat_{g-1} + fresh noise of sd sigma, and w is refitted by OLS. Under
replace the test error E||w_hat_g - w*||^2 grows as sigma^2 d/(T-d-1) (g+1);
under accumulate (every earlier (X, y) kept) it stays below
sigma^2 d/(T-d-1) pi^2/6 (theory.py derives both).

Data are pairs (S, N, d + 1): the features x in the first d columns, the
label y in the last. Every chain is one OLS fit, solved for all chains at once
from the stacked normal equations X^T X (S, d, d).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Union

import numpy as np
from pydantic import Field

from ..errors import ConfigError
from ..schema import ClosedFormFit


class LinRegConfig(ClosedFormFit):
    """Config of the ``linreg`` family."""

    kind: Literal["linreg"] = Field("linreg", description=(
        "the family: linreg, ordinary least squares refitted on its own predictions"))
    design: Literal["fixed", "fresh"] = Field("fixed", description=(
        "fixed: samples relabel the design X of the first fit (generation 0's real x), the papers' setting; "
        "fresh: every sample draws new x from the source's feature distribution."))
    noise: Union[float, Literal["source", "fitted"]] = Field("source", description=(
        "Noise sd of the synthetic labels: \"source\" is the true sigma (the papers' setting), \"fitted\" the "
        "residual sd sqrt(RSS / (N - d)) of each chain's fit, or a number."))

    data_kinds: ClassVar[frozenset] = frozenset({"pairs"})

    def theory(self, exp, column: str):
        """E[test_error] under replace, or accumulate with a fixed design (theory.linreg_test_error)."""
        from ..theory import linreg_test_error
        src, reg = exp.source, exp.regime
        if column != "test_error" or src.declare().truth != "linreg" or self.noise == "fitted":
            return None
        if reg.kind == "replace" or (reg.kind == "accumulate" and self.design == "fixed"):
            s = src.noise if self.noise == "source" else float(self.noise)
            return lambda g: linreg_test_error(src.noise, src.dim, reg.n, g, reg.kind, s)
        return None

    def theory_bound(self, exp, column: str):
        """Gerstgrasser et al.'s pi^2/6 bound on accumulate's test error (fixed design, the source's noise)."""
        from ..theory import linreg_accumulate_bound
        src, reg = exp.source, exp.regime
        if (column == "test_error" and src.declare().truth == "linreg" and self.noise == "source"
                and self.design == "fixed" and reg.kind == "accumulate"):
            return float(linreg_accumulate_bound(src.noise, src.dim, reg.n))
        return None

    def capabilities(self, source) -> frozenset:
        """Labelled items; log_prob is the conditional density log p(y | x) of a pair."""
        return frozenset({"items", "log_prob"})

    def build(self, source, chains: int) -> "LinRegFamily":
        """The family for a built source (its truth gives the noise sd and the feature distribution)."""
        truth = getattr(source, "truth", None)
        sigma = getattr(truth, "sigma", None)
        if self.noise == "source" and sigma is None:
            raise ConfigError("model.noise: the source has no known noise level; "
                              "set model.noise to a number or to 'fitted'")
        features = getattr(truth, "features", None)
        if self.design == "fresh" and features is None:
            raise ConfigError("model.design: the source gives no feature distribution to draw fresh x from; "
                              "use design: fixed")
        noise = self.noise if not isinstance(self.noise, str) else (sigma[0] if self.noise == "source" else None)
        return LinRegFamily(self, source.dim, chains, noise, features)

    def check(self, exp) -> list[tuple[str, str]]:
        """A numeric noise sd must be positive."""
        if not isinstance(self.noise, str) and self.noise <= 0:
            return [("model.noise", "must be > 0 (or 'source' for the true sd, 'fitted' for the residual sd)")]
        return []


def standard_features(s: int, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """x ~ N(0, I_d): (S, n, d), the isotropic design of Gerstgrasser et al. and Dohmatob et al."""
    return rng.standard_normal((s, n, d))


class LinRegFamily:
    """S independent linear models y = x.w + N(0, sigma^2), fitted by OLS, advanced together."""

    def __init__(self, cfg: LinRegConfig, dim: int, chains: int, noise: float | None = None,
                 features=standard_features):
        self.cfg, self.dim, self.chains = cfg, int(dim), int(chains)
        self.w = np.zeros((chains, dim))
        self.sigma = np.full(chains, 1.0 if noise is None else float(noise))
        self.noise = noise            # None: each chain's residual sd ("fitted")
        self.features = features
        self.design = None            # (S, T, d): x of the first fit, relabelled by sample()
        self.degenerate = np.zeros(chains, dtype=bool)

    @classmethod
    def from_params(cls, w, sigma: float, chains: int) -> "LinRegFamily":
        """Every chain holds w (d,) and noise sd sigma, sampling fresh x ~ N(0, I) (a truth)."""
        w = np.asarray(w, float)
        fam = cls(LinRegConfig(design="fresh", noise=float(sigma)), len(w), chains, sigma)
        fam.w[:] = w
        return fam

    def fit(self, data, rng=None) -> None:
        """OLS on each chain's pairs (S, N, d + 1); the first fit also fixes the design."""
        data = np.asarray(data, float)
        x, y = data[:, :, : self.dim], data[:, :, self.dim]
        xt = x.transpose(0, 2, 1)
        xtx = xt @ x                            # batched BLAS: ~5x faster than einsum here
        xty = (xt @ y[:, :, None])[:, :, 0]
        try:
            self.w = np.linalg.solve(xtx, xty[:, :, None])[:, :, 0]
            self.degenerate = np.zeros(self.chains, dtype=bool)
        except np.linalg.LinAlgError:
            # Some chain's X^T X is singular (fewer independent rows than d): the minimum-norm
            # solution, flagged; validation keeps regime n > d + 1 so this needs a degenerate design.
            self.w = (np.linalg.pinv(xtx) @ xty[:, :, None])[:, :, 0]
            self.degenerate = np.linalg.matrix_rank(xtx) < self.dim
        if self.noise is None:
            resid = y - (x @ self.w[:, :, None])[:, :, 0]
            self.sigma = np.sqrt((resid ** 2).sum(axis=1) / max(x.shape[1] - self.dim, 1))
        if self.design is None and self.cfg.design == "fixed":
            self.design = x.copy()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n pairs per chain (S, n, d + 1): the design's rows (cycled) or fresh x, labels x.w + noise."""
        s, d = self.chains, self.dim
        if self.cfg.design == "fixed":
            if self.design is None:
                raise RuntimeError("linreg with a fixed design samples only after its first fit")
            t = self.design.shape[1]
            x = self.design if n == t else self.design[:, np.arange(n) % t]
        else:
            x = self.features(s, n, d, rng)
        y = (x @ self.w[:, :, None])[:, :, 0] + self.sigma[:, None] * rng.standard_normal((s, n))
        return np.concatenate([x, y[:, :, None]], axis=2)

    def log_prob(self, pairs: np.ndarray) -> np.ndarray:
        """Conditional log density log N(y; x.w, sigma^2) of shared pairs (M, d + 1): (S, M)."""
        pairs = np.asarray(pairs, float).reshape(len(pairs), self.dim + 1)
        resid = pairs[None, :, self.dim] - self.w @ pairs[:, : self.dim].T              # (S, M)
        var = self.sigma[:, None] ** 2
        return -0.5 * (np.log(2 * np.pi * var) + resid ** 2 / var)

    def params(self) -> dict[str, np.ndarray]:
        """Norm of the coefficients, the fitted noise sd (noise: fitted only), and the degenerate flag."""
        out = {"w_norm": np.linalg.norm(self.w, axis=1)}
        if self.noise is None:
            out["sigma"] = self.sigma.copy()
        out["degenerate"] = self.degenerate.astype(float)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Coefficients, noise sd, flags and the fixed design ((S, 0, d) before the first fit)."""
        design = self.design if self.design is not None else np.zeros((self.chains, 0, self.dim))
        return {"w": self.w, "sigma": self.sigma, "degenerate": self.degenerate, "design": design}

    def load_state_dict(self, state) -> None:
        """Restore from state_dict()."""
        self.w, self.sigma = np.array(state["w"], float), np.array(state["sigma"], float)
        self.degenerate = np.array(state["degenerate"], bool)
        design = np.array(state["design"], float)
        self.design = design if design.shape[1] > 0 else None
