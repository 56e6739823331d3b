"""Image quality metrics (FID, PRDC, memorisation, latent sparsity), the VAE's sampling bias and the
MAD loops of the mix regime. Fast: scikit-learn's 8x8 digits and small random feature sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_collapse.config import validate
from model_collapse.families.vae import VAEConfig, VAEFamily
from model_collapse.metrics import METRICS, Context
from model_collapse.metrics import quality as q
from model_collapse.regimes.basic import MixConfig
from model_collapse.sources.images import ImageSourceConfig

TINY_VAE = dict(hidden=[32], latent=4, batch=64, compile=False, threads=1)
EXP = {"chains": 1, "generations": 2, "source": {"kind": "digits"},
       "model": {"kind": "vae", **TINY_VAE, "epochs": 2,
                 "classifier": {"kind": "mlp", "hidden": [32], "max_epochs": 2}},
       "regime": {"kind": "replace", "n": 500}, "checkpoint_seconds": 0}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits source with its reference CNN (trained once into a module cache), and all 1,797 images.

    The CNN is trained with one thread first: the cache key leaves threads out, so the source then
    loads it. Two threads on a 2-core machine shared with other jobs made this training ~20x slower.
    """
    from model_collapse.nn.classifier import REFERENCE_CONFIG, reference_classifier
    from model_collapse.paths import cache_dir
    mp = pytest.MonkeyPatch()
    mp.setenv("MODEL_COLLAPSE_CACHE", str(tmp_path_factory.mktemp("cache")))
    src = ImageSourceConfig(kind="digits").build(1)
    reference_classifier("digits", src.image_shape, src.train, src.test, cache_dir() / "classifiers",
                         REFERENCE_CONFIG.model_copy(update={"threads": 1}))
    from model_collapse.nn import classifier as cl
    before = cl.reference_trainings
    src.reference_classifier()
    assert cl.reference_trainings == before   # loaded from the cache, not trained again
    test = src.reference(10 ** 6, np.random.default_rng(0))
    yield src, np.concatenate([src.pool, test])
    mp.undo()


def ctx_for(src, samples, exp=None, model=None, reference=None, generation=0):
    return Context(generation, model, samples, None, src, reference, np.random.default_rng(0), exp=exp)


