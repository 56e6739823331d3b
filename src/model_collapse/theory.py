"""Closed-form expectations drawn on figures and checked by the tests.

Replace regime, N items per generation, generation 0 fitted to N true draws:
- Gaussian MLE (ddof=0): E[var_g] = var ((N-1)/N)^(g+1)   (each refit multiplies
  E[var] by (N-1)/N; Shumailov et al., Nature 2024);
- unbiased (ddof=1): E[var_g] = var for every g;
- d-dim: E[tr Cov_g] = tr Sigma ((N-1)/N)^(g+1) under MLE;
- categorical: E[1 - sum p^2]_g = (1 - sum p_true^2)(1 - 1/N)^(g+1)
  (one multinomial draw maps E[sum p_hat^2] to sum p^2 + (1 - sum p^2)/N).
"""

from __future__ import annotations

import numpy as np


def expected(exp, column: str):
    """A function g -> E[column at generation g] when a closed form applies, else None."""
    if exp.regime.kind != "replace" or exp.filter.kind != "none":
        return None
    n, src, fam = exp.regime.n, exp.source, exp.model
    if fam.kind == "gaussian" and src.kind == "gaussian":
        cov = src.covariance()
        r = 1.0 if fam.ddof == 1 else (n - 1) / n
        if column == "var" and len(src.mean) == 1:
            return lambda g: cov[0, 0] * r ** (np.asarray(g) + 1)
        if column == "trace":
            return lambda g: np.trace(cov) * r ** (np.asarray(g) + 1)
        if column == "mean":
            return lambda g: np.full(np.shape(g), src.mean[0], float)
    if fam.kind == "categorical" and src.kind == "categorical" and fam.smoothing == 0 and column == "gini":
        gini = 1 - (src.probs() ** 2).sum()
        return lambda g: gini * (1 - 1 / n) ** (np.asarray(g) + 1)
    return None
