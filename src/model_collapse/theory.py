"""Closed-form expectations drawn on figures and checked by the tests.

Generation g = 0 is the fit to N true draws; r = (N-1)/N.

Replace regime, N items per generation:
- Gaussian, sampling temperature lambda (Alemohammad et al. 2023: samples from
  N(mu, lambda Sigma)): E[var_g] = var c (lambda c)^g, c = r for the MLE
  (ddof=0), 1 for the unbiased estimator (ddof=1). Why: given the fit, the next
  N samples have variance lambda var_g and the refit's E is c times that; the
  fit to real data has no lambda. lambda = 1 is Shumailov et al.'s (N-1)/N per
  generation. d-dim: E[tr Cov_g] = tr Sigma c (lambda c)^g.
  In 1-D, var_g = var lambda^g prod_{i=0..g} Q_i / (N - ddof), Q_i ~ chi2(N-1)
  i.i.d., so E[var_g^2] = var^2 lambda^2g ((N-1)(N+1) / (N-ddof)^2)^(g+1).
- KDE, the variance (1-D) or trace of the estimated density, bandwidth h
  fixed (Scott/Silverman depend on N only). Let C_g be generation g's data
  covariance (ddof=0): the density's is C_g + K_g, samples' C_g + lambda K_g,
  and E[C_(g+1)] = r (C_g + lambda K_g). Only second moments enter, so any
  truth of covariance Sigma (a Gaussian mixture too) has these forms:
  relative (K_g = h^2 C_g N/(N-1), scipy): E[var_g] = var (r + h^2)(r + lambda h^2)^g;
  absolute (K_g = h^2 I, scikit-learn): a_g = E[tr C_g] = a* + (a_0 - a*) r^g,
  a* = (N-1) lambda h^2 d, a_0 = r tr Sigma, and E[tr Cov_g] = a_g + h^2 d.
- categorical: E[1 - sum p^2]_g = (1 - sum p_true^2)(1 - 1/N)^(g+1)
  (one multinomial draw maps E[sum p_hat^2] to sum p^2 + (1 - sum p^2)/N).

Linear regression (Dohmatob et al. 2024; Gerstgrasser et al. 2024, Sec. 2),
features x ~ N(0, I_d), a fixed design X of T = N rows, true noise sigma,
synthetic labels y = X w_hat + noise of sd s (s = sigma in the papers). With
A = (X^T X)^-1 X^T the OLS map and E_g generation g's noise, e_g = w_hat_g - w*:
- replace: e_g = e_(g-1) + A E_g, so E||e_g||^2 = (sigma^2 + g s^2) E tr (X^T X)^-1
  = (sigma^2 + g s^2) d/(T-d-1) (the inverse-Wishart mean; a fresh design
  each generation gives the same sum);
- accumulate (OLS on all g+1 copies of X): w_hat_g is the mean over i = 0..g
  of A y_i = w_hat_(i-1) + A E_i (w_hat_(-1) = w*), whence
  e_g = e_(g-1) + A E_g/(g+1) and E||e_g||^2 = d/(T-d-1) (sigma^2 + s^2
  sum_{k=2}^{g+1} 1/k^2), below sigma^2 d/(T-d-1) pi^2/6 when s = sigma.
The metric `test_error` is ||w_hat - w*||^2, the test MSE in excess of sigma^2.
"""

from __future__ import annotations

import numpy as np


def gaussian_var(var: float, n: int, g, ddof: int = 0, lam: float = 1.0):
    """E[var_g] (or E[tr Cov_g] with var = tr Sigma) under replace with N = n and temperature lam."""
    c = 1.0 if ddof == 1 else (n - 1) / n
    g = np.asarray(g, float)
    return var * c * (lam * c) ** g


def gaussian_var_sd(var: float, n: int, g, ddof: int = 0, lam: float = 1.0):
    """Standard deviation of var_g across chains (1-D) under replace with N = n and temperature lam."""
    g = np.asarray(g, float)
    k = n - ddof
    second = var ** 2 * lam ** (2 * g) * ((n - 1) * (n + 1) / k ** 2) ** (g + 1)
    return np.sqrt(np.maximum(second - gaussian_var(var, n, g, ddof, lam) ** 2, 0.0))


def kde_var(tr_sigma: float, d: int, n: int, h: float, g, mode: str = "relative", lam: float = 1.0):
    """E[var_g] (1-D) or E[tr Cov_g] of the estimated density of a KDE under replace (bandwidth h fixed)."""
    r, g = (n - 1) / n, np.asarray(g, float)
    if mode == "relative":
        return tr_sigma * (r + h ** 2) * (r + lam * h ** 2) ** g
    star = (n - 1) * lam * h ** 2 * d
    return star + (r * tr_sigma - star) * r ** g + h ** 2 * d


def linreg_test_error(sigma: float, d: int, t: int, g, regime: str = "replace", s: float | None = None):
    """E||w_hat_g - w*||^2 for OLS on a design of t rows in d dimensions (replace or accumulate)."""
    s = sigma if s is None else s
    c = d / (t - d - 1)
    g = np.asarray(g)
    if regime == "replace":
        return c * (sigma ** 2 + g * s ** 2)
    inv_sq = np.cumsum(1.0 / np.arange(1, int(np.max(g, initial=0)) + 2) ** 2)   # sum_{i<=k} 1/i^2
    return c * (sigma ** 2 + s ** 2 * (inv_sq[g.astype(int)] - 1.0))


def linreg_accumulate_bound(sigma: float, d: int, t: int) -> float:
    """Gerstgrasser et al.'s bound sigma^2 d/(T-d-1) pi^2/6 on the accumulate test error."""
    return sigma ** 2 * d / (t - d - 1) * np.pi ** 2 / 6


def bound(exp, column: str):
    """A constant bound on E[column] drawn beside the closed form (the family's declaration), else None."""
    return exp.model.theory_bound(exp, column) if exp.filter.kind == "none" else None


def expected(exp, column: str):
    """A function g -> E[column at generation g] when the family declares a closed form for exp, else None
    (a filter changes what is refitted, so none applies under one)."""
    return exp.model.theory(exp, column) if exp.filter.kind == "none" else None
