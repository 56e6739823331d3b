"""Gaussian mixture refitted by EM on its own samples (the W1 workload and Shumailov et al.'s GMM).

Each generation fits a K-component mixture by EM (Dempster, Laird & Rubin 1977) on the previous
generation's samples. The default reproduces scikit-learn's ``GaussianMixture`` loop: a fresh
k-means++ start (Arthur & Vassilvitskii 2007, greedy with 2 + log K local trials) refined by
Lloyd's k-means, then EM until the mean log-likelihood changes by less than ``tol`` = 1e-3. That
stopping rule leaves the fit close to the k-means start (about 2 EM iterations on W1), and the
dynamics depend on it: warm-starting EM from the previous generation with the same tolerance moves
each fit much less and slows the drift (see benchmarks/bench_gmm.py for the measurements).

Speed: 1-D fits and samples run in a small C kernel compiled with the system C compiler on first
use (cached in $MODEL_COLLAPSE_CACHE or ~/.cache/model-collapse) and called through ctypes, which
releases the GIL so threads can split the chains. Everything has a NumPy path computing the same
quantities (``backend="numpy"``, used automatically when no compiler is available, for d > 1
and for K > 64); the two agree to rounding. Normals come from the caller's Generator as raw
64-bit words (``bit_generator.random_raw``) turned into N(0, 1) by Box-Muller (1958) in both
paths, more than twice as fast here as ``Generator.standard_normal``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from scipy.special import logsumexp, ndtr

from ..schema import Component

EPS10 = 10 * np.finfo(np.float64).eps   # scikit-learn adds 10 eps to every nk
KMAX = 64                               # largest K of the compiled kernel


class GMMConfig(Component):
    """Config of the ``gmm`` family (defaults reproduce scikit-learn's GaussianMixture)."""

    kind: Literal["gmm"] = "gmm"
    components: int = Field(2, ge=1)
    covariance: Literal["full", "diag"] = "full"
    # "kmeans++": fresh k-means++ + Lloyd start every generation (scikit-learn's default);
    # "warm": EM from the previous generation's fit (k-means++ on the first fit, and again
    # on any chain whose previous fit was degenerate).
    init: Literal["warm", "kmeans++"] = "kmeans++"
    # Stop EM when the mean per-sample log-likelihood changes by less than tol (scikit-learn).
    tol: float = Field(1e-3, gt=0)
    max_iter: int = Field(100, ge=1)
    reg_covar: float = Field(1e-6, ge=0)
    # Lloyd's k-means inside the k-means++ start: scikit-learn's max_iter and relative tol.
    kmeans_iter: int = Field(300, ge=1)
    kmeans_tol: float = Field(1e-4, ge=0)
    # A component whose responsibilities sum to less than min_count points is "empty".
    min_count: float = Field(1.0, ge=0)
    # Absolute variance floor on top of reg_covar, so reg_covar = 0 cannot divide by zero.
    var_floor: float = Field(1e-12, gt=0)
    # Samples come grouped by component (as scikit-learn's sample); shuffle makes their order
    # exchangeable, for regimes that take a prefix.
    shuffle: bool = False
    backend: Literal["auto", "c", "numpy"] = "auto"
    threads: int = Field(0, ge=0)   # 0: every CPU this process may use

    def check(self, exp) -> list[tuple[str, str]]:
        """Each generation must have at least K training points."""
        n = getattr(getattr(exp, "regime", None), "n", None)
        if isinstance(n, int) and n < self.components:
            return [("model.components", f"{self.components} components need at least "
                     f"{self.components} training points per generation (regime n = {n})")]
        return []


def kmeans_trials(k: int) -> int:
    """Local trials per k-means++ centre, as scikit-learn: 2 + floor(log K)."""
    return 2 + int(np.log(k))


class GMMFamily:
    """S independent Gaussian mixtures with K components in d dimensions, advanced together.

    State: weights (S, K), means (S, K, d), covs (S, K, d, d) (diagonal ones too), plus
    ``fitted`` (S,) (a warm start is possible) and ``degenerate`` (S,) of the last fit.
    """

    def __init__(self, cfg: GMMConfig, dim: int, chains: int):
        self.cfg, self.dim, self.chains, self.k = cfg, int(dim), int(chains), cfg.components
        s, k, d = self.chains, self.k, self.dim
        self.weights = np.full((s, k), 1.0 / k)
        self.means = np.zeros((s, k, d))
        self.covs = np.broadcast_to(np.eye(d), (s, k, d, d)).copy()
        self.fitted = np.zeros(s, dtype=bool)
        # last fit, per chain: n_iter, converged, mean log-likelihood (lower bound), degenerate
        self._diag = np.zeros((s, 4))
        self._diag[:, 2] = np.nan
        self._runner = None
        self.last_counts = None

    def __getstate__(self):
        """Pickle/deepcopy without the ctypes runner (rebuilt on first use)."""
        return {**self.__dict__, "_runner": None}

    @property
    def degenerate(self) -> np.ndarray:
        """(S,) bool: the last fit had an empty component or a variance at the floor."""
        return self._diag[:, 3] > 0

    @property
    def n_iter(self) -> np.ndarray:
        """(S,) EM iterations of the last fit."""
        return self._diag[:, 0].astype(np.int64)

    @property
    def converged(self) -> np.ndarray:
        """(S,) bool: the last fit met tol within max_iter."""
        return self._diag[:, 1] > 0

    @property
    def lower_bound(self) -> np.ndarray:
        """(S,) mean log-likelihood of the training data at the last E-step (scikit-learn's lower_bound_)."""
        return self._diag[:, 2].copy()

    @classmethod
    def from_params(cls, weights, means, covs, chains: int, cfg: GMMConfig | None = None) -> "GMMFamily":
        """Every chain holds weights (K,), means (K, d), covs (K, d, d); not marked fitted."""
        w = np.asarray(weights, float)
        m = np.asarray(means, float)
        m = m[:, None] if m.ndim == 1 else m
        c = np.asarray(covs, float).reshape(len(w), m.shape[1], m.shape[1])
        cfg = cfg or GMMConfig(components=len(w))
        if cfg.components != len(w):
            raise ValueError(f"cfg.components = {cfg.components} but {len(w)} weights given")
        fam = cls(cfg, m.shape[1], chains)
        fam.weights[:] = w / w.sum()
        fam.means[:] = m
        fam.covs[:] = c * np.eye(m.shape[1]) if cfg.covariance == "diag" else c
        return fam

    # ------------------------------------------------------------------ fitting

    def fit(self, data, rng: np.random.Generator, init: str | None = None) -> None:
        """EM on each chain's data (S, N, d); init overrides cfg.init ("warm" starts from the current state)."""
        x = np.ascontiguousarray(data, dtype=np.float64)
        if x.ndim == 2 and self.dim == 1:
            x = x[:, :, None]
        s, n, d = x.shape
        if s != self.chains or d != self.dim:
            raise ValueError(f"data {x.shape} does not match (chains={self.chains}, N, d={self.dim})")
        if n < self.k:
            raise ValueError(f"{self.k} components need at least {self.k} points, got {n}")
        mode = init or self.cfg.init
        if mode == "kmeans++":
            fresh = None                                     # every chain
        elif init == "warm":
            fresh = np.zeros(s, bool)                        # explicit: start from the current state
        else:
            fresh = ~self.fitted | self.degenerate          # first fit, or re-seed after a collapse
        runner = self._get_runner()
        if runner is not None:
            runner.fit(self, x, rng, fresh)
        else:
            # Uniforms for k-means++ are drawn on every fit (used or not), as in the kernel, so the
            # stream never depends on which chains restart.
            u = rng.random((s, 1 + (self.k - 1) * kmeans_trials(self.k)))
            fresh = np.ones(s, bool) if fresh is None else fresh
            self.weights, self.means, self.covs, self._diag = _fit_numpy(
                x, u, fresh, self.weights, self.means, self.covs, self.cfg)
        self.fitted = np.ones(s, dtype=bool)

    def _get_runner(self):
        """The compiled 1-D path for this family, or None where the NumPy path applies."""
        if self._runner is None:
            kern = self._kernel()
            self._runner = _Runner1D(kern, self) if kern is not None else False
        return self._runner or None

    def _kernel(self):
        """The compiled kernel if this configuration may use it, else None."""
        if self.cfg.backend == "numpy" or self.dim != 1 or self.k > KMAX:
            if self.cfg.backend == "c" and (self.dim != 1 or self.k > KMAX):
                raise ValueError("backend='c' covers 1-D data with K <= 64 only")
            return None
        kern = load_kernel()
        if kern is None and self.cfg.backend == "c":
            raise RuntimeError(f"backend='c' but the GMM kernel could not be built: {_KERNEL['error']}")
        return kern

    def _threads(self, work: int) -> int:
        """Threads for this much work (points): one below ~50k points, where dispatch costs more."""
        if work < 50_000 or self.chains == 1:
            return 1
        avail = self.cfg.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                     else os.cpu_count() or 1)
        return max(1, min(avail, self.chains))

    # ---------------------------------------------------------------- sampling

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points per chain (S, n, d): component counts ~ Multinomial(n, w), then normals.

        Points come grouped by component, in component order (as scikit-learn's sample);
        cfg.shuffle permutes each chain's points.
        """
        s, d = self.chains, self.dim
        # one chain: 1-D pvals take numpy's fast path (the same draws as the 2-D call)
        counts = rng.multinomial(n, self.weights[0])[None] if s == 1 else rng.multinomial(n, self.weights)
        self.last_counts = counts                                             # (S, K)
        m = s * n * d
        npair = (m + 1) // 2
        raw = rng.bit_generator.random_raw(2 * npair)
        runner = self._get_runner()
        if runner is not None:
            x = runner.sample(self, raw, npair, counts, n)[:m].reshape(s, n, 1)
        else:
            z = box_muller(raw)[:m].reshape(s, n, d)
            x = _affine_numpy(z, counts, self.means, self.covs)
        if self.cfg.shuffle:
            x = rng.permuted(x, axis=1)
        return x

    # ------------------------------------------------------------ evaluation

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Log density of shared points x (M, d) under each chain: (S, M)."""
        x = np.asarray(x, float).reshape(len(x), self.dim)
        lp = _component_logpdf(x[None], self.means, self.covs)               # (S, K, M)
        with np.errstate(divide="ignore"):
            lw = np.log(self.weights)
        return logsumexp(lp + lw[:, :, None], axis=1)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """1-D only: CDF at shared points x (G,): (S, G)."""
        if self.dim != 1:
            raise ValueError("cdf needs 1-D data")
        x = np.asarray(x, float).ravel()
        sd = np.sqrt(self.covs[:, :, 0, 0])
        z = (x[None, None, :] - self.means[:, :, :1]) / sd[:, :, None]       # (S, K, G)
        return np.einsum("sk,skg->sg", self.weights, ndtr(z))

    def moments(self):
        """Mixture mean (S, d) and covariance (S, d, d) (law of total covariance)."""
        w = self.weights[:, :, None]
        mean = (w * self.means).sum(axis=1)
        second = np.einsum("sk,skde->sde", self.weights,
                           self.covs + self.means[:, :, :, None] * self.means[:, :, None, :])
        return mean, second - mean[:, :, None] * mean[:, None, :]

    def params(self) -> dict[str, np.ndarray]:
        """Per component k, sorted by mean along axis 0: mean_k (d > 1: mean_k_j), std_k, weight_k; degenerate.

        std_k is the standard deviation in 1-D and sqrt(trace(cov_k) / d), the root-mean-square
        per-axis standard deviation, in d dimensions.
        """
        order = np.argsort(self.means[:, :, 0], axis=1, kind="stable")
        rows = np.arange(self.chains)[:, None]
        w, m, c = self.weights[rows, order], self.means[rows, order], self.covs[rows, order]
        std = np.sqrt(np.trace(c, axis1=2, axis2=3) / self.dim)
        out = {}
        for k in range(self.k):
            if self.dim == 1:
                out[f"mean_{k}"] = m[:, k, 0]
            else:
                for j in range(self.dim):
                    out[f"mean_{k}_{j}"] = m[:, k, j]
            out[f"std_{k}"] = std[:, k]
            out[f"weight_{k}"] = w[:, k]
        out["degenerate"] = self.degenerate.astype(float)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the mixture parameters, warm-start flags and the last fit's diagnostics."""
        return {"weights": self.weights.copy(), "means": self.means.copy(), "covs": self.covs.copy(),
                "degenerate": self.degenerate, "fitted": self.fitted.copy(), "n_iter": self.n_iter,
                "converged": self.converged, "lower_bound": self.lower_bound}

    def load_state_dict(self, state) -> None:
        """Restore from state_dict()."""
        s, k, d = self.chains, self.k, self.dim
        self.weights = np.array(state["weights"], dtype=np.float64).reshape(s, k)
        self.means = np.array(state["means"], dtype=np.float64).reshape(s, k, d)
        self.covs = np.array(state["covs"], dtype=np.float64).reshape(s, k, d, d)

        def get(key, default):
            """One (S,) column of the state as float, with a default for older states."""
            return np.asarray(state[key] if key in state else default, dtype=np.float64).reshape(s)

        self.fitted = get("fitted", np.ones(s)) > 0
        self._diag = np.stack([get("n_iter", np.zeros(s)), get("converged", np.zeros(s)),
                               get("lower_bound", np.full(s, np.nan)), get("degenerate", np.zeros(s))], axis=1)


# ====================================================================== NumPy path

def box_muller(raw: np.ndarray) -> np.ndarray:
    """Normals from raw 64-bit words (2P,): radius from raw[:P], angle from raw[P:]; out (2P,) = [r cos, r sin]."""
    p = len(raw) // 2
    u = ((raw >> np.uint64(12)) | np.uint64(0x3FF0000000000000)).view(np.float64) - 1.0  # [0, 1), 52 bits
    r = np.sqrt(-2.0 * np.log1p(-u[:p]))
    ang = 2.0 * np.pi * u[p:]
    return np.concatenate([r * np.cos(ang), r * np.sin(ang)])


def _affine_numpy(z, counts, means, covs):
    """Map standard normals (S, n, d) to components laid out in count order: (S, n, d)."""
    s, n, d = z.shape
    k = counts.shape[1]
    comp = np.repeat(np.tile(np.arange(k), s), counts.ravel()).reshape(s, n)   # (S, n)
    rows = np.arange(s)[:, None]
    if d == 1:
        sd = np.sqrt(covs[:, :, 0, 0])
        return means[rows, comp] + sd[rows, comp][:, :, None] * z
    chol = np.linalg.cholesky(covs)                                           # (S, K, d, d)
    return means[rows, comp] + np.einsum("snij,snj->sni", chol[rows, comp], z)


def _component_logpdf(x, means, covs):
    """log N(x; mu_k, Sigma_k) for x (S or 1, M, d): (S, K, M)."""
    d = means.shape[-1]
    if d == 1:
        var = covs[:, :, 0, 0][:, :, None]
        diff = x[:, None, :, 0] - means[:, :, 0][:, :, None]
        return -0.5 * (np.log(2 * np.pi * var) + diff * diff / var)
    chol = np.linalg.cholesky(covs)                                           # (S, K, d, d)
    diff = x[:, None, :, :] - means[:, :, None, :]                            # (S, K, M, d)
    sol = diff @ np.linalg.inv(chol).swapaxes(-1, -2)                         # L^-1 (x - mu), row-wise
    logdet = 2 * np.log(np.diagonal(chol, axis1=2, axis2=3)).sum(-1)          # (S, K)
    return -0.5 * ((sol ** 2).sum(-1) + logdet[:, :, None] + d * np.log(2 * np.pi))


def _sqdist(x, c):
    """Squared distances of points x (S, N, d) to centres c (S, K, d): (S, N, K)."""
    if x.shape[-1] == 1:   # the kernel's exact form, so both paths label the same points
        diff = x - c[:, None, :, 0]
        return diff * diff
    # |x|^2 - 2 x.c + |c|^2 as scikit-learn's k-means, a batched matmul instead of an (S, N, K, d) array
    return (x * x).sum(-1)[:, :, None] - 2 * x @ c.transpose(0, 2, 1) + (c * c).sum(-1)[:, None, :]


def _kmeanspp_numpy(x, u, k):
    """Greedy k-means++ on each chain (scikit-learn's variant) from uniforms u: centres (S, K, d)."""
    s, n, d = x.shape
    t = kmeans_trials(k)
    rows = np.arange(s)
    first = np.minimum((u[:, 0] * n).astype(np.int64), n - 1)
    cen = np.empty((s, k, d))
    cen[:, 0] = x[rows, first]
    dist = ((x - cen[:, :1]) ** 2).sum(-1)                                    # (S, N)
    for c in range(1, k):
        pot = dist.sum(1)
        target = u[:, 1 + (c - 1) * t: 1 + c * t] * pot[:, None]             # (S, T)
        csum = np.cumsum(dist, axis=1)
        cand = np.minimum((csum[:, None, :] < target[:, :, None]).sum(-1), n - 1)   # searchsorted left
        cx = x[rows[:, None], cand]                                           # (S, T, d)
        dc = np.minimum(dist[:, None, :], ((x[:, None, :, :] - cx[:, :, None, :]) ** 2).sum(-1))
        best = np.argmin(dc.sum(-1), axis=1)
        cen[:, c] = cx[rows, best]
        dist = dc[rows, best]
    return cen


def _relocate(x, lab, cen, cnt, sums):
    """Empty clusters take the points farthest from their own centres (scikit-learn's rule), in place."""
    for s in np.nonzero((cnt == 0).any(1))[0]:
        far = np.argsort(-((x[s] - cen[s][lab[s]]) ** 2).sum(-1), kind="stable")
        for j, e in enumerate(np.nonzero(cnt[s] == 0)[0]):
            i = far[j]
            cnt[s, lab[s, i]] -= 1
            sums[s, lab[s, i]] -= x[s, i] - cen[s, lab[s, i]]
            cnt[s, e] = 1
            sums[s, e] = x[s, i] - cen[s, e]


def _lloyd_numpy(x, cen, max_iter, tol):
    """Lloyd's k-means with scikit-learn's stopping rule: labels (S, N) of the final partition and
    the centres (S, K, d) that partition was assigned from."""
    s, n, d = x.shape
    k = cen.shape[1]
    cen = cen.copy()
    tol = np.broadcast_to(np.asarray(tol, float), (s,))
    lab = np.full((s, n), -1)
    active = np.ones(s, bool)
    strict = np.zeros(s, bool)
    used = cen.copy()
    onehot_k = np.arange(k)
    for _ in range(max_iter):
        a = np.nonzero(active)[0]
        if len(a) == 0:
            break
        xa, ca = x[a], cen[a]
        new = np.argmin(_sqdist(xa, ca), axis=2)                              # ties: first centre
        oh = (new[:, :, None] == onehot_k).astype(float)                      # (A, N, K)
        cnt = oh.sum(1)
        sums = oh.transpose(0, 2, 1) @ xa - cnt[:, :, None] * ca               # shifted: sum (x - c)
        _relocate(xa, new, ca, cnt, sums)
        nc = np.where(cnt[:, :, None] > 0, ca + sums / np.maximum(cnt, 1)[:, :, None], ca)
        shift = ((nc - ca) ** 2).sum((1, 2))
        same = (new == lab[a]).all(1)
        lab[a], cen[a], used[a] = new, nc, ca
        strict[a] = same
        active[a] = ~(same | (shift <= tol[a]))
    redo = ~strict
    if redo.any():
        lab[redo] = np.argmin(_sqdist(x[redo], cen[redo]), axis=2)
        used[redo] = cen[redo]
    return lab, used


def _mstep_numpy(x, resp, shift, cfg, normalise):
    """Weights, means, covs from responsibilities (S, N, K), sums taken around shift (S, K, d)."""
    s, n, d = x.shape
    nk = resp.sum(1)                                                          # (S, K)
    nke = nk + EPS10
    rt = resp.transpose(0, 2, 1)                                              # (S, K, N)
    s1 = rt @ x - nk[:, :, None] * shift                                     # sum r (x - c): (S, K, d)
    delta = s1 / nke[:, :, None]
    means = shift + delta
    s2 = np.empty((s, resp.shape[2], d, d))
    for k in range(resp.shape[2]):   # sum r (x - c)(x - c)^T per component, as batched matmuls
        dxk = x - shift[:, k, None, :]                                        # (S, N, d)
        s2[:, k] = (rt[:, k, :, None] * dxk).transpose(0, 2, 1) @ dxk
    if cfg.covariance == "diag" or d == 1:
        s2 = np.diagonal(s2, axis1=2, axis2=3)
        var = (s2 - 2 * delta * s1 + delta ** 2 * nk[:, :, None]) / nke[:, :, None]
        var_raw = np.maximum(var, 0.0)
        covs = np.maximum(var_raw + cfg.reg_covar, cfg.var_floor)[..., None] * np.eye(d)
        low = var_raw.min(-1)
    else:
        outer = delta[..., :, None] * s1[..., None, :]
        raw = (s2 - outer - outer.swapaxes(-1, -2)
               + nk[:, :, None, None] * delta[..., :, None] * delta[..., None, :]) / nke[:, :, None, None]
        raw = 0.5 * (raw + raw.swapaxes(-1, -2))
        ev, vec = np.linalg.eigh(raw)
        low = ev.min(-1)
        covs = raw + cfg.reg_covar * np.eye(d)
        bad = ev.min(-1) + cfg.reg_covar < cfg.var_floor
        if bad.any():   # clip eigenvalues so the covariance stays positive definite
            evb = np.maximum(ev[bad] + cfg.reg_covar, cfg.var_floor)
            covs[bad] = (vec[bad] * evb[..., None, :]) @ vec[bad].swapaxes(-1, -2)
    w = nke / (nke.sum(1, keepdims=True) if normalise else n)
    return w, means, covs, nk, low


def _estep_numpy(x, w, means, covs):
    """Responsibilities (S, N, K) and mean log-likelihood (S,) at the given parameters."""
    lp = _component_logpdf(x, means, covs) + np.log(np.maximum(w, 1e-300))[:, :, None]   # (S, K, N)
    lse = logsumexp(lp, axis=1)                                               # (S, N)
    return np.exp(lp - lse[:, None, :]).transpose(0, 2, 1), lse.mean(1)


def _fit_numpy(x, u, fresh, w0, m0, c0, cfg):
    """The NumPy fit of every chain: (weights, means, covs, diag) with diag (S, 4) as the kernel's."""
    s, n, d = x.shape
    k = w0.shape[1]
    w, means, covs = w0.copy(), m0.copy(), c0.copy()
    nk = np.zeros((s, k))
    low = np.zeros((s, k))
    f = np.nonzero(fresh)[0]
    if len(f):
        xf = x[f]
        cen = _kmeanspp_numpy(xf, u[f], k)
        tol = cfg.kmeans_tol * xf.var(axis=1).mean(-1)
        lab, shift = _lloyd_numpy(xf, cen, cfg.kmeans_iter, tol)
        resp = (lab[:, :, None] == np.arange(k)).astype(float)
        w[f], means[f], covs[f], nk[f], low[f] = _mstep_numpy(xf, resp, shift, cfg, False)
    n_iter = np.zeros(s)
    conv = np.zeros(s, bool)
    lb = np.full(s, -np.inf)
    active = np.ones(s, bool)
    for it in range(1, cfg.max_iter + 1):
        a = np.nonzero(active)[0]
        if len(a) == 0:
            break
        resp, ll = _estep_numpy(x[a], w[a], means[a], covs[a])
        w[a], means[a], covs[a], nk[a], low[a] = _mstep_numpy(x[a], resp, means[a], cfg, True)
        done = np.abs(ll - lb[a]) < cfg.tol
        lb[a], n_iter[a] = ll, it
        conv[a] = done
        active[a] = ~done
    degen = (nk < cfg.min_count).any(1) | (low < max(cfg.reg_covar, cfg.var_floor)).any(1)
    bad = ~(np.isfinite(w).all(1) & np.isfinite(means).all((1, 2)) & np.isfinite(covs).all((1, 2, 3)))
    w[bad], means[bad], covs[bad] = w0[bad], m0[bad], c0[bad]   # never hand on NaN: keep the last fit
    return w, means, covs, np.stack([n_iter, conv, lb, degen | bad], axis=1).astype(float)


# ====================================================================== compiled path

_C_SOURCE = r"""
/* Kernels of model_collapse.families.gmm for 1-D mixtures, one chain per outer loop trip.
   gmm.py holds a NumPy path computing the same quantities. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLK 64        /* block of points; a product of BLK sums in [1, K <= 64] fits a double */
#define KMAX 64
#define EPS10 (10 * 2.220446049250313e-16)   /* scikit-learn adds 10 eps to every nk */

typedef struct {
    int64_t n, k, trials, max_iter, km_max_iter;
    double tol, reg_covar, var_floor, km_tol, min_count;
} opts_t;

typedef double v4d __attribute__((vector_size(32)));

static inline uint64_t as_u(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
static inline double as_d(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }

/* exp(x) for x <= 0 (clamped at -700): x = n ln2 + r, |r| <= ln2 / 2, degree-10 Chebyshev
   interpolant of exp(r) (max relative error 4e-16), 2^n built in the exponent bits. Branch-free
   so that gcc vectorises the loops calling it. */
static inline double exp_neg(double x) {
    x = x < -700.0 ? -700.0 : x;
    double kd = x * 0x1.71547652b82fep+0 + 0x1.8p52;
    uint64_t ki = as_u(kd);
    double n = kd - 0x1.8p52;
    double r = (x - n * 0x1.62e42fef00000p-1) - n * 0x1.473de6af278edp-34;
    double p = 0x1.28a2c0a7209fbp-22;
    p = p * r + 0x1.72faf024b693bp-19;
    p = p * r + 0x1.a019a66a75dd4p-16;
    p = p * r + 0x1.a01978c6baf81p-13;
    p = p * r + 0x1.6c16c17f43a58p-10;
    p = p * r + 0x1.1111112dd67c5p-7;
    p = p * r + 0x1.55555555520afp-5;
    p = p * r + 0x1.555555554b757p-3;
    p = p * r + 0x1.0000000000005p-1;
    p = p * r + 0x1.000000000001ep+0;
    p = p * r + 1.0;
    return p * as_d((ki << 52) + 0x3ff0000000000000ULL);
}

/* log(v) for normal v > 0: v = 2^e m, m in [sqrt(1/2), sqrt(2)) by integer arithmetic on the bits,
   then log(1 + f) = f - s (f - z q(z)), s = f / (2 + f), z = s^2, q a degree-6 Chebyshev fit. */
static inline double log_pos(double v) {
    uint64_t b = as_u(v) + (0x3ff0000000000000ULL - 0x3fe6a09e667f3bcdULL);
    double e = as_d(0x4330000000000000ULL | (b >> 52)) - 0x1p52 - 1023.0;
    double m = as_d((b & 0x000fffffffffffffULL) + 0x3fe6a09e667f3bcdULL);
    double f = m - 1.0, s = f / (2.0 + f), z = s * s;
    double q = 0x1.2b5900de53b32p-3;
    q = q * z + 0x1.39fe51a7c18f9p-3;
    q = q * z + 0x1.7462b51cb66b1p-3;
    q = q * z + 0x1.c71c62e3f11e6p-3;
    q = q * z + 0x1.2492492df281ap-2;
    q = q * z + 0x1.99999999952d7p-2;
    q = q * z + 0x1.5555555555558p-1;
    return e * 0x1.62e42fef00000p-1 + (f - s * (f - z * q) + e * 0x1.473de6af278edp-34);
}

/* Box-Muller (1958) from raw 64-bit words: pair j takes its radius from raw[j] and its angle
   from raw[npair + j]; out[j] = r cos, out[npair + j] = r sin. The angle 2 pi u is reduced
   exactly to a quarter turn q plus |a| <= pi / 4, where degree-6 (in a^2) fits give sin, cos. */
static void box_muller(const uint64_t *raw, int64_t npair, int64_t p0, int64_t p1, double *out) {
#pragma omp simd
    for (int64_t j = p0; j < p1; j++) {
        double u1 = as_d((raw[j] >> 12) | 0x3ff0000000000000ULL) - 1.0;
        double u2 = as_d((raw[npair + j] >> 12) | 0x3ff0000000000000ULL) - 1.0;
        double rad = sqrt(-2.0 * log_pos(1.0 - u1));
        double kd = 4.0 * u2 + 0x1.8p52;
        uint64_t q = as_u(kd) & 3;
        double a = (4.0 * u2 - (kd - 0x1.8p52)) * 0x1.921fb54442d18p+0, z = a * a;
        double sn = 0x1.5d87699eb6a31p-33;
        sn = sn * z - 0x1.ae5e37e850d20p-26;
        sn = sn * z + 0x1.71de3530aa14dp-19;
        sn = sn * z - 0x1.a01a019ba956dp-13;
        sn = sn * z + 0x1.111111110f3dcp-7;
        sn = sn * z - 0x1.5555555555543p-3;
        sn = a + a * z * sn;
        double cs = 0x1.1b8af554d31b3p-29;
        cs = cs * z - 0x1.27df400a3c797p-22;
        cs = cs * z + 0x1.a019f7fd878ecp-16;
        cs = cs * z - 0x1.6c16c163c5a72p-10;
        cs = cs * z + 0x1.555555554e7ebp-5;
        cs = cs * z - 0x1.fffffffffff79p-2;
        cs = 1.0 + z * cs;
        uint64_t odd = 0 - (q & 1), us = as_u(sn), uc = as_u(cs);
        uint64_t c0 = (us & odd) | (uc & ~odd), s0 = (uc & odd) | (us & ~odd);
        out[j] = rad * as_d(c0 ^ ((((q + 1) >> 1) & 1) << 63));
        out[npair + j] = rad * as_d(s0 ^ (((q >> 1) & 1) << 63));
    }
}

/* Sampling, in two phases so threads can split each: normals for pairs [p0, p1), then for chains
   [s0, s1) the slots of component k (counts[s, k] of them, in component order) get mu + sd z. */
void gmm_sample1d(const uint64_t *raw, int64_t npair, int64_t p0, int64_t p1, double *out,
                  int64_t s0, int64_t s1, int64_t n, int64_t K, const int64_t *counts,
                  const double *mu, const double *sd) {
    box_muller(raw, npair, p0, p1, out);
    for (int64_t s = s0; s < s1; s++) {
        double *zs = out + s * n;
        for (int64_t k = 0, at = 0; k < K; k++) {
            double m = mu[s * K + k], d = sd[s * K + k];
            int64_t c = counts[s * K + k];
#pragma omp simd
            for (int64_t j = 0; j < c; j++) zs[at + j] = m + d * zs[at + j];
            at += c;
        }
    }
}

/* log of a weight; a zero weight (a loaded state, never an M-step) stays finite */
static inline double logw(double w) { return log(w > 1e-300 ? w : 1e-300); }

/* Product of n doubles in four independent lanes (gcc does not vectorise a '*' reduction). */
static double prod(const double *v, int64_t n) {
    v4d p = {1.0, 1.0, 1.0, 1.0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) { v4d q; memcpy(&q, v + i, 32); p *= q; }
    double r = (p[0] * p[1]) * (p[2] * p[3]);
    for (; i < n; i++) r *= v[i];
    return r;
}

/* Greedy k-means++ (Arthur & Vassilvitskii 2007) with T local trials per centre, as scikit-learn.
   D (n) holds squared distances to the nearest centre, bs (n / BLK) their block sums, which make
   each cumulative-sum search O(n / BLK + BLK). Returns the data variance (for Lloyd's tol). */
static double kmeanspp(const double *x, int64_t n, int64_t K, int64_t T, const double *u,
                       double *restrict D, double *restrict bs, double *cen, double *xbar) {
    int64_t first = (int64_t)(u[0] * n), nb = n / BLK;
    if (first > n - 1) first = n - 1;
    double c = x[first], pot = 0, lin = 0;
    cen[0] = c;
    for (int64_t b = 0; b <= nb; b++) {
        double s = 0, l = 0;
#pragma omp simd reduction(+:s, l)
        for (int64_t j = b * BLK; j < (b < nb ? b * BLK + BLK : n); j++) {
            double e = x[j] - c;
            D[j] = e * e; s += e * e; l += e;
        }
        if (b < nb) bs[b] = s;
        pot += s; lin += l;
    }
    double var = (pot - lin * lin / n) / n;   /* moments about a data point: no cancellation */
    *xbar = c + lin / n;
    for (int64_t k = 1; k < K; k++) {
        double best_pot = INFINITY;
        int64_t best = 0;
        for (int64_t t = 0; t < T; t++) {
            /* first index whose running sum of D reaches u * pot (searchsorted, side=left) */
            double target = u[1 + (k - 1) * T + t] * pot, acc = 0;
            int64_t b = 0, cand = n - 1;
            while (b < nb && acc + bs[b] < target) acc += bs[b++];
            for (int64_t i = b * BLK; i < n; i++) {
                acc += D[i];
                if (acc >= target) { cand = i; break; }
            }
            double cc = x[cand], p = 0;
#pragma omp simd reduction(+:p)
            for (int64_t j = 0; j < n; j++) {
                double d = (x[j] - cc) * (x[j] - cc);
                p += d < D[j] ? d : D[j];
            }
            if (p < best_pot) { best_pot = p; best = cand; }
        }
        c = x[best];
        cen[k] = c;
        pot = best_pot;   /* scikit-learn carries the winning candidate's potential */
        if (k + 1 < K) {
            for (int64_t b = 0; b < nb; b++) {
                double s = 0;
#pragma omp simd reduction(+:s)
                for (int64_t j = b * BLK; j < b * BLK + BLK; j++) {
                    double d = (x[j] - c) * (x[j] - c);
                    D[j] = d < D[j] ? d : D[j];
                    s += D[j];
                }
                bs[b] = s;
            }
            for (int64_t j = nb * BLK; j < n; j++) {
                double d = (x[j] - c) * (x[j] - c);
                D[j] = d < D[j] ? d : D[j];
            }
        }
    }
    return var;
}

/* Nearest-centre labels (first minimum wins, as scikit-learn) and the partition's shifted sums
   cnt, a = sum (x - c_k), q = sum (x - c_k)^2 per label; returns how many labels changed. */
static int64_t assign(const double *x, int64_t n, int64_t K, const double *c, double *lab,
                      double *cnt, double *a, double *q) {
    int64_t changed = 0;
    if (K == 2) {
        double c0 = c[0], c1 = c[1], n1 = 0, a0 = 0, q0 = 0, a1 = 0, q1 = 0;
#pragma omp simd reduction(+:n1, a0, q0, a1, q1, changed)
        for (int64_t i = 0; i < n; i++) {
            double e0 = x[i] - c0, e1 = x[i] - c1;
            int up = e1 * e1 < e0 * e0;
            double m = up ? 1.0 : 0.0, f0 = up ? 0.0 : e0, f1 = up ? e1 : 0.0;
            changed += lab[i] != m;
            lab[i] = m;
            n1 += m; a0 += f0; q0 += f0 * f0; a1 += f1; q1 += f1 * f1;
        }
        cnt[0] = (double)n - n1; cnt[1] = n1; a[0] = a0; a[1] = a1; q[0] = q0; q[1] = q1;
        return changed;
    }
    for (int64_t k = 0; k < K; k++) cnt[k] = a[k] = q[k] = 0;
    for (int64_t i = 0; i < n; i++) {
        double bd = (x[i] - c[0]) * (x[i] - c[0]);
        int64_t b = 0;
        for (int64_t k = 1; k < K; k++) {
            double d = (x[i] - c[k]) * (x[i] - c[k]);
            if (d < bd) { bd = d; b = k; }
        }
        changed += lab[i] != (double)b;
        lab[i] = (double)b;
        cnt[b] += 1; a[b] += x[i] - c[b]; q[b] += bd;
    }
    return changed;
}

/* Empty clusters take the points farthest from their own centres (scikit-learn's rule); only
   the sums that move the centres change, the labels stay (as scikit-learn). */
static void relocate(const double *x, int64_t n, int64_t K, const double *c, const double *lab,
                     double *cnt, double *a) {
    int64_t taken[KMAX], ntaken = 0;
    for (int64_t e = 0; e < K; e++) {
        if (cnt[e] > 0) continue;
        double bd = -1;
        int64_t bi = 0;
        for (int64_t i = 0; i < n; i++) {
            double d = (x[i] - c[(int64_t)lab[i]]) * (x[i] - c[(int64_t)lab[i]]);
            int used = 0;
            for (int64_t t = 0; t < ntaken; t++) used |= taken[t] == i;
            if (d > bd && !used) { bd = d; bi = i; }
        }
        taken[ntaken++] = bi;
        int64_t from = (int64_t)lab[bi];
        cnt[from] -= 1; a[from] -= x[bi] - c[from];
        cnt[e] = 1; a[e] = x[bi] - c[e];
    }
}

/* Lloyd's k-means with scikit-learn's stopping rule (labels unchanged, or centre shift <= tol).
   Leaves the final partition's sums (nk, a, q) taken around sh. */
static void lloyd(const double *x, int64_t n, int64_t K, double *c, double *lab, int64_t max_iter,
                  double tol, double *nk, double *a, double *q, double *sh) {
    double cnt2[KMAX], a2[KMAX];
    int strict = 0;
    for (int64_t i = 0; i < n; i++) lab[i] = -1.0;
    for (int64_t it = 0; it < max_iter; it++) {
        int64_t changed = assign(x, n, K, c, lab, nk, a, q);
        int empty = 0;
        for (int64_t k = 0; k < K; k++) { sh[k] = c[k]; cnt2[k] = nk[k]; a2[k] = a[k]; empty |= nk[k] == 0; }
        if (empty) relocate(x, n, K, c, lab, cnt2, a2);
        double shift = 0;
        for (int64_t k = 0; k < K; k++) {
            double nc = cnt2[k] > 0 ? c[k] + a2[k] / cnt2[k] : c[k];
            shift += (nc - c[k]) * (nc - c[k]);
            c[k] = nc;
        }
        if (changed == 0) { strict = 1; break; }
        if (shift <= tol) break;
    }
    if (!strict) {
        assign(x, n, K, c, lab, nk, a, q);
        for (int64_t k = 0; k < K; k++) sh[k] = c[k];
    }
}

/* M-step from sums around the current means mu (updated in place); weights nk / N for the
   k-means start, nk / sum(nk) in EM, as scikit-learn. var_raw is the variance before reg_covar. */
static void mstep(int64_t n, int64_t K, const double *nk, const double *a, const double *q,
                  double *w, double *mu, double *var, double *var_raw, int normalise,
                  const opts_t *o) {
    double tot = 0;
    for (int64_t k = 0; k < K; k++) {
        double nke = nk[k] + EPS10, d = a[k] / nke;
        double vr = (q[k] - 2.0 * d * a[k] + d * d * nk[k]) / nke;
        vr = vr > 0 ? vr : 0;
        double v = vr + o->reg_covar;
        var_raw[k] = vr;
        var[k] = v > o->var_floor ? v : o->var_floor;
        mu[k] += d;
        w[k] = nke;
        tot += nke;
    }
    double den = normalise ? tot : (double)n;
    for (int64_t k = 0; k < K; k++) w[k] /= den;
}

/* Two-component E-step fused into one pass (the usual case). With e = x - mu1 the log-odds
   d = L1 - L0 is a quadratic in e, and the responsibility of the likelier side is 1 / (1 + t) with
   t = exp(-|d|): one exp per point. log p = L1 + max(-d, 0) + log(1 + t), and the logs of a block
   of 512 points are one log of the product of (1 + t) in [1, 2]. With direct = 0 only component 1's
   sums are accumulated and component 0's follow from the data moments (xbar, ss = sum (x - xbar)^2),
   which saves a quarter of the work; the caller redoes the pass with direct = 1 when that
   subtraction would lose digits (a small component 0). Returns sum log p; nk, a, q get the
   responsibility sums around the current means. */
static inline __attribute__((always_inline)) double
estep2_impl(const double *x, int64_t n, const double *w, const double *mu, const double *var,
            double xbar, double ss, double *nk, double *a, double *q, const int direct) {
    double m0 = mu[0], m1 = mu[1], dl = m1 - m0;
    double c0 = logw(w[0]) - 0.5 * log(6.283185307179586 * var[0]), h0 = -0.5 / var[0];
    double c1 = logw(w[1]) - 0.5 * log(6.283185307179586 * var[1]), h1 = -0.5 / var[1];
    double P = h1 - h0, Q = -2.0 * h0 * dl, R = c1 - c0 - h0 * dl * dl;
    double A0 = 0, B0 = 0, Q0 = 0, A1 = 0, B1 = 0, Q1 = 0, LM = 0, LL = 0, tt[512];
    for (int64_t b = 0; b < n; b += 512) {
        int64_t end = n - b < 512 ? n : b + 512;
        double lm = 0, a0 = 0, b0 = 0, q0 = 0, a1 = 0, b1 = 0, q1 = 0;
#pragma omp simd reduction(+:lm, a0, b0, q0, a1, b1, q1)
        for (int64_t i = b; i < end; i++) {
            double e = x[i] - m1;
            double d = (P * e + Q) * e + R, ad = fabs(d);
            double t = exp_neg(-ad), s = 1.0 + t, iv = 1.0 / s, rs = t * iv;
            int up = d > 0;
            double r1 = up ? iv : rs;
            lm += up ? 0.0 : ad;
            tt[i - b] = s;
            double p1 = r1 * e;
            a1 += r1; b1 += p1; q1 += p1 * e;
            if (direct) {
                double r0 = up ? rs : iv, e0 = x[i] - m0, p0 = r0 * e0;
                a0 += r0; b0 += p0; q0 += p0 * e0;
            }
        }
        LL += log(prod(tt, end - b));
        LM += lm; A0 += a0; B0 += b0; Q0 += q0; A1 += a1; B1 += b1; Q1 += q1;
    }
    double g0 = xbar - m0, g1 = xbar - m1;
    if (!direct) {   /* sums over component 0 = sums over all points - sums over component 1 */
        A0 = (double)n - A1;
        B0 = (double)n * g0 - (B1 + dl * A1);
        Q0 = ss + (double)n * g0 * g0 - (Q1 + 2.0 * dl * B1 + dl * dl * A1);
    }
    nk[0] = A0; a[0] = B0; q[0] = Q0; nk[1] = A1; a[1] = B1; q[1] = Q1;
    return (double)n * c1 + h1 * (ss + (double)n * g1 * g1) + LM + LL;
}

static double estep2(const double *x, int64_t n, const double *w, const double *mu, const double *var,
                     double xbar, double ss, double *nk, double *a, double *q) {
    double ll = estep2_impl(x, n, w, mu, var, xbar, ss, nk, a, q, 0);
    double g0 = xbar - mu[0], tot0 = ss + (double)n * g0 * g0;
    if (nk[0] < 1e-3 * (double)n || q[0] < 1e-6 * tot0)   /* derived sums too inexact: do it directly */
        ll = estep2_impl(x, n, w, mu, var, xbar, ss, nk, a, q, 1);
    return ll;
}

/* Mean and sum of squared deviations of x (n), about x[0] (no cancellation for any offset). */
static void moments(const double *x, int64_t n, double *xbar, double *ss) {
    double c = x[0], l = 0, s = 0;
#pragma omp simd reduction(+:l, s)
    for (int64_t i = 0; i < n; i++) { double e = x[i] - c; l += e; s += e * e; }
    *xbar = c + l / n;
    *ss = s - l * l / n;
}

/* General-K E-step over blocks of BLK points (log-sum-exp with one exp per point and component). */
static double estep(const double *x, int64_t n, int64_t K, const double *w, const double *mu,
                    const double *var, double *nk, double *a, double *q, double *buf) {
    double cst[KMAX], hp[KMAX];
    double *restrict L = buf, *restrict E = buf + K * BLK, *restrict M = E + K * BLK;
    double *restrict S = M + BLK;
    for (int64_t k = 0; k < K; k++) {
        cst[k] = logw(w[k]) - 0.5 * log(6.283185307179586 * var[k]);
        hp[k] = -0.5 / var[k];
        nk[k] = a[k] = q[k] = 0;
    }
    double ll = 0;
    for (int64_t b = 0; b < n; b += BLK) {
        int64_t nb = n - b < BLK ? n - b : BLK;
        const double *xb = x + b;
        for (int64_t k = 0; k < K; k++) {
            double m = mu[k], c = cst[k], h = hp[k];
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) { double e = xb[i] - m; L[k * BLK + i] = c + h * e * e; }
        }
#pragma omp simd
        for (int64_t i = 0; i < nb; i++) { M[i] = L[i]; S[i] = 0; }
        for (int64_t k = 1; k < K; k++) {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) M[i] = L[k * BLK + i] > M[i] ? L[k * BLK + i] : M[i];
        }
        for (int64_t k = 0; k < K; k++) {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) {
                E[k * BLK + i] = exp_neg(L[k * BLK + i] - M[i]);
                S[i] += E[k * BLK + i];
            }
        }
        double lm = 0;
#pragma omp simd reduction(+:lm)
        for (int64_t i = 0; i < nb; i++) lm += M[i];
        ll += lm + log(prod(S, nb));
#pragma omp simd
        for (int64_t i = 0; i < nb; i++) S[i] = 1.0 / S[i];
        for (int64_t k = 0; k < K; k++) {
            double s0 = 0, s1 = 0, s2 = 0, m = mu[k];
#pragma omp simd reduction(+:s0, s1, s2)
            for (int64_t i = 0; i < nb; i++) {
                double r = E[k * BLK + i] * S[i], e = xb[i] - m, p = r * e;
                s0 += r; s1 += p; s2 += p * e;
            }
            nk[k] += s0; a[k] += s1; q[k] += s2;
        }
    }
    return ll;
}

/* Fit chains [s0, s1) of X (S, n): k-means++ and Lloyd start where fresh[s], then EM (Dempster
   et al. 1977) with scikit-learn's loop: stop once the mean log-likelihood moves by < tol.
   W, MU, V (S, K) hold the start (warm) and receive the fit; diag (S, 4): n_iter, converged,
   lower bound, degenerate. scratch: n + n / BLK + 2 (K + 1) BLK doubles. */
void gmm_fit1d(const double *X, int64_t s0, int64_t s1, const opts_t *o, const double *U,
               const uint8_t *fresh, double *W, double *MU, double *V, double *diag,
               double *scratch) {
    int64_t n = o->n, K = o->k, T = o->trials, nu = 1 + (K - 1) * T;
    double nk[KMAX], a[KMAX], q[KMAX], vr[KMAX], w0[KMAX], m0[KMAX], v0[KMAX];
    for (int64_t s = s0; s < s1; s++) {
        const double *x = X + s * n;
        double *w = W + s * K, *mu = MU + s * K, *var = V + s * K, *dg = diag + s * 4;
        for (int64_t k = 0; k < K; k++) { w0[k] = w[k]; m0[k] = mu[k]; v0[k] = var[k]; }
        double xbar = 0, ss = 0;
        if (fresh[s]) {
            double c[KMAX];
            double xv = kmeanspp(x, n, K, T, U + s * nu, scratch, scratch + n, c, &xbar);
            ss = xv * n;
            lloyd(x, n, K, c, scratch, o->km_max_iter, o->km_tol * xv, nk, a, q, mu);
            mstep(n, K, nk, a, q, w, mu, var, vr, 0, o);
        } else if (K == 2) {
            moments(x, n, &xbar, &ss);
        }
        double lb = -INFINITY;
        int64_t it = 0;
        int conv = 0;
        while (it < o->max_iter) {
            it++;
            double prev = lb;
            double ll = K == 2 ? estep2(x, n, w, mu, var, xbar, ss, nk, a, q)
                               : estep(x, n, K, w, mu, var, nk, a, q, scratch);
            mstep(n, K, nk, a, q, w, mu, var, vr, 1, o);
            lb = ll / n;
            if (fabs(lb - prev) < o->tol) { conv = 1; break; }
        }
        int degen = 0, finite = 1;
        double low = o->reg_covar > o->var_floor ? o->reg_covar : o->var_floor;
        for (int64_t k = 0; k < K; k++) {
            degen |= nk[k] < o->min_count || vr[k] < low;
            finite &= isfinite(w[k]) && isfinite(mu[k]) && isfinite(var[k]);
        }
        if (!finite) {   /* never hand on NaN: keep the previous fit and flag the chain */
            for (int64_t k = 0; k < K; k++) { w[k] = w0[k]; mu[k] = m0[k]; var[k] = v0[k]; }
            degen = 1;
        }
        dg[0] = (double)it; dg[1] = conv; dg[2] = lb; dg[3] = degen;
    }
}
"""

_CFLAGS = ["-O3", "-march=native", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno",
           "-fno-trapping-math", "-fopenmp-simd"]


class _Opts(ctypes.Structure):
    _fields_ = ([(f, ctypes.c_int64) for f in ("n", "k", "trials", "max_iter", "km_max_iter")]
                + [(f, ctypes.c_double) for f in ("tol", "reg_covar", "var_floor", "km_tol", "min_count")])


def cache_dir() -> Path:
    """Where compiled kernels are kept: $MODEL_COLLAPSE_CACHE or ~/.cache/model-collapse."""
    return Path(os.environ.get("MODEL_COLLAPSE_CACHE") or Path.home() / ".cache" / "model-collapse")


def _build_key(cc: str) -> str:
    """Hash of everything the binary depends on: source, flags, compiler, CPU features."""
    h = hashlib.sha256(_C_SOURCE.encode())
    h.update(" ".join([cc] + _CFLAGS).encode())
    try:
        h.update(subprocess.run([cc, "--version"], capture_output=True, timeout=30).stdout)
    except (OSError, subprocess.SubprocessError):
        pass
    h.update(platform.machine().encode())
    try:   # -march=native: a binary built for one CPU must not be reused on another
        flags = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith(("flags", "model name"))]
        h.update("\n".join(sorted(set(flags))).encode())
    except OSError:
        pass
    return h.hexdigest()[:16]


