"""Mode collapse and sample distances for vector models (the diffusion literature's toy measures).

- `modes`: on a truth with known modes (a ring or grid of Gaussians of sd sigma), a sample is of high
  quality when it lies within k sigma of some mode (Srivastava et al. 2017's VEEGAN measures, as the
  mode-collapse literature reports them); a mode is covered when at least `min_share` of the samples are
  of high quality at it. Columns: mode_coverage (share of modes covered), modes_covered (count),
  quality (share of high-quality samples).
- `sliced_wasserstein`: the sliced 1-Wasserstein distance (Rabin et al. 2011) between the samples and
  the held-out true points, averaged over random unit directions (the same directions for every chain
  and generation: drawn from a fixed seed).
- `truth_nll`: the samples' mean negative log-density under the truth, where it has one (ring, grid,
  checkerboard, any Gaussian or mixture truth), and the share of samples it rules out.
- `mmd`: the squared maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012), unbiased
  estimate, bandwidth by the median heuristic on the true points unless given.
"""

from __future__ import annotations

import numpy as np

from .distribution import Context

DIRECTIONS_SEED = 20240217


def modes(ctx: Context, k: float = 3.0, min_share: float | None = None) -> dict[str, np.ndarray]:
    """mode_coverage, modes_covered and quality (S,) of the samples against the source's modes."""
    x = np.asarray(ctx.samples, float)                                       # (S, n, d)
    centres = np.asarray(ctx.source.modes, float)                            # (K, d)
    d2 = ((x[:, :, None, :] - centres[None, None]) ** 2).sum(-1)             # (S, n, K)
    nearest = d2.argmin(-1)
    good = np.take_along_axis(d2, nearest[..., None], -1)[..., 0] <= (k * ctx.source.mode_std) ** 2
    kk = len(centres)
    share = min_share if min_share is not None else 1.0 / (4 * kk)
    counts = np.stack([np.bincount(nearest[s][good[s]], minlength=kk) for s in range(x.shape[0])])   # (S, K)
    covered = (counts >= share * x.shape[1]).sum(1)
    return {"mode_coverage": covered / kk, "modes_covered": covered.astype(float), "quality": good.mean(1)}


def truth_nll(ctx: Context) -> dict[str, np.ndarray]:
    """truth_nll (S,): mean negative log-density of the samples under the true distribution (a quality score
    wherever the truth has a density; the held-out NLL of a model needs the model's density, which a
    diffusion model does not give), over the samples the truth does not rule out, and truth_outside (S,), the
    share it does rule out (density 0: off a checkerboard's squares)."""
    x = np.asarray(ctx.samples, float)
    s, n = x.shape[:2]
    truth = getattr(ctx.source, "one_truth", None) or ctx.source.truth   # one chain: S chains' points in one call
    lp = np.asarray(truth.log_prob(x.reshape(s * n, -1)), float)
    lp = (lp[0] if lp.ndim == 2 else lp).reshape(s, n)
    inside = np.isfinite(lp)
    with np.errstate(invalid="ignore"):
        mean = -np.where(inside, lp, 0.0).sum(1) / inside.sum(1)
    return {"truth_nll": mean, "truth_outside": 1 - inside.mean(1)}


def _directions(d: int, n: int) -> np.ndarray:
    v = np.random.default_rng(DIRECTIONS_SEED).standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _quantiles(a: np.ndarray, m: int) -> np.ndarray:
    """m evenly spaced empirical quantiles of each row of a (..., n): the order statistics at ranks
    floor((i + 1/2) n / m) (one sort; np.quantile with m levels took seconds here)."""
    n = a.shape[-1]
    return np.sort(a, axis=-1)[..., np.minimum(((np.arange(m) + 0.5) * n / m).astype(np.int64), n - 1)]


def sliced_wasserstein(ctx: Context, projections: int = 64) -> dict[str, np.ndarray]:
    """sliced_w1 (S,): mean over directions of the 1-D W1 between the projected samples and true points."""
    x = np.asarray(ctx.samples, float)
    ref = np.asarray(ctx.reference, float)
    ref = ref.reshape(ref.shape[:-1] + (-1,)) if ref.ndim >= 2 else ref[:, None]
    dirs = _directions(x.shape[-1], projections)                             # (P, d)
    m = min(x.shape[1], ref.shape[-2])
    px = _quantiles((x @ dirs.T).transpose(0, 2, 1), m)                      # (S, P, m)
    pr = _quantiles(np.moveaxis(ref @ dirs.T, -1, -2), m)                    # (P, m) or (S, P, m)
    return {"sliced_w1": np.abs(px - pr).mean(axis=(-1, -2))}


def mmd(ctx: Context, n: int = 1000, bandwidth: float | None = None) -> dict[str, np.ndarray]:
    """mmd2 (S,): unbiased squared MMD between up to n samples and n true points, Gaussian kernel."""
    def spread(a):   # n evenly spaced points (a set drawn grouped, as a mixture's, is covered throughout)
        return a[..., np.unique(np.linspace(0, a.shape[-2] - 1, min(n, a.shape[-2])).round().astype(int)), :]

    x = spread(np.asarray(ctx.samples, float))
    ref = spread(np.asarray(ctx.reference, float))
    y = ref if ref.ndim == 3 else np.broadcast_to(ref, (x.shape[0],) + ref.shape)
    if bandwidth is None:   # the median heuristic on the true points (one value for all chains)
        y0 = y[0][:500]
        dist = np.sqrt(((y0[:, None] - y0[None]) ** 2).sum(-1))
        bandwidth = float(np.median(dist[np.triu_indices(len(y0), 1)])) or 1.0
    g = 1.0 / (2 * bandwidth ** 2)

    def k(a, b):   # |a - b|^2 as |a|^2 + |b|^2 - 2 a.b: (S, n, m) without an (S, n, m, d) array
        d2 = (a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :] - 2 * a @ b.transpose(0, 2, 1)
        return np.exp(-g * np.maximum(d2, 0))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    nx, ny = x.shape[1], y.shape[1]
    off = lambda m, c: (m.sum(axis=(1, 2)) - np.trace(m, axis1=1, axis2=2)) / (c * (c - 1))   # noqa: E731
    return {"mmd2": off(kxx, nx) + off(kyy, ny) - 2 * kxy.mean(axis=(1, 2))}
