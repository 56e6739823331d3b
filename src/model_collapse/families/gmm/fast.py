"""ctypes glue of the GMM family's compiled path: kernel.c, built by model_collapse.native on first use.

ctypes releases the GIL during a call, so threads of one shared pool split the chains.
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from typing import TYPE_CHECKING

import numpy as np

from ... import native
from .em import kmeans_trials

if TYPE_CHECKING:
    from .family import GMMFamily

KMAX = 64                               # largest K of the compiled kernel

_CFLAGS = ["-O3", "-march=native", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno",
           "-fno-trapping-math", "-fopenmp-simd"]


class _Opts(ctypes.Structure):
    """The kernel's opts_t (kernel.c), field for field."""

    _fields_ = ([(f, ctypes.c_int64) for f in ("n", "k", "trials", "max_iter", "km_max_iter")]
                + [(f, ctypes.c_double) for f in ("tol", "reg_covar", "var_floor", "km_tol", "min_count")])


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

    def fit(self, x: np.ndarray, rng: np.random.Generator, fresh, weights: np.ndarray, means: np.ndarray,
            covs: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """EM on (S, N, 1) data from the current (S, K) weights, (S, K, 1) means and (S, K, 1, 1) covs;
        returns new (weights, means, covs, diagnostics (S, 4)); the arrays given are left untouched."""
        s, n = x.shape[:2]
        rng.random(out=self.u)   # drawn on every fit (used or not), as the NumPy path
        if fresh is None:
            pf = self.ptr["all_fresh"]
        else:
            self.fresh[:] = fresh
            pf = self.ptr["fresh"]
        w, mu, var = weights.copy(), means.copy(), covs.copy()   # the kernel updates these
        diag = np.empty((s, 4))
        opts = self._opts(n)
        args = [_addr(x) if x.flags.writeable else x.ctypes.data, self.ptr["u"], pf,
                _addr(w), _addr(mu), _addr(var), _addr(diag)]
        if threads == 1:
            self.kern.fit1d(args[0], 0, s, opts, *args[1:], self._scratch(0, n))
        else:
            parts = _split(s, threads)
            scratch = {lo: self._scratch(j, n) for j, (lo, hi) in enumerate(parts)}
            self.kern.map(lambda lo, hi: self.kern.fit1d(args[0], lo, hi, opts, *args[1:], scratch[lo]), parts)
        return w, mu, var, diag

    def sample(self, means: np.ndarray, covs: np.ndarray, raw: np.ndarray, npair: int, counts: np.ndarray, n: int,
               threads: int) -> np.ndarray:
        """Flat (2 npair,) draws from components (S, K, 1) means and (S, K, 1, 1) covs, the first S n of them in
        chain-major order."""
        mu = np.ascontiguousarray(means[:, :, 0])
        sd = np.sqrt(covs[:, :, 0, 0])
        pm, psd = _addr(mu), _addr(sd)
        s, k = counts.shape
        out = np.empty(2 * npair)
        c = counts if counts.dtype == np.int64 and counts.flags.c_contiguous else np.ascontiguousarray(counts, np.int64)
        pr, po, pc = _addr(raw), _addr(out), _addr(c)
        f = self.kern.sample1d
        if threads == 1:
            f(pr, npair, 0, npair, po, 0, s, n, k, pc, pm, psd)
            return out
        # normals first (all pairs), then the affine map per chain: a chain's slots mix both halves
        self.kern.map(lambda lo, hi: f(pr, npair, lo, hi, po, 0, 0, n, k, pc, pm, psd), _split(npair, threads))
        self.kern.map(lambda lo, hi: f(pr, npair, 0, 0, po, lo, hi, n, k, pc, pm, psd), _split(s, threads))
        return out


_KERNEL = {"kernel": None, "tried": False, "error": None}
_KERNEL_LOCK = threading.Lock()


def _compile() -> ctypes.CDLL:
    """Build (or reuse) the shared library; raises on failure."""
    return native.build("gmm_kernel", files(__package__).joinpath("kernel.c"), _CFLAGS)


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
