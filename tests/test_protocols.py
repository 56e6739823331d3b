"""The papers' own protocols: selection bias (select), per-chain held-out sets, the dispersion ratio
(Qiao et al. 2025; Kazdan et al. 2024). The GMM's start: truth and degenerate: keep are in test_gmm.py."""

from __future__ import annotations

import numpy as np
import pytest

import model_collapse as mc
from model_collapse.config import validate
from model_collapse.errors import ConfigError
from model_collapse.filters.stage import filtered_sample
from model_collapse.loop import build
from model_collapse.metrics.distribution import Context, dispersion

GAUSS3 = {"kind": "gaussian", "mean": [0.0, 0.0, 0.0], "cov": [[1.0, 0.3, 0.0], [0.3, 2.0, 0.0], [0.0, 0.0, 0.5]]}


@pytest.mark.parametrize("by", ["mahalanobis", "euclidean", "log_density"])
def test_select_keeps_exactly_the_top_n_of_n_over_alpha_draws(by):
    """One round of ceil(n / alpha) draws; the kept n are exactly the n best-scored of them (in draw order), and
    the acceptance rate is n / ceil(n / alpha)."""
    target = {"mean": [1.0, -0.5, 0.0], "cov": [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]]}
    exp = validate({"chains": 4, "source": GAUSS3, "model": {"kind": "gaussian"},
                    "filter": {"kind": "select", "by": by, "share": 0.3, **target},
                    "regime": {"kind": "replace", "n": 100}})
    src, fam, _, filt = build(exp)
    fam.fit(src.real(500, np.random.default_rng(0)), np.random.default_rng(1))
    out, rate = filtered_sample(fam, filt, 100, np.random.default_rng(2), np.random.default_rng(3))
    drawn = fam.sample(334, np.random.default_rng(2))                  # ceil(100 / 0.3): the same first round
    diff = drawn - np.array(target["mean"])
    inv = np.linalg.inv(np.array(target["cov"]))
    score = {"euclidean": -np.sqrt((diff ** 2).sum(-1)),
             "mahalanobis": -np.sqrt(np.einsum("snd,de,sne->sn", diff, inv, diff)),
             "log_density": -np.einsum("snd,de,sne->sn", diff, inv, diff)}[by]
    for s in range(4):
        best = np.sort(np.argsort(-score[s], kind="stable")[:100])
        assert np.array_equal(out[s], drawn[s][best])
    assert np.allclose(rate, 100 / 334)


def test_select_target_must_fit_the_data():
    with pytest.raises(ConfigError, match="filter.mean: has 2 values but the data has 3 dimensions"):
        validate({"source": GAUSS3, "model": {"kind": "gaussian"}, "filter": {"kind": "select", "mean": [0, 0]},
                  "regime": {"kind": "replace", "n": 10}})


def test_per_chain_reference_sets_differ_across_chains_and_repeat_on_rerun(tmp_path):
    """reference: per-chain scores each chain on its own held-out set, drawn from (seed, chain): generation-0 nll
    spreads more across chains than with one shared set, and a rerun gives the same numbers."""
    raw = {"seed": 5, "chains": 40, "generations": 1, "reference_n": 50, "source": {"kind": "gaussian"},
           "model": {"kind": "gaussian"}, "regime": {"kind": "replace", "n": 1000}, "metrics": ["nll"]}
    shared = mc.run(raw, out=tmp_path / "s", figures=False).metrics()["nll"].to_numpy()
    per = mc.run({**raw, "reference": "per-chain"}, out=tmp_path / "p", figures=False).metrics()["nll"].to_numpy()
    again = mc.run({**raw, "reference": "per-chain"}, out=tmp_path / "q", figures=False).metrics()["nll"].to_numpy()
    assert np.array_equal(per, again)
    # with n = 1000 the fits barely differ: a shared set of 50 gives nearly one value, own sets of 50 spread by
    # sd(log p)/sqrt(50) = 0.1 (a standard normal's log-density has sd 1/sqrt(2))
    assert shared.std() < 0.03 and 0.06 < per.std() < 0.16, (shared.std(), per.std())