def _compile() -> ctypes.CDLL:
    """Build (or reuse) the shared library; raises on failure."""
    cc = os.environ.get("CC", "cc")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    lib = folder / f"gmm_kernel_{_build_key(cc)}.so"
    if not lib.exists():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            src = Path(tmp) / "gmm_kernel.c"
            src.write_text(_C_SOURCE)
            out = Path(tmp) / "gmm_kernel.so"
            for flags in (_CFLAGS, [f for f in _CFLAGS if f != "-march=native"]):   # some compilers lack it
                res = subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"],
                                     capture_output=True, text=True, timeout=300)
                if res.returncode == 0:
                    break
            else:
                raise RuntimeError(f"{cc} failed: {res.stderr.strip()[-2000:]}")
            os.replace(out, lib)   # atomic: concurrent builders never see half a file
    return ctypes.CDLL(str(lib))


def _addr(a: np.ndarray) -> int:
    """Address of a C-contiguous array's data (the buffer protocol is ~4x cheaper than a.ctypes.data)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError, BufferError):   # read-only or empty
        return a.ctypes.data


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges covering range(total), at most `parts` of them."""
    step = -(-total // parts)
    return [(lo, min(lo + step, total)) for lo in range(0, total, step)]


class _Kernel:
    """ctypes handles of the compiled kernel and a shared thread pool (ctypes drops the GIL)."""

    def __init__(self, dll: ctypes.CDLL):
        p, i = ctypes.c_void_p, ctypes.c_int64
        self.fit1d = dll.gmm_fit1d
        self.fit1d.argtypes = [p, i, i, p, p, p, p, p, p, p, p]
        self.fit1d.restype = None
        self.sample1d = dll.gmm_sample1d
        self.sample1d.argtypes = [p, i, i, i, p, i, i, i, i, p, p, p]
        self.sample1d.restype = None
        self._pool = None
        self._lock = threading.Lock()

    def map(self, fn, parts) -> None:
        """fn(lo, hi) for every part; parts beyond the first run on the pool."""
        if len(parts) == 1:
            fn(*parts[0])
            return
        with self._lock:
            if self._pool is None or self._pool._max_workers < len(parts):
                self._pool = ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="gmm")
        list(self._pool.map(lambda part: fn(*part), parts))


