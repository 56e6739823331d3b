"""Gaussian kernel density estimate refitted on its own samples.

Sampling a KDE picks a training point and adds kernel noise, so each
generation inflates the variance by the kernel's (a factor 1 + h^2 with
scipy's convention, where the kernel covariance is h^2 times the data
covariance): the opposite drift to the MLE Gaussian's shrinkage.

`bandwidth_mode: absolute` takes the bandwidth as the kernel's standard
deviation in data units (kernel covariance h^2 I), scikit-learn's
KernelDensity convention, which Kazdan et al. 2024 ("Collapse or thrive?")
use; there each generation adds h^2 of variance, whatever the data's spread.
`temperature` lambda (Alemohammad et al. 2023's sampling bias) scales the
kernel covariance when sampling (the kernel sd by sqrt(lambda)), as the
Gaussian family scales its covariance; the fitted density is unchanged.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Union

import numpy as np
from pydantic import Field

from ..schema import Component
from ..special import ndtr


class KDEConfig(Component):
    """Config of the ``kde`` family."""

    kind: Literal["kde"] = Field("kde", description="the family: kde, a Gaussian kernel density estimate")
    bandwidth: Union[float, Literal["scott", "silverman"]] = Field("scott", description=(
        "A number is the factor h (kernel covariance = h^2 * data covariance, as scipy.stats.gaussian_kde); "
        "\"scott\" is n^(-1/(d+4)), \"silverman\" (n (d+2) / 4)^(-1/(d+4))."))
    bandwidth_mode: Literal["relative", "absolute"] = Field("relative", description=(
        "relative: the kernel covariance is h^2 times the data covariance (scipy.stats.gaussian_kde); "
        "absolute: it is h^2 I, h the kernel sd in data units (scikit-learn's KernelDensity, whose "
        "\"scott\"/\"silverman\" are the same numbers n^(-1/(d+4)), ..., used as that sd)."))
    temperature: float = Field(1.0, gt=0, description=(
        "Sampling bias lambda: samples add kernel noise of covariance lambda * kernel covariance."))

    data_kinds: ClassVar[frozenset] = frozenset({"vector"})

    def theory(self, exp, column: str):
        """E[var] (1-D) or E[trace] under replace (theory.kde_var): only the truth's covariance enters,
        so a Gaussian-mixture truth has the same closed form; Scott/Silverman use N, fixed under replace."""
        from ..theory import kde_var
        if exp.regime.kind != "replace" or exp.source.declare().truth not in ("gaussian", "gmm"):
            return None
        n = exp.regime.n
        cov = exp.source.truth(1).moments()[1][0]
        d = len(cov)
        if (column, d == 1) not in (("var", True), ("trace", False)):
            return None
        bw = self.bandwidth
        h = {"scott": n ** (-1.0 / (d + 4)), "silverman": (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))}.get(bw, bw)
        return lambda g: kde_var(float(np.trace(cov)), d, n, float(h), g, self.bandwidth_mode, self.temperature)

    def capabilities(self, source) -> frozenset:
        """Items, exact density and moments; a CDF in 1-D."""
        return frozenset({"items", "log_prob", "moments"} | ({"cdf"} if source.dim == 1 else set()))

    def build(self, source, chains: int) -> "KDEFamily":
        """The family for a built source."""
        return KDEFamily(self, source.dim, chains)


class KDEFamily:
    """S independent KDEs; the state is each chain's training points."""

    def __init__(self, cfg: KDEConfig, dim: int, chains: int):
        self.cfg, self.dim, self.chains = cfg, dim, chains
        self.points = np.zeros((chains, 1, dim))
        self.kcov = np.broadcast_to(np.eye(dim), (chains, dim, dim)).copy()

    def factor(self, n: int) -> float:
        """The bandwidth factor h for n points."""
        bw, d = self.cfg.bandwidth, self.dim
        if bw == "scott":
            return n ** (-1.0 / (d + 4))
        if bw == "silverman":
            return (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        return float(bw)

    def fit(self, data, rng=None) -> None:
        """Keep the points; kernel covariance = h^2 * sample covariance (ddof=1), or h^2 I if absolute."""
        x = np.asarray(data, float)
        self.points = x
        c = x - x.mean(axis=1, keepdims=True)
        cov = np.einsum("snd,sne->sde", c, c) / max(x.shape[1] - 1, 1)
        # A chain whose points all coincide has no spread left: keep a floor so
        # the kernel stays a density (recorded via params()["degenerate"]).
        self.degenerate = np.trace(cov, axis1=1, axis2=2) < 1e-24
        cov[self.degenerate] += 1e-12 * np.eye(self.dim)
        if self.cfg.bandwidth_mode == "absolute":
            self.kcov = np.broadcast_to(np.eye(self.dim) * self.factor(x.shape[1]) ** 2, cov.shape).copy()
        else:
            self.kcov = cov * self.factor(x.shape[1]) ** 2

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Resample training points and add kernel noise (covariance temperature * kcov): (S, n, d)."""
        s, m = self.points.shape[:2]
        idx = rng.integers(0, m, size=(s, n))
        base = np.take_along_axis(self.points, idx[:, :, None], axis=1)
        z = rng.standard_normal((s, n, self.dim))
        chol = np.linalg.cholesky(self.kcov)
        if self.cfg.temperature != 1.0:   # skipped at 1: the default draws stay bit-identical
            chol = chol * np.sqrt(self.cfg.temperature)
        return base + z @ chol.transpose(0, 2, 1)

    def log_prob(self, x: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Log density at shared points x (M, d): (S, M), in chunks to bound memory."""
        from scipy.special import logsumexp  # on use: importing it costs ~0.15 s of start-up
        x = np.asarray(x, float).reshape(len(x), self.dim)
        chol = np.linalg.cholesky(self.kcov)
        inv = np.linalg.inv(chol)                                           # (S, d, d)
        logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        pts = self.points @ inv.transpose(0, 2, 1)                          # whitened (S, N, d)
        out = np.empty((self.chains, len(x)))
        for i in range(0, len(x), chunk):
            q = x[None, i:i + chunk] @ inv.transpose(0, 2, 1)               # (S, m, d)
            d2 = ((q[:, :, None, :] - pts[:, None, :, :]) ** 2).sum(-1)     # (S, m, N)
            out[:, i:i + chunk] = logsumexp(-0.5 * d2, axis=2)
        n = self.points.shape[1]
        return out - np.log(n) - 0.5 * (logdet[:, None] + self.dim * np.log(2 * np.pi))

    def cdf(self, x: np.ndarray, chunk: int = 256) -> np.ndarray:
        """1-D only: CDF at shared points x (G,): (S, G)."""
        sd = np.sqrt(self.kcov[:, 0, 0])[:, None, None]
        pts = self.points[:, None, :, 0]
        out = np.empty((self.chains, len(x)))
        for i in range(0, len(x), chunk):
            out[:, i:i + chunk] = ndtr((x[None, i:i + chunk, None] - pts) / sd).mean(axis=2)
        return out

    def moments(self):
        """Mixture mean (S, d) and covariance (S, d, d): data covariance (ddof=0) + kernel."""
        mean = self.points.mean(axis=1)
        c = self.points - mean[:, None, :]
        return mean, np.einsum("snd,sne->sde", c, c) / self.points.shape[1] + self.kcov

    def params(self) -> dict[str, np.ndarray]:
        """Mean and variance of the estimated density (1-D) or trace (d-dim), and bandwidth h."""
        mean, cov = self.moments()
        out = ({"mean": mean[:, 0], "var": cov[:, 0, 0]} if self.dim == 1
               else {"trace": np.trace(cov, axis1=1, axis2=2)})
        out["bandwidth"] = np.full(self.chains, self.factor(self.points.shape[1]))
        out["degenerate"] = getattr(self, "degenerate", np.zeros(self.chains, bool)).astype(float)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """The training points and kernel covariances."""
        return {"points": self.points, "kcov": self.kcov}

    def load_state_dict(self, state) -> None:
        """Restore from state_dict()."""
        self.points, self.kcov = np.array(state["points"]), np.array(state["kcov"])
        self.degenerate = np.zeros(self.chains, bool)