def test_per_chain_reference_is_refused_by_metrics_of_one_shared_set():
    with pytest.raises(ConfigError, match="latent_sparsity scores one shared held-out set"):
        validate({"reference": "per-chain", "source": {"kind": "digits", "classifier": "mlp"},
                  "model": {"kind": "vae", "hidden": [8], "latent": 2}, "regime": {"kind": "replace", "n": 100},
                  "metrics": ["latent_sparsity"]})


def test_dispersion_of_samples_from_the_truth_is_one_within_its_standard_error():
    """200 chains of n = 400 draws from a 3-D Gaussian truth: the dispersion ratio averages 1 within 4 standard
    errors of the mean, and its spread over chains is the closed form sqrt(2 tr(C^2) / (n - 1)) / tr(C) within
    20%."""
    exp = validate({"chains": 200, "source": GAUSS3, "model": {"kind": "gaussian"},
                    "regime": {"kind": "replace", "n": 10}, "metrics": [{"name": "dispersion", "n": 400}]})
    src = build(exp)[0]
    truth = src.truth
    ctx = Context(0, truth, None, None, src, None, np.random.default_rng(0), None, exp)
    d = dispersion(ctx, n=400)["dispersion"]
    c = np.array(GAUSS3["cov"])
    se = np.sqrt(2 * np.trace(c @ c) / 399) / np.trace(c)
    assert abs(d.mean() - 1) < 4 * se / np.sqrt(200), (d.mean(), se)
    assert abs(d.std(ddof=1) / se - 1) < 0.2, (d.std(ddof=1), se)


def test_dispersion_falls_under_replace(tmp_path):
    """A Gaussian refitted by MLE on 20 of its own samples loses spread: the dispersion ratio falls well below 1."""
    raw = {"chains": 50, "generations": 40, "source": GAUSS3, "model": {"kind": "gaussian"},
           "regime": {"kind": "replace", "n": 20}, "metrics": ["dispersion"]}
    df = mc.run(raw, out=tmp_path / "r", figures=False).metrics()
    by_g = df.groupby("generation")["dispersion"].mean()
    assert by_g.iloc[0] > 0.8 and by_g.iloc[-1] < 0.5, by_g


@pytest.mark.parametrize("source, model", [({"kind": "gaussian"}, {"kind": "gaussian"}),
                                           ({"kind": "categorical", "k": 5}, {"kind": "categorical"}),
                                           ({"kind": "linreg"}, {"kind": "linreg"})])
def test_closed_form_fits_refuse_a_start_and_say_why(source, model):
    """Starting from the truth means something only for an iterative fit (gmm's EM): the closed-form families
    accept start: data and refuse start: truth with the reason and where it applies."""
    raw = {"source": source, "regime": {"kind": "replace", "n": 50}}
    assert validate({**raw, "model": {**model, "start": "data"}}).model.start == "data"
    with pytest.raises(ConfigError) as e:
        validate({**raw, "model": {**model, "start": "truth"}})
    assert "model.start" in str(e.value) and "closed form" in str(e.value) and "gmm" in str(e.value)


RANDOM_GMM = {"kind": "random-gmm", "dim": 6, "truth_seed": 7}


def test_random_gmm_truth_is_drawn_from_its_seed_by_its_stated_construction():
    """Two components at mu +- shift u with covariances 0.7 Sigma and 0.9 Sigma; the target's centre is mu moved
    in exactly half the coordinates, its covariance 0.3 Sigma; the same seed gives the same truth, another seed
    or direction another one (the centre and Sigma stay with the seed)."""
    cfg = validate({"source": RANDOM_GMM, "model": {"kind": "gmm"}, "regime": {"kind": "replace", "n": 50}}).source
    w, m, c = cfg.arrays()
    t_mean, t_cov = cfg.target()
    mu = m.mean(0)
    assert np.allclose(w, [0.5, 0.5]) and np.isclose(np.linalg.norm(m[0] - m[1]), 2 * 0.9)
    assert np.allclose(c[1], c[0] * 0.9 / 0.7) and np.allclose(t_cov, c[0] * 0.3 / 0.7)
    assert (~np.isclose(t_mean, mu)).sum() == 3
    again = cfg.model_copy().arrays()
    assert all(np.array_equal(a, b) for a, b in zip((w, m, c), again))
    other = cfg.model_copy(update={"truth_seed": 8}).arrays()
    assert not np.allclose(other[1], m)
    turned = cfg.model_copy(update={"direction": 1}).arrays()
    assert np.allclose(turned[1].mean(0), mu) and np.allclose(turned[2], c) and not np.allclose(turned[1], m)
    # the sampled truth has the mixture's mean: 20,000 draws within 4 standard errors per coordinate
    x = cfg.build(1).real(20_000, np.random.default_rng(0))[0]
    cov = 0.5 * (c[0] + c[1]) + 0.25 * np.outer(m[0] - m[1], m[0] - m[1])
    assert (np.abs(x.mean(0) - mu) < 4 * np.sqrt(np.diag(cov) / 20_000)).all()


