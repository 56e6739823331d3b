"""The Gaussian-mixture family: EM against scikit-learn, compiled vs NumPy paths, sampling,
densities, resuming, degenerate fits, and whole W1 trajectories against the scikit-learn loop."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import ks_2samp, kstest

from model_collapse.families import gmm as G
from model_collapse.families.gmm import GMMConfig, GMMFamily

W1 = dict(weights=[0.5, 0.5], means=[[-2.0], [2.0]], covs=[[[1.0]], [[1.0]]])
HAVE_C = G.load_kernel() is not None
BACKENDS = ["c", "numpy"] if HAVE_C else ["numpy"]


def two_blobs(d: int, n: int, rng) -> np.ndarray:
    """n points (n, d) from two overlapping, differently shaped Gaussians."""
    shear = np.array([[1.0, 0.3], [0.0, 0.7]])[:d, :d]
    a = rng.normal(size=(n // 2, d)) * 0.8 - 1.5
    b = rng.normal(size=(n - n // 2, d)) @ shear + 1.5
    return np.concatenate([a, b])


@pytest.mark.parametrize("d, cov, backend", [(1, "full", b) for b in BACKENDS] + [(1, "diag", BACKENDS[0]),
                                              (2, "full", "numpy"), (2, "diag", "numpy")])
def test_em_matches_sklearn_from_the_same_start(d, cov, backend):
    """Same data, same start, tight tol: weights, means, covariances agree to 1e-6 relative."""
    from sklearn.mixture import GaussianMixture
    rng = np.random.default_rng(3)
    x = two_blobs(d, 2000, rng)
    w0, m0 = np.array([0.4, 0.6]), np.array([[-1.0] * d, [1.0] * d])
    c0 = np.array([np.eye(d) * 1.5, np.eye(d) * 0.7])
    fam = GMMFamily.from_params(w0, m0, c0, 1, GMMConfig(covariance=cov, tol=1e-10, max_iter=5000, backend=backend))
    fam.fit(x[None], rng, init="warm")
    prec = np.linalg.inv(c0) if cov == "full" else np.array([np.diag(np.linalg.inv(c)) for c in c0])
    gm = GaussianMixture(2, covariance_type=cov, weights_init=w0, means_init=m0, precisions_init=prec,
                         tol=1e-10, max_iter=5000).fit(x)
    sk_cov = gm.covariances_ if cov == "full" else np.array([np.diag(c) for c in gm.covariances_])
    assert fam.converged[0] and gm.converged_
    np.testing.assert_allclose(fam.weights[0], gm.weights_, rtol=1e-6)
    np.testing.assert_allclose(fam.means[0], gm.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fam.covs[0], sk_cov, rtol=1e-6, atol=1e-9)
    assert abs(fam.lower_bound[0] - gm.lower_bound_) < 1e-9


def test_lloyd_matches_sklearn_kmeans():
    """From the same initial centres the NumPy Lloyd ends in scikit-learn's partition."""
    from sklearn.cluster import KMeans
    rng = np.random.default_rng(0)
    x = two_blobs(1, 3000, rng)[None]
    cen = np.array([[[-0.3], [0.2]]])
    lab, _ = G._lloyd_numpy(x, cen, 300, 1e-4 * x.var())
    km = KMeans(2, init=cen[0], n_init=1).fit(x[0])
    assert (lab[0] == km.labels_).all()


