"""NumPy path of the GMM family: Box-Muller normals, k-means++, Lloyd's k-means and EM.

Used for d > 1, K > 64, backend="numpy" and whenever the C kernel cannot be built. It follows
scikit-learn's GaussianMixture loop and computes the same quantities as kernel.c from the same
random draws, so the two paths agree to rounding.
"""

from __future__ import annotations

import numpy as np

EPS10 = 10 * np.finfo(np.float64).eps   # scikit-learn adds 10 eps to every nk


def kmeans_trials(k: int) -> int:
    """Local trials per k-means++ centre, as scikit-learn: 2 + floor(log K)."""
    return 2 + int(np.log(k))


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


def _estep_numpy(x, w, means, covs, alive=None):
    """Responsibilities (S, N, K) and mean log-likelihood (S,) at the given parameters (dead components,
    alive False, take no responsibility at all)."""
    lp = _component_logpdf(x, means, covs) + np.log(np.maximum(w, 1e-300))[:, :, None]   # (S, K, N)
    if alive is not None:
        lp = np.where(alive[:, :, None], lp, -np.inf)
    from scipy.special import logsumexp  # on use: importing it costs ~0.15 s of start-up
    lse = logsumexp(lp, axis=1)                                               # (S, N)
    return np.exp(lp - lse[:, None, :]).transpose(0, 2, 1), lse.mean(1)


def _bury(w, means, covs, nk, low, alive, m_prev, c_prev):
    """Dead components (alive False) keep weight 0 and their last parameters, and never count as degenerate."""
    dead = ~alive
    w[dead] = 0.0
    w /= w.sum(1, keepdims=True)
    means[dead], covs[dead] = m_prev[dead], c_prev[dead]
    nk[dead], low[dead] = np.inf, np.inf


def _fit_numpy(x, u, fresh, w0, m0, c0, cfg, alive=None):
    """The NumPy fit of every chain: (weights, means, covs, diag) with diag (S, 4) as the kernel's.

    alive (S, K), for degenerate: keep: components False are dead (weight 0, left out of EM); a live one
    that empties (below min_count points) or falls below min_weight dies at the end of this fit."""
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
        resp, ll = _estep_numpy(x[a], w[a], means[a], covs[a], None if alive is None else alive[a])
        m_prev, c_prev = means[a], covs[a]
        w[a], means[a], covs[a], nk[a], low[a] = _mstep_numpy(x[a], resp, means[a], cfg, True)
        if alive is not None:
            wa, ma, ca, nka, lowa = w[a], means[a], covs[a], nk[a], low[a]
            _bury(wa, ma, ca, nka, lowa, alive[a], m_prev, c_prev)
            w[a], means[a], covs[a], nk[a], low[a] = wa, ma, ca, nka, lowa
        done = np.abs(ll - lb[a]) < cfg.tol
        lb[a], n_iter[a] = ll, it
        conv[a] = done
        active[a] = ~done
    if alive is not None:   # components that emptied or fell below min_weight die now (Qiao et al. 2025)
        dying = alive & ((nk < cfg.min_count) | (w < cfg.min_weight))
        if dying.any():
            _bury(w, means, covs, nk, low, alive & ~dying, means.copy(), covs.copy())
    degen = (nk < cfg.min_count).any(1) | (low < max(cfg.reg_covar, cfg.var_floor)).any(1)
    bad = ~(np.isfinite(w).all(1) & np.isfinite(means).all((1, 2)) & np.isfinite(covs).all((1, 2, 3)))
    w[bad], means[bad], covs[bad] = w0[bad], m0[bad], c0[bad]   # never hand on NaN: keep the last fit
    return w, means, covs, np.stack([n_iter, conv, lb, degen | bad], axis=1).astype(float)
