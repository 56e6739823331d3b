"""Gaussian mixture refitted by EM on its own samples (the W1 workload and Shumailov et al.'s GMM).

Each generation fits a K-component mixture by EM (Dempster, Laird & Rubin 1977) on the previous
generation's samples. The default reproduces scikit-learn's ``GaussianMixture`` loop: a fresh
k-means++ start (Arthur & Vassilvitskii 2007, greedy with 2 + log K local trials) refined by
Lloyd's k-means, then EM until the mean log-likelihood changes by less than ``tol`` = 1e-3. That
stopping rule leaves the fit close to the k-means start (about 2 EM iterations on W1), and the
dynamics depend on it: warm-starting EM from the previous generation with the same tolerance moves
each fit much less and slows the drift (see benchmarks/bench_gmm.py for the measurements).

Speed: 1-D fits and samples run in a small C kernel (kernel.c) compiled with the system C compiler
on first use (by model_collapse.native, cached under $MODEL_COLLAPSE_CACHE/native or
~/.cache/model-collapse/native) and called through ctypes (fast.py), which releases the GIL so
threads can split the chains. Everything has a NumPy path (em.py) computing the same quantities
(``backend="numpy"``, used automatically when no compiler is available, for d > 1 and for
K > 64); the two agree to rounding. Normals come from the caller's Generator as raw 64-bit words
(``bit_generator.random_raw``) turned into N(0, 1) by Box-Muller (1958) in both paths, more than
twice as fast here as ``Generator.standard_normal``.

Modules: family.py (GMMConfig, GMMFamily), em.py (NumPy path), fast.py (ctypes glue), kernel.c.
"""

from .em import EPS10, _fit_numpy, _lloyd_numpy, box_muller, kmeans_trials
from .family import GMMConfig, GMMFamily
from .fast import KMAX, load_kernel

__all__ = ["EPS10", "GMMConfig", "GMMFamily", "KMAX", "box_muller", "kmeans_trials", "load_kernel"]
