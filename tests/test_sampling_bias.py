"""Sampling bias lambda (`temperature`) and the KDE's absolute bandwidth.

Alemohammad et al. 2023 sample a fitted Gaussian from N(mu, lambda Sigma);
the closed forms are in theory.py. Tolerance as in test_theory.py: a z-test
of a mean over >= 1,000 chains, |z| < 4.
"""

import numpy as np
import pytest

from model_collapse.config import validate
from model_collapse.errors import ConfigError
from model_collapse.families.gaussian import GaussianConfig, GaussianFamily
from model_collapse.families.gmm import GMMConfig, GMMFamily
from model_collapse.families.kde import KDEConfig, KDEFamily
from model_collapse.theory import gaussian_var, gaussian_var_sd, kde_var

Z = 4.0


def z_score(samples: np.ndarray, expected: float) -> float:
    """(mean - expected) / standard error."""
    return (samples.mean() - expected) / (samples.std(ddof=1) / np.sqrt(len(samples)))


def gaussian(n, lam=None, ddof=0, chains=4000, generations=11, summary=False, dim=1, seed=1):
    """A replace experiment on N(0, I_d) (d > 1: a correlated covariance), temperature lam (None: omitted)."""
    src = {"kind": "gaussian", "mean": [0.0] * dim}
    if dim > 1:
        src["cov"] = (np.diag(np.arange(1, dim + 1.0)) + 0.3).tolist()
    model = {"kind": "gaussian", "ddof": ddof, "summary": summary}
    if lam is not None:
        model["temperature"] = lam
    return {"seed": seed, "chains": chains, "generations": generations, "source": src, "model": model,
            "regime": {"kind": "replace", "n": n}, "metrics": ["params"]}


@pytest.mark.parametrize("summary", [False, True])
@pytest.mark.parametrize("ddof", [0, 1])
def test_tempered_variance_follows_closed_form(run, summary, ddof):
    """E[var_g] = var c (lambda c)^g, c = (N-1)/N (MLE) or 1; E[var_g^2] from the chi2 product."""
    n, lam = 10, 0.8
    m = run(gaussian(n, lam, ddof=ddof, summary=summary))
    for g in (0, 1, 5, 10):
        assert abs(z_score(m["var"][g], gaussian_var(1.0, n, g, ddof, lam))) < Z, g
    for g in (1, 3):   # the spread: second moments, mean^2 + sd^2
        second = gaussian_var(1.0, n, g, ddof, lam) ** 2 + gaussian_var_sd(1.0, n, g, ddof, lam) ** 2
        assert abs(z_score(m["var"][g] ** 2, second)) < Z, g
    # lambda^10 = 0.11: the signal dwarfs the tolerance, and lambda = 1's curve is far away.
    assert m["var"][10].mean() < 0.15
    assert abs(z_score(m["var"][10], gaussian_var(1.0, n, 10, ddof, 1.0))) > 20


@pytest.mark.parametrize("summary", [False, True])
def test_tempered_trace_in_3d(run, summary):
    """d-dim: E[tr Cov_g] = tr Sigma ((N-1)/N) (lambda (N-1)/N)^g."""
    n, lam = 12, 0.9
    m = run(gaussian(n, lam, dim=3, summary=summary, chains=2000, generations=11))
    tr = np.trace(np.diag([1.0, 2.0, 3.0]) + 0.3)
    for g in (0, 5, 10):
        assert abs(z_score(m["trace"][g], gaussian_var(tr, n, g, 0, lam))) < Z, g
    assert m["trace"][10].mean() < 0.45 * tr


