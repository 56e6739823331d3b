"""Metrics comparing a fitted distribution family with the known truth.

Every metric takes a Context and returns columns of shape (S,), one value per chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np


@dataclass
class Context:
    """What a metric may look at for one generation."""

    generation: int
    model: Any            # the family fitted at this generation
    samples: Any          # its samples (S, n, ...) or a summary
    train: Any            # the training set it was fitted on
    source: Any           # the data source (has .truth where known)
    reference: Any        # held-out true data shared by all chains (M, ...)
    rng: np.random.Generator
    store: Any = None     # the RunStore, for tables (store.add_table) beyond per-chain columns
    exp: Any = None       # the validated experiment (seed, generations, ...)

    @cached_property
    def caps(self) -> frozenset:
        """What the fitted model declares it can do (kinds.CAPABILITIES) on this source."""
        return frozenset(self.exp.model.capabilities(self.exp.source.declare())) if self.exp is not None else frozenset()

    @cached_property
    def truth_kind(self) -> str | None:
        """The declared family of the source's truth (kinds.TRUTH_NAMES), None where unknown."""
        return self.exp.source.declare().truth if self.exp is not None else None


def params(ctx: Context) -> dict[str, np.ndarray]:
    """The fitted parameters (family-specific columns)."""
    return ctx.model.params()


def kl(ctx: Context) -> dict[str, np.ndarray]:
    """Closed-form KL(fitted || truth) for Gaussian and categorical families."""
    truth, model = ctx.source.truth, ctx.model
    if "probs" in ctx.caps:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(model.p > 0, model.p * np.log(model.p / truth.p), 0.0)
        return {"kl": terms.sum(axis=1)}
    m1, c1 = model.moments()
    m0, c0 = truth.moments()
    d = m1.shape[1]
    inv0 = np.linalg.inv(c0)
    diff = (m0 - m1)[:, :, None]
    tr = np.einsum("sij,sji->s", inv0, c1)
    maha = (diff.transpose(0, 2, 1) @ inv0 @ diff)[:, 0, 0]
    return {"kl": 0.5 * (tr + maha - d + np.linalg.slogdet(c0)[1] - np.linalg.slogdet(c1)[1])}


def _grid(ctx: Context, n: int = 1001) -> np.ndarray:
    """A 1-D grid covering the truth and every chain's fit (+-8 sd)."""
    m0, c0 = ctx.source.truth.moments()
    m1, c1 = ctx.model.moments()
    lo = min((m0[:, 0] - 8 * np.sqrt(c0[:, 0, 0])).min(), (m1[:, 0] - 8 * np.sqrt(c1[:, 0, 0])).min())
    hi = max((m0[:, 0] + 8 * np.sqrt(c0[:, 0, 0])).max(), (m1[:, 0] + 8 * np.sqrt(c1[:, 0, 0])).max())
    return np.linspace(lo, hi, n)


def _w1_gaussians(m1, s1, m2, s2) -> np.ndarray:
    """W1 between 1-D Gaussians in closed form.

    Both quantile functions are affine in z = Phi^-1(u), so
    W1 = int_0^1 |Q1 - Q2| du = E|a + b Z| with a = m1 - m2, b = s1 - s2,
    Z ~ N(0, 1): the mean of a folded normal.
    """
    from ..special import ndtr
    a, b = m1 - m2, np.abs(s1 - s2)
    with np.errstate(divide="ignore", invalid="ignore"):
        folded = b * np.sqrt(2 / np.pi) * np.exp(-0.5 * (a / b) ** 2) + a * (1 - 2 * ndtr(-a / b))
    return np.where(b > 0, folded, np.abs(a))