@pytest.mark.skipif(not HAVE_C, reason="no C compiler")
@pytest.mark.parametrize("k, init", [(2, "kmeans++"), (2, "warm"), (3, "kmeans++"), (1, "kmeans++")])
def test_compiled_and_numpy_paths_agree(k, init):
    """The C kernel and the NumPy fallback give the same fits, iteration counts and samples."""
    w = np.full(k, 1.0 / k)
    m = np.linspace(-3, 3, k)[:, None]
    c = np.full((k, 1, 1), 0.8)
    fams = {}
    for backend in ("c", "numpy"):
        cfg = GMMConfig(components=k, init=init, backend=backend)
        fam = GMMFamily.from_params(w, m, c, 6, cfg)
        rng = np.random.default_rng(11)
        x = fam.sample(3000, rng)
        for _ in range(3):
            fam.fit(x, rng)
            x = fam.sample(3000, rng)
        fams[backend] = (fam, x)
    (a, xa), (b, xb) = fams["c"], fams["numpy"]
    np.testing.assert_array_equal(a.n_iter, b.n_iter)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-9)
    np.testing.assert_allclose(a.means, b.means, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.covs, b.covs, rtol=1e-9)
    np.testing.assert_allclose(xa, xb, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not HAVE_C, reason="no C compiler")
@pytest.mark.parametrize("far", [2, 40])
def test_one_em_step_with_a_small_component_agrees(far):
    """One warm EM step where component 0 holds `far` of 3000 points: the kernel's sums for a
    component this small (2 points) are accumulated directly, for 40 derived from the totals."""
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.normal(-6, 1, far), rng.normal(0, 1, 3000 - far)])[None, :, None]
    out = []
    for backend in ("c", "numpy"):
        cfg = GMMConfig(backend=backend, max_iter=1)
        fam = GMMFamily.from_params([far / 3000, 1 - far / 3000], [[-6.0], [0.0]], [[[1.0]], [[1.0]]], 1, cfg)
        fam.fit(x, np.random.default_rng(0), init="warm")
        out.append(fam)
    np.testing.assert_allclose(out[0].weights, out[1].weights, rtol=1e-10)
    np.testing.assert_allclose(out[0].means, out[1].means, rtol=1e-10)
    np.testing.assert_allclose(out[0].covs, out[1].covs, rtol=1e-10)
    np.testing.assert_allclose(out[0].lower_bound, out[1].lower_bound, rtol=1e-12)


@pytest.mark.skipif(not HAVE_C, reason="no C compiler")
def test_compiled_threads_split_chains_exactly():
    """Splitting chains over threads changes nothing: each chain is computed by one thread."""
    out = []
    for threads in (1, 2):
        fam = GMMFamily.from_params(chains=8, cfg=GMMConfig(threads=threads), **W1)
        fam._threads = lambda work, t=threads: t
        rng = np.random.default_rng(5)
        x = fam.sample(10_000, rng)
        fam.fit(x, rng)
        out.append((fam.state_dict(), fam.sample(10_000, rng)))
    for key in out[0][0]:
        np.testing.assert_array_equal(out[0][0][key], out[1][0][key])
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_box_muller_normals():
    """The raw-word Box-Muller transform gives N(0, 1) draws (KS test, p > 1e-3)."""
    z = G.box_muller(np.random.default_rng(2).bit_generator.random_raw(200_000))
    assert kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / np.sqrt(len(z)) and abs(z.var() - 1) < 5 * np.sqrt(2 / len(z))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_moments_and_counts(backend):
    """Sample moments match the mixture within 5 standard errors; counts are Multinomial(n, w)."""
    w, m, c = [0.3, 0.7], [[-1.0], [2.5]], [[[0.5]], [[2.0]]]
    fam = GMMFamily.from_params(w, m, c, 3, GMMConfig(backend=backend))
    rng = np.random.default_rng(4)
    n = 200_000
    x = fam.sample(n, rng)[:, :, 0]
    mean, cov = fam.moments()
    var = cov[0, 0, 0]
    assert np.all(np.abs(x.mean(1) - mean[0, 0]) < 5 * np.sqrt(var / n))
    fourth = sum(wk * ((mk[0] - mean[0, 0]) ** 4 + 6 * (mk[0] - mean[0, 0]) ** 2 * ck[0][0] + 3 * ck[0][0] ** 2)
                 for wk, mk, ck in zip(w, m, c))
    assert np.all(np.abs(x.var(1) - var) < 5 * np.sqrt((fourth - var ** 2) / n))
    counts = fam.last_counts
    assert counts.shape == (3, 2) and (counts.sum(1) == n).all()
    # the counts are exactly the Generator's multinomial draw (first use of the stream)
    np.testing.assert_array_equal(counts, np.random.default_rng(4).multinomial(n, [w] * 3))
    # points come grouped by component: the first counts[s, 0] of chain s belong to component 0
    z0 = (x[0, :counts[0, 0]] + 1.0) / np.sqrt(0.5)
    assert kstest(z0, "norm").pvalue > 1e-3