def test_default_temperature_is_bit_identical(run):
    """temperature omitted and 1.0 give the same numbers, on the items and the summary paths and for KDE/GMM."""
    for summary in (False, True):
        a = run(gaussian(20, None, summary=summary, chains=50, generations=5))
        b = run(gaussian(20, 1.0, summary=summary, chains=50, generations=5))
        assert all(np.array_equal(a[k], b[k]) for k in a)
    for model in ({"kind": "kde"}, {"kind": "gmm", "components": 2}):
        base = {"seed": 2, "chains": 5, "generations": 4, "source": {"kind": "gmm"},
                "regime": {"kind": "replace", "n": 200}, "metrics": ["params"]}
        a = run({**base, "model": model})
        b = run({**base, "model": {**model, "temperature": 1.0}})
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_default_sampling_matches_untempered_formula():
    """At temperature 1 the draws are exactly those of the untempered formulas (what the code did before)."""
    rng = np.random.default_rng(0)
    fam = GaussianFamily.from_params([1.0, -1.0], [[2.0, 0.6], [0.6, 1.0]], chains=3)
    x = fam.sample(7, np.random.default_rng(5))
    z = np.random.default_rng(5).standard_normal((3, 7, 2))
    assert np.array_equal(x, fam.mean[:, None, :] + z @ np.linalg.cholesky(fam.cov).transpose(0, 2, 1))
    kde = KDEFamily(KDEConfig(), 1, 3)
    kde.fit(rng.standard_normal((3, 40, 1)))
    got = kde.sample(9, np.random.default_rng(6))
    r = np.random.default_rng(6)
    idx = r.integers(0, 40, size=(3, 9))
    base = np.take_along_axis(kde.points, idx[:, :, None], axis=1)
    want = base + r.standard_normal((3, 9, 1)) @ np.linalg.cholesky(kde.kcov).transpose(0, 2, 1)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("lam", [0.49, 1.7])
def test_temperature_scales_draws_about_their_centre(lam):
    """The same generator: tempered draws = centre + sqrt(lambda) (untempered - centre), for each family."""
    cov = [[2.0, 0.6], [0.6, 1.0]]
    g1 = GaussianFamily.from_params([1.0, -1.0], cov, 4)
    gl = GaussianFamily.from_params([1.0, -1.0], cov, 4, GaussianConfig(temperature=lam))
    a, b = g1.sample(50, np.random.default_rng(3)), gl.sample(50, np.random.default_rng(3))
    assert np.allclose(b - g1.mean[:, None], np.sqrt(lam) * (a - g1.mean[:, None]), atol=1e-12)
    # The summary path: mean offset by sqrt(lambda), scatter by lambda (the same normal and chi2 draws).
    s1 = GaussianFamily.from_params([0.0], [[2.0]], 4, GaussianConfig(summary=True))
    sl = GaussianFamily.from_params([0.0], [[2.0]], 4, GaussianConfig(summary=True, temperature=lam))
    p, q = s1.sample(30, np.random.default_rng(4)), sl.sample(30, np.random.default_rng(4))
    assert np.allclose(q.scatter, lam * p.scatter) and np.allclose(q.mean, np.sqrt(lam) * p.mean)
    for backend in ("numpy", "auto"):   # the compiled 1-D sampler and the NumPy one
        w, mu, var = [0.3, 0.7], [[-2.0], [2.0]], [[[1.0]], [[0.25]]]
        m1 = GMMFamily.from_params(w, mu, var, 3, GMMConfig(backend=backend))
        ml = GMMFamily.from_params(w, mu, var, 3, GMMConfig(backend=backend, temperature=lam))
        a, b = m1.sample(60, np.random.default_rng(5)), ml.sample(60, np.random.default_rng(5))
        comp = np.repeat(np.tile([0, 1], 3), m1.last_counts.ravel()).reshape(3, 60)
        centre = np.asarray(mu)[comp]
        assert np.allclose(b - centre, np.sqrt(lam) * (a - centre), atol=1e-12), backend
    k1, kl = KDEFamily(KDEConfig(), 2, 3), KDEFamily(KDEConfig(temperature=lam), 2, 3)
    pts = np.random.default_rng(6).standard_normal((3, 40, 2))
    k1.fit(pts)
    kl.fit(pts)
    a, b = k1.sample(25, np.random.default_rng(7)), kl.sample(25, np.random.default_rng(7))
    idx = np.random.default_rng(7).integers(0, 40, size=(3, 25))
    base = np.take_along_axis(pts, idx[:, :, None], axis=1)
    assert np.allclose(b - base, np.sqrt(lam) * (a - base), atol=1e-12)