def test_select_toward_the_sources_target_keeps_the_draws_closest_to_it():
    """target: source takes the random-gmm's biased target: the kept 50 of ceil(50 / 0.05) = 1,000 draws are the
    50 nearest to it by Mahalanobis distance under the target's covariance."""
    exp = validate({"chains": 3, "source": RANDOM_GMM,
                    "model": {"kind": "gmm", "start": "truth", "init": "warm", "degenerate": "keep"},
                    "filter": {"kind": "select", "share": 0.05, "target": "source"},
                    "regime": {"kind": "replace", "n": 50}})
    src, fam, _, filt = build(exp)
    fam.fit(src.real(200, np.random.default_rng(0)), np.random.default_rng(1))
    out, rate = filtered_sample(fam, filt, 50, np.random.default_rng(2), np.random.default_rng(3))
    drawn = fam.sample(1000, np.random.default_rng(2))
    mean, cov = exp.source.target()
    diff = drawn - mean
    z2 = np.einsum("snd,de,sne->sn", diff, np.linalg.inv(cov), diff)
    for s in range(3):
        assert np.array_equal(out[s], drawn[s][np.sort(np.argsort(z2[s], kind="stable")[:50])])
    assert np.allclose(rate, 0.05)


@pytest.mark.parametrize("source, filt, message", [
    (GAUSS3, {"target": "source"}, "target: source needs a source with a selection target of its own"),
    (RANDOM_GMM, {"target": "source", "mean": [0] * 6}, "target: source takes the source's mean and cov")])
def test_select_target_source_needs_a_source_that_has_one(source, filt, message):
    with pytest.raises(ConfigError, match=message):
        validate({"source": source, "model": {"kind": "gaussian"}, "filter": {"kind": "select", **filt},
                  "regime": {"kind": "replace", "n": 10}})


def test_random_gmm_seed_gives_qiao_et_al_s_truth_and_target():
    """Qiao et al.'s script (NonGaussian_Modeling) draws, from one default_rng(seed): mu, A, the biased
    coordinates (d // 2 of them, without replacement) and their 3 N(0, 1) moves, then one direction for its
    gmm and one for its unequal_gmm. Restated here draw by draw, their seed 42 must give our truth_seed 42."""
    d, rng = 10, np.random.default_rng(42)
    mu = rng.normal(size=d)
    a = rng.normal(size=(d, d))
    sigma = a @ a.T + 0.1 * np.eye(d)
    u_bias = mu.copy()
    dims = rng.choice(d, size=d // 2, replace=False)
    u_bias[dims] += rng.normal(size=len(dims)) * 3.0
    directions = [v / np.linalg.norm(v) for v in (rng.normal(size=d), rng.normal(size=d))]
    for direction, weights in ((0, [0.5, 0.5]), (1, [0.8, 0.2])):
        cfg = validate({"source": {"kind": "random-gmm", "dim": d, "truth_seed": 42, "direction": direction,
                                   "weights": weights},
                        "model": {"kind": "gmm"}, "regime": {"kind": "replace", "n": 100}}).source
        w, m, c = cfg.arrays()
        u = directions[direction]
        assert np.allclose(w, weights)
        assert np.allclose(m, [mu + 0.9 * u, mu - 0.9 * u]) and np.allclose(c, [0.7 * sigma, 0.9 * sigma])
        t_mean, t_cov = cfg.target()
        assert np.allclose(t_mean, u_bias) and np.allclose(t_cov, 0.3 * sigma)