def test_counts_are_multinomial_across_chains():
    """Over 4000 chains, count_0 has the Binomial(n, w0) mean and variance (5 standard errors)."""
    fam = GMMFamily.from_params([0.2, 0.8], [[0.0], [1.0]], [[[1.0]], [[1.0]]], 4000)
    fam.sample(50, np.random.default_rng(9))
    c0 = fam.last_counts[:, 0]
    s = len(c0)
    assert abs(c0.mean() - 10) < 5 * np.sqrt(8 / s)
    assert abs(c0.var(ddof=1) - 8) < 5 * 8 * np.sqrt(2 / (s - 1))


def test_log_prob_and_cdf():
    """log_prob integrates to 1 on a grid, matches the derivative of cdf; cdf rises from 0 to 1."""
    fam = GMMFamily.from_params([0.3, 0.7], [[-1.0], [2.5]], [[[0.5]], [[2.0]]], 2)
    g = np.linspace(-15, 20, 20001)
    dens = np.exp(fam.log_prob(g[:, None]))
    assert dens.shape == (2, len(g))
    np.testing.assert_allclose(np.trapezoid(dens, g, axis=1), 1.0, atol=1e-8)
    cdf = fam.cdf(g)
    assert (np.diff(cdf, axis=1) >= 0).all() and (cdf[:, 0] < 1e-12).all() and (cdf[:, -1] > 1 - 1e-12).all()
    np.testing.assert_allclose(np.gradient(cdf[0], g), dens[0], atol=1e-6)


def test_log_prob_2d_matches_scipy():
    """The 2-D mixture density agrees with scipy's multivariate normals."""
    from scipy.stats import multivariate_normal as mvn
    w, m = [0.4, 0.6], [[0.0, 1.0], [2.0, -1.0]]
    c = [[[1.0, 0.5], [0.5, 2.0]], [[0.3, 0.0], [0.0, 0.6]]]
    fam = GMMFamily.from_params(w, m, c, 2)
    pts = np.random.default_rng(0).normal(size=(50, 2))
    ref = np.log(sum(wk * mvn(mk, ck).pdf(pts) for wk, mk, ck in zip(w, m, c)))
    np.testing.assert_allclose(fam.log_prob(pts), np.broadcast_to(ref, (2, 50)), rtol=1e-12)


def test_params_are_sorted_by_mean():
    """Columns follow the components in order of their mean, whatever their internal order."""
    fam = GMMFamily.from_params([0.7, 0.3], [[3.0], [-1.0]], [[[4.0]], [[1.0]]], 2)
    p = fam.params()
    np.testing.assert_allclose(p["mean_0"], -1.0)
    np.testing.assert_allclose(p["std_0"], 1.0)
    np.testing.assert_allclose(p["weight_1"], 0.7)
    np.testing.assert_allclose(p["std_1"], 2.0)
    assert set(p) == {"mean_0", "std_0", "weight_0", "mean_1", "std_1", "weight_1", "degenerate"}
    fam2 = GMMFamily.from_params([0.5, 0.5], [[1.0, 0.0], [-1.0, 2.0]], [np.eye(2), 4 * np.eye(2)], 1)
    p2 = fam2.params()
    assert p2["mean_0_0"][0] == -1.0 and p2["mean_0_1"][0] == 2.0 and p2["std_0"][0] == 2.0


