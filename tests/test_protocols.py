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