def noisy(x: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Images (..., P + 1) with N(0, sigma^2) pixel noise, clipped to 0..255 (labels kept)."""
    out = x.copy()
    px = x[..., :-1] + np.random.default_rng(seed).normal(0, sigma, x[..., :-1].shape)
    out[..., :-1] = np.clip(np.rint(px), 0, 255)
    return out


# -- FID -----------------------------------------------------------------------------------
def random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T + (0 if rank else 0.1 * np.eye(d))


def test_fid_eigen_form_equals_other_formulas():
    """The symmetric-eigen form against (a) the eigenvalues of the non-symmetric product C1 C2, which
    are those of C1^1/2 C2 C1^1/2; (b) the closed form for diagonal covariances,
    |mu1 - mu2|^2 + sum (sqrt a_i - sqrt b_i)^2; (c) equal covariances: |mu1 - mu2|^2."""
    rng = np.random.default_rng(0)
    for d in (1, 3, 8):
        m1, m2 = rng.normal(size=d), rng.normal(size=d)
        c1, c2 = random_cov(rng, d), random_cov(rng, d)
        cross = np.sqrt(np.linalg.eigvals(c1 @ c2).real.clip(0)).sum()
        direct = (m1 - m2) @ (m1 - m2) + np.trace(c1) + np.trace(c2) - 2 * cross
        assert q.frechet_distance(m1, c1, m2, c2) == pytest.approx(direct, rel=1e-9, abs=1e-9)
        a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
        closed = (m1 - m2) @ (m1 - m2) + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
        assert q.frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(closed, rel=1e-9)
        assert q.frechet_distance(m1, c1, m2, c1) == pytest.approx((m1 - m2) @ (m1 - m2), abs=1e-8)
    # A rank-deficient covariance (more features than items): finite, and the precomputed root is used.
    c1, c2 = random_cov(rng, 6, rank=2), random_cov(rng, 6, rank=3)
    got = q.frechet_distance(np.zeros(6), c1, np.zeros(6), c2, q.psd_sqrt(c1))
    cross = np.sqrt(np.linalg.eigvals(c1 @ c2).real.clip(0)).sum()
    assert got == pytest.approx(np.trace(c1) + np.trace(c2) - 2 * cross, rel=1e-6)


def test_fid_halves_near_zero_and_rising_with_noise(digits):
    """Two disjoint halves of the real digits give a FID below a quarter of the FID against the same
    half with N(0, 64^2) pixel noise (measured ~3 vs ~28), and FID rises with every noise level.

    The 297 test digits are too few for 128-dimensional covariances (their halves alone differ by
    FID ~20), so the halves are drawn from all 1,797 digits.
    """
    src, data = digits
    clf = src.reference_classifier()
    perm = np.random.default_rng(0).permutation(len(data))
    a, b = data[perm[: len(data) // 2]], data[perm[len(data) // 2:]]

    def stats(x):
        f = q.embed(clf, x[:, :-1]).astype(np.float64)
        return f.mean(0), np.cov(f, rowvar=False)
    ref = stats(a)
    fids = [q.frechet_distance(*ref, *stats(noisy(b, s))) for s in (0, 16, 32, 64, 128)]
    assert 0 <= fids[0] < 0.25 * fids[3], fids
    assert all(x < y for x, y in zip(fids, fids[1:])), fids


def test_fid_metric_columns_and_noise(digits):
    """The metric: real set = the whole test split (297 < n), the sample count recorded, noise raises FID."""
    src, data = digits
    clean = data[None, :1500]
    cols = [METRICS["fid"].instantiate({"n": 1000})(ctx_for(src, noisy(clean, s))) for s in (0, 64, 128)]
    assert cols[0]["fid_n"][0] == 1000 and cols[0]["fid_n_real"][0] == 297
    assert cols[0]["fid"][0] < cols[1]["fid"][0] < cols[2]["fid"][0]


# -- PRDC ----------------------------------------------------------------------------------
def brute_prdc(x, y, k):
    """Naeem et al. (2020) from full float64 distance matrices (the definition, written out)."""
    d = ((x[:, None].astype(float) - y[None]) ** 2).sum(-1)
    r = np.sort(((x[:, None].astype(float) - x[None]) ** 2).sum(-1), 1)[:, k]
    s = np.sort(((y[:, None].astype(float) - y[None]) ** 2).sum(-1), 1)[:, k]
    inside = d <= r[:, None]
    return {"precision": inside.any(0).mean(), "recall": (d <= s[None]).any(1).mean(),
            "density": inside.sum() / (k * len(y)), "coverage": inside.any(1).mean()}


def test_prdc_matches_the_definition_in_blocks(monkeypatch):
    monkeypatch.setattr(q, "BLOCK", 64)   # several blocks, one ragged
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, 6)) + 3).astype(np.float32)
    y = (rng.normal(size=(230, 6)) * 1.3 + 3.4).astype(np.float32)
    got, want = q.prdc_features(x, y, 5), brute_prdc(x, y, 5)
    for c in want:
        assert got[c] == pytest.approx(want[c], abs=1e-9), c
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] < 1


def test_prdc_of_a_set_against_itself_and_a_far_one():
    """Against itself: precision = recall = coverage = 1 and density = (k + 1) / k exactly (each real
    ball holds its centre and k neighbours); against a far-away copy: all four are 0."""
    x = np.random.default_rng(2).normal(size=(400, 16)).astype(np.float32)
    same = q.prdc_features(x, x.copy(), 5)
    assert same == {"precision": 1.0, "recall": 1.0, "density": pytest.approx(6 / 5), "coverage": 1.0}
    far = q.prdc_features(x, x + 100, 5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_metric_on_real_and_blank_digits(digits):
    src, _ = digits
    test = src.reference(10 ** 6, np.random.default_rng(0))[None]
    prdc = METRICS["prdc"].instantiate({})
    same = prdc(ctx_for(src, test[:, ::-1].copy()))   # the real set itself, in another order
    assert all(same[c][0] == 1 for c in ("precision", "recall", "coverage"))
    blank = np.zeros_like(test)
    assert all(v[0] < 0.05 for v in prdc(ctx_for(src, blank)).values())


# -- shared features -----------------------------------------------------------------------
def test_features_are_computed_once_per_generation_and_real_set_once_per_run(digits, monkeypatch):
    src, data = digits
    calls = []
    real_embed = q.embed
    monkeypatch.setattr(q, "embed", lambda clf, x: calls.append(len(x)) or real_embed(clf, x))
    q._CACHE.pop(src, None)                                 # a new run: nothing cached
    exp = validate(EXP)
    metrics = [METRICS[m].instantiate({"n": 400}) for m in ("fid", "prdc", "memorisation")]
    for g, chains in enumerate((data[None, :600], noisy(data[None, :600], 30))):
        ctx = ctx_for(src, np.concatenate([chains, chains[:, ::-1]]), exp=exp, generation=g)
        for fn in metrics:
            fn(ctx)
    # run: real set 297 + training set 500 once; each generation: 2 chains x 400 samples once
    assert sorted(calls) == sorted([297, 500, 400, 400, 400, 400]), calls
    calls.clear()
    ctx = ctx_for(src, data[None, :600], exp=exp)
    q.sample_features(ctx, 100)
    q.sample_features(ctx, 300)                             # asks for more: only the 200 new items
    assert calls == [100, 200]


# -- memorisation --------------------------------------------------------------------------
def test_memorisation_flags_copies_not_real_test_digits(digits):
    """Copies of the training images: all memorised; the real test digits themselves: about q by
    construction (the threshold is their own q-quantile); noisy copies: few."""
    src, _ = digits
    exp = validate(EXP)
    from model_collapse.rng import Seeds
    train = np.asarray(src.real(500, Seeds(exp.seed).rng("real")))        # what generation 0 trained on
    test = src.reference(10 ** 6, np.random.default_rng(0))[None]
    mem = METRICS["memorisation"].instantiate({"q": 0.1})
    copies = mem(ctx_for(src, train, exp=exp))
    assert copies["memorised"][0] == 1 and copies["nn_ratio"][0] == pytest.approx(0, abs=1e-2)
    real = mem(ctx_for(src, test, exp=exp))
    assert abs(real["memorised"][0] - 0.1) < 0.01 and real["nn_ratio"][0] == pytest.approx(1, abs=1e-6)
    blurred = mem(ctx_for(src, noisy(train, 64), exp=exp))
    assert blurred["memorised"][0] < 0.2 and blurred["nn_ratio"][0] > 1


# -- latent sparsity -----------------------------------------------------------------------
class LinearEncoder:
    """A hand-built 'encoder': encode_mean(x) = pixels / 255 @ W[s] for chain s."""

    def __init__(self, w):
        self.w = w   # (S, P, L)

    def encode_mean(self, x):
        x = np.broadcast_to(x, (len(self.w),) + x.shape[1:])
        return np.einsum("snp,spl->snl", x[..., :-1] / 255.0, self.w)


def test_hoyer_values():
    h = q.hoyer(np.array([[1.0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, -2, 0, 0]]))
    np.testing.assert_allclose(h, [1, 0, 1, 1], atol=1e-12)
    assert q.hoyer(np.array([3.0, 4.0])) == pytest.approx((np.sqrt(2) - 7 / 5) / (np.sqrt(2) - 1))


def test_latent_sparsity_on_a_hand_built_encoder(digits):
    """Chain 0 uses one of four dimensions (3 collapsed, Hoyer 1); chain 1 copies one code into all
    four (none collapsed, Hoyer 0); chain 2 as chain 1 but one dimension with std 1e-3 (variance
    1e-6 < 0.01: collapsed)."""
    src, data = digits
    w = np.random.default_rng(3).normal(size=64)
    w0 = np.zeros((64, 4))
    w0[:, 0] = w
    w1 = np.repeat(w[:, None], 4, axis=1)
    w2 = w1.copy()
    w2[:, 3] *= 1e-3 / (data[:, :-1] / 255.0 @ w).std()
    cols = q.latent_sparsity(ctx_for(src, None, model=LinearEncoder(np.stack([w0, w1, w2])), reference=data))
    np.testing.assert_allclose(cols["latent_collapsed"], [0.75, 0, 0.25])
    np.testing.assert_allclose(cols["latent_hoyer"][:2], [1, 0], atol=1e-9)
    assert cols["latent_hoyer"][2] == pytest.approx((2 - np.sqrt(3)) / (2 - 1), abs=0.01)   # 3 equal of 4


# -- VAE sampling bias ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae(digits):
    _, data = digits
    fam = VAEFamily(VAEConfig(**TINY_VAE, epochs=3), (8, 8), 1)
    fam.fit(data[None, :1500], np.random.default_rng(0))
    return fam


def test_temperature_below_one_shrinks_the_spread_of_samples(vae):
    spread = {}
    for t in (1.0, 0.5, 0.2):
        vae.cfg = vae.cfg.model_copy(update={"temperature": t})
        px = vae.sample(2000, np.random.default_rng(5))[0, :, :-1].astype(float)
        spread[t] = px.std(axis=0).mean()
    assert spread[0.2] < spread[0.5] < spread[1.0]
    assert spread[0.2] < 0.5 * spread[1.0]


def test_latents_default_is_one_randn_and_truncation_bounds_them(vae):
    for t in (1.0, 0.5):
        vae.cfg = vae.cfg.model_copy(update={"temperature": t, "truncation": None})
        z = vae.latents(5000, torch.Generator().manual_seed(1))
        assert torch.equal(z, torch.randn(1, 5000, 4, generator=torch.Generator().manual_seed(1)) * t)
        assert float(z.std()) == pytest.approx(t, rel=0.03)
    vae.cfg = vae.cfg.model_copy(update={"temperature": 0.5, "truncation": 1.0})
    z = vae.latents(5000, torch.Generator().manual_seed(1))
    assert float(z.abs().max()) <= 0.5 and float(z.abs().max()) > 0.49
    assert float(z.std()) == pytest.approx(0.5 * 0.5396, rel=0.03)   # sd of N(0, 1) truncated to [-1, 1]
    again = vae.latents(5000, torch.Generator().manual_seed(1))
    assert torch.equal(z, again)
    assert "Alemohammad" in VAEConfig.model_fields["temperature"].description


# -- the MAD loops through the mix regime --------------------------------------------------
def loop_sets(**shares):
    """Generation 0 and three later training sets of mix(n=40, real_n=20, shares) on tagged data."""
    cfg = MixConfig(n=40, real_n=20, **shares)
    reg = cfg.build()
    real = np.arange(20, dtype=float).reshape(1, 20, 1)
    source = type("Pool", (), {"fresh": lambda self, n, rng: rng.integers(1000, 2000, (1, n, 1)).astype(float)})()
    rng, sets = np.random.default_rng(0), []
    reg.first(real)
    for g in range(1, 4):
        samples = np.full((1, reg.samples_needed(g - 1), 1), -g, float)
        sets.append(reg.next(g, samples, real, source, rng)[0, :, 0])
    return reg.size(0), sets


def test_mix_expresses_the_three_mad_loops():
    n0, synthetic = loop_sets(fitted=1.0)
    assert n0 == 20 and all(len(s) == 40 and (s < 0).all() for s in synthetic)
    _, augmented = loop_sets(real=0.5, fitted=0.5)    # the whole real set, every generation
    assert all(sorted(s[s >= 0]) == list(range(20)) and (s < 0).sum() == 20 for s in augmented)
    _, fresh = loop_sets(truth=0.5, fitted=0.5)       # 20 new real items every generation
    real_parts = [set(s[s >= 1000]) for s in fresh]
    assert all(len(s[s >= 1000]) == 20 and (s < 0).sum() == 20 for s in fresh)
    assert real_parts[0] != real_parts[1] != real_parts[2]


def test_mad_mnist_recipe_validates():
    import yaml
    from pathlib import Path
    raw = yaml.safe_load((Path(__file__).parents[1] / "configs" / "mad-mnist.yaml").read_text())
    exp = validate(raw)
    assert set(exp.variants) == {"fully-synthetic", "augmentation", "fresh"}
    names = [m if isinstance(m, str) else m["name"] for m in exp.metrics]
    assert {"fid", "prdc"} <= set(names)


def test_quality_metrics_in_a_run(run, digits):
    """fid, prdc, memorisation and latent_sparsity through the loop: finite columns every generation."""
    cols = run({**EXP, "metrics": ["params", {"name": "fid", "n": 500}, {"name": "prdc", "n": 500},
                                   {"name": "memorisation", "n": 500}, "latent_sparsity"]})
    for c in ("fid", "fid_n", "precision", "recall", "density", "coverage", "memorised", "nn_ratio",
              "latent_collapsed", "latent_hoyer"):
        assert np.isfinite(cols[c]).all(), c
    assert (cols["fid_n"] == 500).all() and (cols["fid"] > 0).all()