@pytest.mark.parametrize("init", ["kmeans++", "warm"])
def test_state_dict_round_trip_resumes_exactly(init):
    """Restoring state_dict() into a new family reproduces the following generations bit for bit."""
    def step(fam, x, g):
        """Generation g: fit and sample with that generation's own stream (as the engine derives them)."""
        rng = np.random.default_rng([1, g])
        fam.fit(x, rng)
        return fam.sample(5000, rng)

    cfg = GMMConfig(init=init)
    a = GMMFamily.from_params(chains=4, cfg=cfg, **W1)
    x = a.sample(5000, np.random.default_rng(0))
    for g in range(3):
        x = step(a, x, g)
    state, x_saved = a.state_dict(), x.copy()
    for g in range(3, 6):
        x = step(a, x, g)
    b = GMMFamily(cfg, 1, 4)
    b.load_state_dict({k: np.array(v) for k, v in state.items()})
    y = x_saved
    for g in range(3, 6):
        y = step(b, y, g)
    np.testing.assert_array_equal(x, y)
    for key, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[key])


def test_family_deepcopies_and_pickles():
    """A fitted family (holding ctypes handles) survives deepcopy and pickle and samples the same."""
    import copy
    import pickle
    fam = GMMFamily.from_params(chains=2, **W1)
    fam.fit(fam.sample(1000, np.random.default_rng(0)), np.random.default_rng(1))
    for other in (copy.deepcopy(fam), pickle.loads(pickle.dumps(fam))):
        np.testing.assert_array_equal(other.sample(100, np.random.default_rng(2)), fam.sample(100, np.random.default_rng(2)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_points_are_degenerate_not_nan(backend):
    """All points equal: no crash, finite parameters, degenerate = 1."""
    fam = GMMFamily(GMMConfig(backend=backend), 1, 2)
    x = np.full((2, 500, 1), 3.0)
    x[1] = np.random.default_rng(0).normal(size=(500, 1))
    fam.fit(x, np.random.default_rng(1))
    assert np.isfinite(fam.weights).all() and np.isfinite(fam.means).all() and np.isfinite(fam.covs).all()
    np.testing.assert_array_equal(fam.params()["degenerate"], [1.0, 0.0])
    assert (fam.covs[0] > 0).all() and np.isfinite(fam.log_prob(np.array([[3.0]]))).all()
    assert np.isfinite(fam.sample(100, np.random.default_rng(2))).all()


@pytest.mark.parametrize("backend", BACKENDS + ["numpy-2d"])
def test_empty_component_is_flagged_and_reseeded(backend):
    """A component far from all data gets no responsibility: flagged, finite; warm mode re-seeds it next time."""
    d = 2 if backend == "numpy-2d" else 1
    cfg = GMMConfig(init="warm", backend="numpy" if d == 2 else backend)
    fam = GMMFamily.from_params([0.5, 0.5], [[0.0] * d, [200.0] * d], [np.eye(d), np.eye(d)], 1, cfg)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 1000, d))
    fam.fit(x, rng, init="warm")
    assert fam.degenerate[0] and np.isfinite(fam.covs).all() and np.isfinite(fam.means).all()
    assert fam.params()["degenerate"][0] == 1.0
    bimodal = np.concatenate([rng.normal(-3, 1, (1, 500, d)), rng.normal(3, 1, (1, 500, d))], axis=1)
    fam.fit(bimodal, rng)   # warm mode, but the last fit was degenerate: a fresh k-means++ start
    assert not fam.degenerate[0]
    np.testing.assert_allclose(np.sort(fam.means[0, :, 0]), [-3, 3], atol=0.3)


def test_config_check_and_bad_data():
    """Fewer training points than components is a config error and a fit error."""
    class Exp:
        """An experiment whose regime draws 3 points a generation."""
        class regime:
            n = 3
    errs = GMMConfig(components=5).check(Exp)
    assert errs and errs[0][0] == "model.components"
    with pytest.raises(ValueError):
        GMMFamily(GMMConfig(components=5), 1, 1).fit(np.zeros((1, 3, 1)), np.random.default_rng(0))


