"""The ``gmm`` family: its config and S Gaussian mixtures refitted by EM, advanced together."""

from __future__ import annotations

import math
import os
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ...schema import Component
from ...special import ndtr
from . import fast
from .em import _affine_numpy, _component_logpdf, _fit_numpy, box_muller, kmeans_trials
from .fast import KMAX, _Runner1D


class GMMConfig(Component):
    """Config of the ``gmm`` family (defaults reproduce scikit-learn's GaussianMixture)."""

    kind: Literal["gmm"] = Field("gmm", description="the family: gmm, Gaussian mixtures refitted by EM")
    components: int = Field(2, ge=1, description=(
        "K, the mixture components fitted per chain (at most the training points per generation)"))
    covariance: Literal["full", "diag"] = Field("full", description=(
        "full or diag covariance per component (scikit-learn's covariance_type)"))
    init: Literal["warm", "kmeans++"] = Field("kmeans++", description=(
        "\"kmeans++\": fresh k-means++ + Lloyd start every generation (scikit-learn's default); \"warm\": EM "
        "from the previous generation's fit (k-means++ on the first fit, and again on any chain whose "
        "previous fit was degenerate)."))
    start: Literal["data", "truth"] = Field("data", description=(
        "the first fit's start: data = as `init` says (k-means++); truth = EM from the true parameters (a gmm "
        "source with as many components), as Qiao et al. (2025) warm-start scikit-learn at t = 1; later fits "
        "as `init` says"))
    degenerate: Literal["reseed", "keep"] = Field("reseed", description=(
        "a component that empties (responsibilities below min_count points) or whose weight falls below "
        "min_weight: reseed = under init warm the chain restarts from k-means++ (the default: a fit like "
        "scikit-learn's, which never returns a dead component); keep = it stays dead: weight 0, never sampled, "
        "left out of EM, counted in the `alive` column (a mixture forgetting a mode; NumPy path)"))
    min_weight: float = Field(0.0, ge=0, lt=1, description=(
        "degenerate keep: a component whose fitted weight is below this is dead from then on"))
    tol: float = Field(1e-3, gt=0, description=(
        "Stop EM when the mean per-sample log-likelihood changes by less than tol (scikit-learn)."))
    max_iter: int = Field(100, ge=1, description="EM iterations at most per fit (scikit-learn's max_iter)")
    reg_covar: float = Field(1e-6, ge=0, description=(
        "added to every component's covariance diagonal (scikit-learn's reg_covar)"))
    kmeans_iter: int = Field(300, ge=1, description=(
        "Lloyd's k-means inside the k-means++ start: scikit-learn's max_iter and relative tol."))
    kmeans_tol: float = Field(1e-4, ge=0, description=(
        "relative tolerance of the k-means inside the k-means++ start (scikit-learn's tol)"))
    min_count: float = Field(1.0, ge=0, description=(
        "A component whose responsibilities sum to less than min_count points is \"empty\"."))
    var_floor: float = Field(1e-12, gt=0, description=(
        "Absolute variance floor on top of reg_covar, so reg_covar = 0 cannot divide by zero."))
    shuffle: bool = Field(False, description=(
        "Samples come grouped by component (as scikit-learn's sample); shuffle makes their order "
        "exchangeable, for regimes that take a prefix."))
    temperature: float = Field(1.0, gt=0, description=(
        "Sampling bias lambda (Alemohammad et al. 2023): each component samples N(mu_k, lambda Sigma_k); the "
        "weights and the fit are unchanged. 1 samples the fit itself."))
    backend: Literal["auto", "c", "numpy"] = Field("auto", description=(
        "auto: the compiled 1-D C kernel where it applies, else NumPy; c: require the kernel; numpy: always "
        "NumPy"))
    threads: int = Field(0, ge=0, description="0: every CPU this process may use")

    data_kinds: ClassVar[frozenset] = frozenset({"vector"})

    def capabilities(self, source) -> frozenset:
        """Items, exact density and moments; a CDF in 1-D."""
        return frozenset({"items", "log_prob", "moments"} | ({"cdf"} if source.dim == 1 else set()))

    def build(self, source, chains: int) -> "GMMFamily":
        """The family for a built source (start: truth takes the source's true mixture)."""
        fam = GMMFamily(self, source.dim, chains)
        if self.start == "truth":
            truth = source.truth
            fam.start = (truth.weights[0].copy(), truth.means[0].copy(), truth.covs[0].copy())
        return fam

    def check(self, exp) -> list[tuple[str, str]]:
        """Each generation must have at least K training points; start: truth needs a K-component gmm truth."""
        errs = []
        n = getattr(getattr(exp, "regime", None), "n", None)
        if isinstance(n, int) and n < self.components:
            errs.append(("model.components", f"{self.components} components need at least "
                         f"{self.components} training points per generation (regime n = {n})"))
        if self.start == "truth":
            weights = getattr(exp.source, "weights", None) if exp.source.declare().truth == "gmm" else None
            if weights is None:
                errs.append(("model.start", f"start: truth needs a gmm source (the truth's own form), not "
                                            f"{exp.source.kind}"))
            elif len(weights) != self.components:
                errs.append(("model.start", f"start: truth needs as many components as the truth "
                                            f"({len(weights)}), got components = {self.components}"))
        return errs