def wasserstein(ctx: Context) -> dict[str, np.ndarray]:
    """Exact 1-D Wasserstein-1 between fit and truth: closed form for two Gaussians,
    else the integral of |F - G| (trapezoid on a 1,001-point grid over +-8 sd)."""
    model, truth = ctx.model, ctx.source.truth
    if "normal" in ctx.caps and ctx.truth_kind == "gaussian":   # both Gaussian: the folded normal
        return {"w1": _w1_gaussians(model.mean[:, 0], np.sqrt(model.cov[:, 0, 0]),
                                    truth.mean[0, 0], np.sqrt(truth.cov[0, 0, 0]))}
    x = _grid(ctx)
    gap = np.abs(ctx.model.cdf(x) - ctx.source.truth.cdf(x)[:1])
    return {"w1": np.trapezoid(gap, x, axis=1)}


def l2(ctx: Context) -> dict[str, np.ndarray]:
    """L2 distance between fitted and true densities (Shumailov et al. 2024), on a grid (1-D or 2-D)."""
    d = ctx.model.dim
    if d == 1:
        x = _grid(ctx)
        pts, cell = x[:, None], x[1] - x[0]
    else:
        m0, c0 = ctx.source.truth.moments()
        half = 6 * np.sqrt(np.diagonal(c0[0]).max())
        axes = [np.linspace(m0[0, i] - half, m0[0, i] + half, 161) for i in range(2)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    diff = np.exp(ctx.model.log_prob(pts)) - np.exp(ctx.source.truth.log_prob(pts)[:1])
    return {"l2": np.sqrt((diff ** 2).sum(axis=1) * cell)}


def tail(ctx: Context, k: float = 3.0) -> dict[str, np.ndarray]:
    """Mass beyond +-k sd of the truth (1-D: exact under the fit; d-dim: share of samples past the chi2 radius)."""
    from ..special import ndtr
    m0, c0 = ctx.source.truth.moments()
    if "cdf" in ctx.caps:   # declared in 1-D only
        sd = np.sqrt(c0[0, 0, 0])
        lo, hi = m0[0, 0] - k * sd, m0[0, 0] + k * sd
        f = ctx.model.cdf(np.array([lo, hi]))
        return {"tail": f[:, 0] + 1 - f[:, 1]}
    # d-dim: the Mahalanobis radius whose chi2(d) tail equals a 1-D Gaussian's mass beyond k sd.
    x = ctx.samples - m0[0]
    maha = np.einsum("snd,de,sne->sn", x, np.linalg.inv(c0[0]), x)
    from scipy.special import chdtri
    return {"tail": (maha > chdtri(ctx.model.dim, 2 * ndtr(-k))).mean(axis=1)}


def nll(ctx: Context) -> dict[str, np.ndarray]:
    """Mean negative log-likelihood of held-out true data under each chain's fit (with reference: per-chain,
    chain s's own held-out set under chain s's fit)."""
    ref = np.asarray(ctx.reference)
    per_chain = ctx.exp is not None and ctx.exp.reference == "per-chain"
    if "normal" in ctx.caps:  # exact and O(S d^2) for Gaussians
        if per_chain:
            return {"nll": -np.array([ctx.model.mean_log_prob(r)[s] for s, r in enumerate(ref)])}
        return {"nll": -ctx.model.mean_log_prob(ref)}
    if per_chain:
        return {"nll": -np.array([ctx.model.log_prob(r)[s].mean() for s, r in enumerate(ref)])}
    return {"nll": -ctx.model.log_prob(ref).mean(axis=1)}


def dispersion(ctx: Context, n: int | None = None) -> dict[str, np.ndarray]:
    """Qiao et al.'s (2025) dispersion ratio: trace of the covariance of model samples over the truth's (1 for
    samples of the truth, up to sampling error; below 1 as the model's spread collapses)."""
    x = np.asarray(ctx.samples if n is None else ctx.model.sample(n, ctx.rng), float)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    centred = x - x.mean(axis=1, keepdims=True)
    spread = (centred ** 2).sum(axis=(1, 2)) / max(x.shape[1] - 1, 1)         # trace of the sample covariance
    _, c0 = ctx.source.truth.moments()
    return {"dispersion": spread / np.trace(c0[0])}
