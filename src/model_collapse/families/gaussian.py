"""Multivariate Gaussian refitted by maximum likelihood (ddof=0) or unbiased (ddof=1).

Refitting N(mu, Sigma) to N of its own samples shrinks E[var] by (N-1)/N per
generation under MLE (Shumailov et al., Nature 2024, Sec. "Theoretical
intuition"); the unbiased estimator keeps E[var] fixed while the variance of
var grows, so single chains still wander towards 0.

`temperature` lambda is the sampling bias of Alemohammad et al. 2023 ("Self-
consuming generative models go MAD"): the fit is unchanged, samples come from
N(mu, lambda Sigma). lambda scales the covariance (the standard deviation by
sqrt(lambda)), as p(x)^(1/lambda) of a Gaussian is N(mu, lambda Sigma): the same
sense as a softmax temperature. Under replace with the MLE, E[var_g] =
var ((N-1)/N)^(g+1) lambda^g (theory.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..schema import ClosedFormFit


class GaussianConfig(ClosedFormFit):
    """Config of the ``gaussian`` family."""

    kind: Literal["gaussian"] = Field("gaussian", description=(
        "the family: gaussian, a multivariate Gaussian refitted by maximum likelihood or unbiased estimates"))
    covariance: Literal["full", "diag"] = Field("full", description=(
        "full: a full covariance matrix; diag: independent coordinates (a diagonal covariance)"))
    ddof: Literal[0, 1] = Field(0, description=(
        "0: the maximum-likelihood covariance (divide by N, Shumailov et al.'s collapsing estimator); 1: the "
        "unbiased one (N - 1)"))
    summary: bool = Field(False, description=(
        "Draw each generation's sufficient statistics (mean ~ Normal, scatter ~ Wishart) instead of N points: "
        "exact in distribution, O(d^2) not O(N d)."))
    var_floor: float = Field(1e-12, description=(
        "smallest variance kept on the diagonal, so a collapsed chain stays finite"))
    temperature: float = Field(1.0, gt=0, description=(
        "Sampling bias lambda (Alemohammad et al. 2023): sample N(mu, lambda Sigma); 1 samples the fit "
        "itself."))

    data_kinds: ClassVar[frozenset] = frozenset({"vector"})

    def theory(self, exp, column: str):
        """E[column at generation g] under replace from a Gaussian truth (theory.gaussian_var), else None."""
        from ..theory import gaussian_var
        src, n = exp.source, exp.regime.n
        if exp.regime.kind != "replace" or src.declare().truth != "gaussian":
            return None
        cov = src.covariance()
        if column == "var" and len(src.mean) == 1:
            return lambda g: gaussian_var(cov[0, 0], n, g, self.ddof, self.temperature)
        if column == "trace":
            return lambda g: gaussian_var(np.trace(cov), n, g, self.ddof, self.temperature)
        if column == "mean":
            return lambda g: np.full(np.shape(g), src.mean[0], float)
        return None

    def capabilities(self, source) -> frozenset:
        """Exact density and moments (a Gaussian fit: `normal`); a CDF in 1-D; items unless it draws summaries."""
        return frozenset({"log_prob", "moments", "normal"} | ({"cdf"} if source.dim == 1 else set())
                         | (set() if self.summary else {"items"}))

    def build(self, source, chains: int) -> "GaussianFamily":
        """The family for a built source."""
        return GaussianFamily(self, source.dim, chains)


@dataclass
class GaussianStats:
    """Exact summary of N points per chain: count, mean (S, d), scatter (S, d, d)."""

    n: int
    mean: np.ndarray
    scatter: np.ndarray

    @classmethod
    def from_array(cls, x: np.ndarray) -> "GaussianStats":
        """Summarise raw points (S, N, d)."""
        mean = x.mean(axis=1)
        c = x - mean[:, None, :]
        return cls(x.shape[1], mean, np.einsum("snd,sne->sde", c, c))

    def merge(self, other: "GaussianStats") -> "GaussianStats":
        """Summary of the pooled points (parallel-axis update of the scatter)."""
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        extra = (self.n * other.n / n) * delta[:, :, None] * delta[:, None, :]
        return GaussianStats(n, mean, self.scatter + other.scatter + extra)


def wishart_identity(s: int, d: int, dof: int, rng: np.random.Generator) -> np.ndarray:
    """S draws of Wishart(dof, I_d) by the Bartlett decomposition: (S, d, d)."""
    if d == 1:
        return rng.chisquare(dof, size=(s, 1, 1))
    a = np.zeros((s, d, d))
    a[:, np.arange(d), np.arange(d)] = np.sqrt(rng.chisquare(dof - np.arange(d), size=(s, d)))
    low = np.tril_indices(d, -1)
    a[:, low[0], low[1]] = rng.standard_normal((s, len(low[0])))
    return a @ a.transpose(0, 2, 1)


class GaussianFamily:
    """S independent Gaussian fits, advanced together."""

    def __init__(self, cfg: GaussianConfig, dim: int, chains: int):
        self.cfg, self.dim, self.chains = cfg, dim, chains
        self.mean = np.zeros((chains, dim))
        self.cov = np.broadcast_to(np.eye(dim), (chains, dim, dim)).copy()
        self.degenerate = np.zeros(chains, dtype=bool)

    @classmethod
    def from_params(cls, mean, cov, chains: int, cfg: GaussianConfig | None = None) -> "GaussianFamily":
        """A family whose every chain holds the given (d,) mean and (d, d) covariance."""
        mean = np.asarray(mean, float)
        fam = cls(cfg or GaussianConfig(), mean.shape[-1], chains)
        fam.mean[:] = mean
        fam.cov[:] = np.asarray(cov, float)
        return fam

    def fit(self, data, rng=None) -> None:
        """Closed-form fit of mean and covariance on each chain."""
        stats = data if isinstance(data, GaussianStats) else GaussianStats.from_array(data)
        self.mean = stats.mean.copy()
        cov = stats.scatter / (stats.n - self.cfg.ddof)
        if self.cfg.covariance == "diag":
            cov = cov * np.eye(self.dim)
        self.cov, self.degenerate = self._floor(cov)

    def _floor(self, cov: np.ndarray):
        """Clip eigenvalues at var_floor and flag chains where that happened (a recorded collapse)."""
        floor = self.cfg.var_floor
        if self.dim == 1:
            bad = cov[:, 0, 0] < floor
            cov[bad, 0, 0] = floor
            return cov, bad
        w, v = np.linalg.eigh(cov)
        bad = w.min(axis=1) < floor
        if bad.any():
            w = np.maximum(w[bad], floor)
            cov[bad] = (v[bad] * w[:, None, :]) @ v[bad].transpose(0, 2, 1)
        return cov, bad

    def _chol(self) -> np.ndarray:
        return np.linalg.cholesky(self.cov)

    def sample(self, n: int, rng: np.random.Generator):
        """n points per chain (S, n, d) from N(mean, temperature cov), or their exact summary when cfg.summary."""
        s, d = self.chains, self.dim
        chol = self._chol()
        if self.cfg.temperature != 1.0:   # skipped at 1: the default draws stay bit-identical
            chol = chol * np.sqrt(self.cfg.temperature)
        if self.cfg.summary:
            z = rng.standard_normal((s, d, 1))
            mean = self.mean + (chol @ z)[:, :, 0] / np.sqrt(n)
            scatter = chol @ wishart_identity(s, d, n - 1, rng) @ chol.transpose(0, 2, 1)
            return GaussianStats(n, mean, scatter)
        z = rng.standard_normal((s, n, d))
        if d == 1:
            return self.mean[:, None, :] + z * chol[:, None, 0, :]
        return self.mean[:, None, :] + z @ chol.transpose(0, 2, 1)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Log density of shared points x (M, d) under each chain: (S, M)."""
        x = np.asarray(x, float).reshape(len(x), self.dim)
        chol = self._chol()
        diff = x[None, :, :] - self.mean[:, None, :]                       # (S, M, d)
        sol = np.linalg.solve(chol, diff.transpose(0, 2, 1))               # (S, d, M)
        maha = (sol ** 2).sum(axis=1)
        logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        return -0.5 * (maha + logdet[:, None] + self.dim * np.log(2 * np.pi))

    def mean_log_prob(self, x: np.ndarray) -> np.ndarray:
        """Mean log density of shared points x (M, d) per chain, exactly from x's moments: (S,)."""
        x = np.asarray(x, float).reshape(len(x), self.dim)
        m = x.mean(axis=0)
        scatter = np.cov(x.T, ddof=0).reshape(self.dim, self.dim)
        inv = np.linalg.inv(self.cov)
        diff = m[None, :] - self.mean
        maha = np.einsum("sij,ji->s", inv, scatter) + np.einsum("si,sij,sj->s", diff, inv, diff)
        logdet = np.linalg.slogdet(self.cov)[1]
        return -0.5 * (maha + logdet + self.dim * np.log(2 * np.pi))

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """1-D only: CDF at shared points x (G,): (S, G)."""
        sd = np.sqrt(self.cov[:, 0, 0])
        from ..special import ndtr
        return ndtr((np.asarray(x)[None, :] - self.mean[:, :1]) / sd[:, None])

    def moments(self):
        """Mean (S, d) and covariance (S, d, d)."""
        return self.mean, self.cov

    def params(self) -> dict[str, np.ndarray]:
        """1-D: mean and var; d-dim: trace and log-det of the covariance, norm of the mean."""
        out = {}
        if self.dim == 1:
            out["mean"], out["var"] = self.mean[:, 0], self.cov[:, 0, 0]
        else:
            out["trace"] = np.trace(self.cov, axis1=1, axis2=2)
            out["logdet"] = np.linalg.slogdet(self.cov)[1]
            out["mean_norm"] = np.linalg.norm(self.mean, axis=1)
        out["degenerate"] = self.degenerate.astype(float)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Mean, covariance and degeneracy flags."""
        return {"mean": self.mean, "cov": self.cov, "degenerate": self.degenerate}

    def load_state_dict(self, state) -> None:
        """Restore from state_dict()."""
        self.mean, self.cov = np.array(state["mean"]), np.array(state["cov"])
        self.degenerate = np.array(state["degenerate"])