class _Tempered:
    """What the samplers read of a family (means, covs), covariances scaled by lambda."""

    def __init__(self, fam: "GMMFamily", lam: float):
        self.means, self.covs = fam.means, fam.covs * lam


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
        self.start = None                                 # (w, m, c) of the truth: start: truth's first fit
        self.alive = np.ones((s, k), dtype=bool)          # degenerate: keep: components not yet dead

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
        if self.start is not None and not self.fitted.any():   # start: truth: EM from the true mixture
            self.weights[:], self.means[:], self.covs[:] = self.start
            mode, init = "warm", "warm"
        keep = self.cfg.degenerate == "keep"
        if mode == "kmeans++":
            fresh = None                                     # every chain
        elif init == "warm":
            fresh = np.zeros(s, bool)                        # explicit: start from the current state
        elif keep:
            fresh = ~self.fitted                             # a dead component stays dead: no re-seed
        else:
            fresh = ~self.fitted | self.degenerate          # first fit, or re-seed after a collapse
        runner = None if keep else self._get_runner()
        if runner is not None:
            self.weights, self.means, self.covs, self._diag = runner.fit(
                x, rng, fresh, self.weights, self.means, self.covs, self.threads_for(s * n))
        else:
            # Uniforms for k-means++ are drawn on every fit (used or not), as in the kernel, so the
            # stream never depends on which chains restart.
            u = rng.random((s, 1 + (self.k - 1) * kmeans_trials(self.k)))
            fresh = np.ones(s, bool) if fresh is None else fresh
            if keep:   # a fresh start revives every component of its chain
                self.alive[fresh] = True
            self.weights, self.means, self.covs, self._diag = _fit_numpy(
                x, u, fresh, self.weights, self.means, self.covs, self.cfg, self.alive if keep else None)
            if keep:
                self.alive &= self.weights > 0
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
        kern = fast.load_kernel()
        if kern is None and self.cfg.backend == "c":
            raise RuntimeError(f"backend='c' but the GMM kernel could not be built: {fast._KERNEL['error']}")
        return kern

    def threads_for(self, work: int) -> int:
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
        cfg.shuffle permutes each chain's points; component covariances are scaled by cfg.temperature.
        """
        s, d = self.chains, self.dim
        # one chain: 1-D pvals take numpy's fast path (the same draws as the 2-D call)
        counts = rng.multinomial(n, self.weights[0])[None] if s == 1 else rng.multinomial(n, self.weights)
        self.last_counts = counts                                             # (S, K)
        m = s * n * d
        npair = (m + 1) // 2
        raw = rng.bit_generator.random_raw(2 * npair)
        runner = self._get_runner()
        # At temperature 1 the family itself is sampled, so the default draws stay bit-identical.
        src = self if self.cfg.temperature == 1.0 else _Tempered(self, self.cfg.temperature)
        if runner is not None:
            flat = runner.sample(src.means, src.covs, raw, npair, counts, n, self.threads_for(s * n))
            x = flat[:m].reshape(s, n, 1)
        else:
            z = box_muller(raw)[:m].reshape(s, n, d)
            x = _affine_numpy(z, counts, src.means, src.covs)
        if self.cfg.shuffle:
            # permuted() shuffles every 1-D slice on its own: in d > 1 the points are permuted as rows
            x = rng.permuted(x, axis=1) if d == 1 else np.take_along_axis(
                x, rng.permuted(np.broadcast_to(np.arange(n), (s, n)), axis=1)[:, :, None], axis=1)
        return x

    # ------------------------------------------------------------ evaluation

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Log density of shared points x (M, d) under each chain: (S, M)."""
        x = np.asarray(x, float).reshape(len(x), self.dim)
        lp = _component_logpdf(x[None], self.means, self.covs)               # (S, K, M)
        with np.errstate(divide="ignore"):
            lw = np.log(self.weights)
        from scipy.special import logsumexp  # on use: importing it costs ~0.15 s of start-up
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

    def _param_names(self) -> list[tuple]:
        """Column names per component (made once: params() runs every generation)."""
        if getattr(self, "_names", None) is None:
            mean = (lambda k: f"mean_{k}") if self.dim == 1 else (lambda k: [f"mean_{k}_{j}" for j in range(self.dim)])
            self._names = [(mean(k), f"std_{k}", f"weight_{k}") for k in range(self.k)]
        return self._names

    def params(self) -> dict[str, np.ndarray]:
        """Per component k, sorted by mean along axis 0: mean_k (d > 1: mean_k_j), std_k, weight_k; degenerate.

        std_k is the standard deviation in 1-D and sqrt(trace(cov_k) / d), the root-mean-square
        per-axis standard deviation, in d dimensions.
        """
        if self.chains == 1 and self.dim == 1 and self.cfg.degenerate == "reseed":
            return self._params_one()
        order = np.argsort(self.means[:, :, 0], axis=1, kind="stable")
        rows = np.arange(self.chains)[:, None]
        w, m, c = self.weights[rows, order], self.means[rows, order], self.covs[rows, order]
        std = np.sqrt(c[..., 0, 0] if self.dim == 1 else np.trace(c, axis1=2, axis2=3) / self.dim)
        out = {}
        for k, names in enumerate(self._param_names()):
            if self.dim == 1:
                out[names[0]] = m[:, k, 0]
            else:
                for j in range(self.dim):
                    out[names[0][j]] = m[:, k, j]
            out[names[1]] = std[:, k]
            out[names[2]] = w[:, k]
        out["degenerate"] = self.degenerate.astype(float)
        if self.cfg.degenerate == "keep":
            out["alive"] = self.alive.sum(axis=1).astype(float)
        return out

    def _params_one(self) -> dict[str, np.ndarray]:
        """params() of one 1-D chain with Python floats (W1 records every generation of one chain, and
        a dozen tiny NumPy calls cost more than its fit's bookkeeping): the same values, bit for bit."""
        m, v, w = self.means[0, :, 0].tolist(), self.covs[0, :, 0, 0].tolist(), self.weights[0].tolist()
        values = []
        for k in sorted(range(self.k), key=m.__getitem__):   # stable, as argsort(kind="stable")
            values += (m[k], math.sqrt(v[k]), w[k])
        values.append(float(self._diag[0, 3] > 0))
        table = np.array([values])
        return {name: table[:, j] for j, name in enumerate(self._flat_names())}

    def _flat_names(self) -> list[str]:
        """Column names in params() order (1-D)."""
        if getattr(self, "_flat", None) is None:
            self._flat = [name for names in self._param_names() for name in names] + ["degenerate"]
        return self._flat

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the mixture parameters, warm-start flags and the last fit's diagnostics."""
        return {"weights": self.weights.copy(), "means": self.means.copy(), "covs": self.covs.copy(),
                "degenerate": self.degenerate, "fitted": self.fitted.copy(), "n_iter": self.n_iter,
                "converged": self.converged, "lower_bound": self.lower_bound, "alive": self.alive.copy()}

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
        self.alive = np.array(state["alive"], bool).reshape(s, k) if "alive" in state else np.ones((s, k), bool)
        self._diag = np.stack([get("n_iter", np.zeros(s)), get("converged", np.zeros(s)),
                               get("lower_bound", np.full(s, np.nan)), get("degenerate", np.zeros(s))], axis=1)