def test_import_is_lazy_and_missing_compiler_falls_back(tmp_path, monkeypatch):
    """Importing compiles nothing; without a compiler the family warns once and uses NumPy."""
    code = "import model_collapse.families.gmm as g; assert not g.fast._KERNEL['tried']"
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setattr(G.fast, "_KERNEL", {"kernel": None, "tried": False, "error": None})
    monkeypatch.setenv("MODEL_COLLAPSE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")
    with pytest.warns(RuntimeWarning, match="NumPy"):
        fam = GMMFamily.from_params(chains=2, **W1)
        x = fam.sample(1000, np.random.default_rng(0))
    fam.fit(x, np.random.default_rng(1))
    assert fam._runner is False and np.isfinite(fam.means).all()
    with pytest.raises(RuntimeError):
        GMMFamily.from_params(chains=1, cfg=GMMConfig(backend="c"), **W1).sample(10, np.random.default_rng(0))


# --------------------------------------------------------------------------- whole trajectories

# W1 at reduced size: the scikit-learn loop costs ~4 ms a generation whatever N is (overhead), so
# 200 generations x 50 chains would take ~40 CPU seconds. The drift of a refitted model grows with
# generations / N, so 100 generations at N = 500 travel as far as 200 at N = 1,000 (or 2,000 at
# N = 10,000); benchmarks/bench_gmm.py compares at full size (N = 10,000, 500 generations).
TRAJ_GENS, TRAJ_N, SK_CHAINS, OUR_CHAINS = 100, 500, 50, 400


def sklearn_trajectory(seed: int) -> tuple[float, float]:
    """One chain of the plain scikit-learn loop: (smaller component sd, weight of the left component)."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(seed)
    x = GMMFamily.from_params(chains=1, **W1).sample(TRAJ_N, rng)[0]
    with threadpool_limits(1):
        for _ in range(TRAJ_GENS):
            gm = GaussianMixture(2, random_state=int(rng.integers(2**31))).fit(x)
            gm.random_state = int(rng.integers(2**31))
            x, _ = gm.sample(TRAJ_N)
    sd = np.sqrt(gm.covariances_.ravel())
    return float(sd.min()), float(gm.weights_[np.argmin(gm.means_.ravel())])


def sklearn_trajectories(seeds) -> list:
    """A batch of chains (one worker's share)."""
    return [sklearn_trajectory(s) for s in seeds]


@pytest.fixture(scope="module", autouse=True)
def sklearn_oracle(request):
    """Start the scikit-learn chains in two worker processes when this module starts, so they run
    while the other tests do (only if the trajectory test was collected)."""
    if not any(item.name == "test_default_trajectories_match_the_sklearn_loop" for item in request.session.items):
        yield None
        return
    seeds = list(range(100, 100 + SK_CHAINS))
    pool = mp.get_context("spawn").Pool(2)   # spawn: no OpenMP/BLAS thread state inherited via fork
    try:
        yield pool.map_async(sklearn_trajectories, [seeds[0::2], seeds[1::2]])
    finally:
        pool.terminate()
        pool.join()


def test_default_trajectories_match_the_sklearn_loop(sklearn_oracle):
    """After 100 generations of W1 (N = 500) the spread over chains of the smaller sd and of the
    left weight matches the scikit-learn loop's (50 chains): two-sample KS tests, each p > 0.001.
    With 50 oracle chains the test catches gross departures only: in trials the default gave
    p = 0.1-0.6 and warm starts at tol 1e-6 p = 1e-4-0.07, depending on the oracle's seeds."""
    rng = np.random.default_rng(0)
    fam = GMMFamily.from_params(chains=OUR_CHAINS, **W1)
    x = fam.sample(TRAJ_N, rng)
    for _ in range(TRAJ_GENS):
        fam.fit(x, rng)
        x = fam.sample(TRAJ_N, rng)
    p = fam.params()
    ours_sd = np.minimum(p["std_0"], p["std_1"])
    sk = np.array([r for part in sklearn_oracle.get(timeout=900) for r in part])
    assert ks_2samp(ours_sd, sk[:, 0]).pvalue > 1e-3
    assert ks_2samp(p["weight_0"], sk[:, 1]).pvalue > 1e-3


# -- start from the truth, let a component die (Qiao et al. 2025) ------------------------------------------------
UNEQUAL = {"kind": "gmm", "weights": [0.25, 0.75], "means": [[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]],
           "stds": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]}