class _Runner1D:
    """One family's calls into the kernel, with buffers and pointers kept between generations
    (at one chain, Python overhead is a sizeable share of the ~0.1 ms a generation takes)."""

    def __init__(self, kern: _Kernel, fam: GMMFamily):
        s, k, cfg = fam.chains, fam.k, fam.cfg
        self.kern, self.k = kern, k
        self.u = np.empty((s, 1 + (k - 1) * kmeans_trials(k)))
        self.all_fresh = np.ones(s, np.uint8)
        self.fresh = np.empty(s, np.uint8)
        self.ptr = {name: _addr(getattr(self, name)) for name in ("u", "all_fresh", "fresh")}
        self.opts, self.scratch, self.n = None, {}, None
        self.cfg = cfg

    def _opts(self, n: int):
        """The kernel's options struct for N = n points."""
        if self.n != n:
            c = self.cfg
            self.opts = _Opts(n, self.k, kmeans_trials(self.k), c.max_iter, c.kmeans_iter, c.tol,
                              c.reg_covar, c.var_floor, c.kmeans_tol, c.min_count)
            self.n = n
        return ctypes.byref(self.opts)

    def _scratch(self, part: int, n: int) -> int:
        """Address of a per-thread work buffer of n + n / 64 + 2 (K + 1) 64 doubles."""
        size = n + n // 64 + 2 * (self.k + 1) * 64 + 8
        buf = self.scratch.get(part)
        if buf is None or len(buf) < size:
            buf = self.scratch[part] = np.empty(size)
        return _addr(buf)

    def fit(self, fam: GMMFamily, x: np.ndarray, rng: np.random.Generator, fresh) -> None:
        """Fit (S, N, 1) data in place of fam's parameters (new arrays, the old ones untouched)."""
        s, n = x.shape[:2]
        rng.random(out=self.u)   # drawn on every fit (used or not), as the NumPy path
        if fresh is None:
            pf = self.ptr["all_fresh"]
        else:
            self.fresh[:] = fresh
            pf = self.ptr["fresh"]
        w, mu, var = fam.weights.copy(), fam.means.copy(), fam.covs.copy()   # the kernel updates these
        diag = np.empty((s, 4))
        opts = self._opts(n)
        args = [_addr(x) if x.flags.writeable else x.ctypes.data, self.ptr["u"], pf,
                _addr(w), _addr(mu), _addr(var), _addr(diag)]
        threads = fam._threads(s * n)
        if threads == 1:
            self.kern.fit1d(args[0], 0, s, opts, *args[1:], self._scratch(0, n))
        else:
            parts = _split(s, threads)
            scratch = {lo: self._scratch(j, n) for j, (lo, hi) in enumerate(parts)}
            self.kern.map(lambda lo, hi: self.kern.fit1d(args[0], lo, hi, opts, *args[1:], scratch[lo]), parts)
        fam.weights, fam.means, fam.covs, fam._diag = w, mu, var, diag

    def sample(self, fam: GMMFamily, raw: np.ndarray, npair: int, counts: np.ndarray, n: int) -> np.ndarray:
        """Flat (2 npair,) draws, the first S n of them in chain-major order."""
        mu = np.ascontiguousarray(fam.means[:, :, 0])
        sd = np.sqrt(fam.covs[:, :, 0, 0])
        pm, psd = _addr(mu), _addr(sd)
        s, k = counts.shape
        out = np.empty(2 * npair)
        c = counts if counts.dtype == np.int64 and counts.flags.c_contiguous else np.ascontiguousarray(counts, np.int64)
        pr, po, pc = _addr(raw), _addr(out), _addr(c)
        f = self.kern.sample1d
        threads = fam._threads(s * n)
        if threads == 1:
            f(pr, npair, 0, npair, po, 0, s, n, k, pc, pm, psd)
            return out
        # normals first (all pairs), then the affine map per chain: a chain's slots mix both halves
        self.kern.map(lambda lo, hi: f(pr, npair, lo, hi, po, 0, 0, n, k, pc, pm, psd), _split(npair, threads))
        self.kern.map(lambda lo, hi: f(pr, npair, 0, 0, po, lo, hi, n, k, pc, pm, psd), _split(s, threads))
        return out


_KERNEL = {"kernel": None, "tried": False, "error": None}
_KERNEL_LOCK = threading.Lock()


def load_kernel():
    """The compiled kernel, built on first use; None (with one warning) if it cannot be built."""
    if not _KERNEL["tried"]:
        with _KERNEL_LOCK:
            if not _KERNEL["tried"]:
                try:
                    _KERNEL["kernel"] = _Kernel(_compile())
                except Exception as e:   # no compiler, read-only cache, ...: fall back to NumPy
                    _KERNEL["error"] = str(e)
                    warnings.warn(f"GMM C kernel unavailable, using NumPy ({e})", RuntimeWarning, stacklevel=3)
                _KERNEL["tried"] = True
    return _KERNEL["kernel"]