def test_absolute_bandwidth_is_scikit_learn_convention():
    """absolute: density (1/N) sum_i N(x; x_i, h^2 I), h in data units; 'scott' gives h = N^(-1/(d+4))."""
    pts = np.random.default_rng(0).normal(0, 3.0, size=(2, 60, 2))
    x = np.random.default_rng(1).normal(0, 3.0, size=(25, 2))

    def by_hand(h):
        d2 = ((x[None, :, None, :] - pts[:, None, :, :]) ** 2).sum(-1)          # (S, M, N)
        return np.log(np.exp(-0.5 * d2 / h ** 2).mean(axis=2) / (2 * np.pi * h ** 2))

    for bw, h in ((0.7, 0.7), ("scott", 60 ** (-1 / 6)), ("silverman", (60 * 4 / 4) ** (-1 / 6))):
        kde = KDEFamily(KDEConfig(bandwidth=bw, bandwidth_mode="absolute"), 2, 2)
        kde.fit(pts)
        assert np.allclose(kde.log_prob(x), by_hand(h), rtol=1e-10, atol=1e-10), bw
    rel = KDEFamily(KDEConfig(bandwidth=0.7), 2, 2)   # relative: the data's sd (~3) scales the kernel
    rel.fit(pts)
    assert not np.allclose(rel.log_prob(x), by_hand(0.7), atol=0.1)
    try:
        from sklearn.neighbors import KernelDensity
    except ImportError:
        return
    kde = KDEFamily(KDEConfig(bandwidth="scott", bandwidth_mode="absolute"), 2, 2)
    kde.fit(pts)
    sk = KernelDensity(bandwidth="scott").fit(pts[0]).score_samples(x)
    assert np.allclose(kde.log_prob(x)[0], sk, rtol=1e-8)


def test_relative_bandwidth_is_still_scipy_convention():
    """relative (the default): kernel covariance h^2 x the data covariance, as scipy.stats.gaussian_kde."""
    from scipy.stats import gaussian_kde
    pts = np.random.default_rng(2).normal(0, 2.0, size=(1, 80, 2))
    x = np.random.default_rng(3).normal(0, 2.0, size=(20, 2))
    kde = KDEFamily(KDEConfig(), 2, 1)
    kde.fit(pts)
    assert np.allclose(kde.log_prob(x)[0], gaussian_kde(pts[0].T).logpdf(x.T), rtol=1e-10)


@pytest.mark.parametrize("mode, bw, lam", [("relative", "scott", 1.0), ("relative", 0.5, 0.6),
                                           ("absolute", 0.6, 1.0), ("absolute", "scott", 0.5)])
def test_kde_variance_closed_form(run, mode, bw, lam):
    """KDE under replace: E[var_g] of the estimated density as theory.kde_var (both bandwidth modes)."""
    n, std = 40, 1.5
    m = run({"seed": 4, "chains": 1500, "generations": 11,
             "source": {"kind": "gaussian", "mean": [0.0], "std": [std]},
             "model": {"kind": "kde", "bandwidth": bw, "bandwidth_mode": mode, "temperature": lam},
             "regime": {"kind": "replace", "n": n}, "metrics": ["params"]})
    h = n ** -0.2 if bw == "scott" else bw
    for g in (0, 4, 10):
        assert abs(z_score(m["var"][g], kde_var(std ** 2, 1, n, h, g, mode, lam))) < Z, (g, mode)
    # It moved far from generation 0's value: the check has teeth.
    assert abs(z_score(m["var"][10], kde_var(std ** 2, 1, n, h, 0, mode, lam))) > 8


@pytest.mark.parametrize("kind", ["gaussian", "gmm", "kde"])
@pytest.mark.parametrize("lam", [0, -0.5])
def test_temperature_must_be_positive(kind, lam):
    """temperature <= 0 is refused with its dotted path."""
    raw = {"source": {"kind": "gaussian"}, "model": {"kind": kind, "temperature": lam},
           "regime": {"kind": "replace", "n": 50}}
    with pytest.raises(ConfigError, match=r"model\.temperature: Input should be greater than 0"):
        validate(raw)


def test_bandwidth_mode_is_checked():
    """An unknown bandwidth_mode is refused."""
    with pytest.raises(ConfigError, match=r"model\.bandwidth_mode"):
        validate({"source": {"kind": "gaussian"}, "model": {"kind": "kde", "bandwidth_mode": "pixels"},
                  "regime": {"kind": "replace", "n": 50}})


def test_theory_curve_uses_temperature():
    """The figure's closed form for a tempered Gaussian run is the lambda-scaled one."""
    from model_collapse.theory import expected
    exp = validate(gaussian(10, 0.7))
    assert np.isclose(expected(exp, "var")(3), 0.9 * (0.7 * 0.9) ** 3)
    assert np.isclose(expected(validate(gaussian(10)), "var")(3), 0.9 ** 4)