def test_start_truth_is_em_from_the_true_parameters_as_scikit_learn():
    """start: truth runs generation 0's EM from the true mixture: per chain the same weights as scikit-learn's
    GaussianMixture warm-started from the truth (within EM's tolerance), unlike the k-means++ start."""
    from sklearn.mixture import GaussianMixture
    from model_collapse.config import validate
    from model_collapse.loop import build
    chains = 12
    got = {}
    for start in ("truth", "data"):
        exp = validate({"chains": chains, "source": UNEQUAL, "model": {"kind": "gmm", "start": start},
                        "regime": {"kind": "replace", "n": 100}})
        src, fam, reg, _ = build(exp)
        x = src.real(100, np.random.default_rng(0))
        fam.fit(x, np.random.default_rng(1))
        got[start] = np.sort(fam.weights, axis=1)
    w, m, c = (np.array(a) for a in (UNEQUAL["weights"], UNEQUAL["means"], np.eye(3)[None].repeat(2, 0)))
    ref = []
    for s in range(chains):
        gm = GaussianMixture(2, weights_init=w, means_init=m, precisions_init=np.linalg.inv(c), tol=1e-3,
                             reg_covar=1e-6).fit(x[s])
        ref.append(np.sort(gm.weights_))
    assert np.abs(got["truth"] - np.array(ref)).max() < 1e-3
    assert np.abs(got["data"] - np.array(ref)).max() > 1e-2      # the default start lands elsewhere


@pytest.mark.parametrize("policy", ["keep", "reseed"])
def test_a_dead_component_stays_dead_under_keep_and_comes_back_under_reseed(policy):
    """A component forced to weight 0: under keep it stays at weight 0, is never sampled, and `alive` counts it
    out, generation after generation; under reseed the next warm fit restarts the chain and it comes back."""
    cfg = GMMConfig(components=2, init="warm", degenerate=policy, backend="numpy")
    fam = GMMFamily(cfg, 1, 3)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (3, 200, 1)), rng.normal(2, 1, (3, 200, 1))], axis=1)
    fam.fit(x, rng)
    state = fam.state_dict()
    state["weights"][:, 0], state["weights"][:, 1] = 0.0, 1.0        # component 0 forced out
    fam.load_state_dict(state)
    for g in range(4):
        fam.fit(x, rng)
        sample = fam.sample(500, rng)
        if policy == "keep":
            assert (fam.weights[:, 0] == 0).all() and (fam.last_counts[:, 0] == 0).all()
            assert (fam.params()["alive"] == 1).all()
        elif g >= 1:   # the fit after the degenerate one re-seeded every chain
            assert (fam.weights[:, 0] > 0.3).all(), fam.weights
    assert sample.shape == (3, 500, 1)


def test_shuffle_permutes_points_not_coordinates():
    """shuffle in d > 1 reorders whole points (numpy's permuted() would shuffle each coordinate on its own)."""
    fam = GMMFamily.from_params([0.5, 0.5], [[0.0, 0.0], [5.0, 5.0]], [np.eye(2) * 1e-4] * 2, 2,
                                GMMConfig(components=2, shuffle=True))
    x = fam.sample(400, np.random.default_rng(0))
    near = lambda c: (np.abs(x - c).max(-1) < 0.1)    # noqa: E731 - points at a mode, both coordinates
    assert (near(0.0) | near(5.0)).all()
    assert not (near(0.0)[:, :200].all() or near(5.0)[:, :200].all())   # and the order is mixed
