"""Linear regression collapse (Dohmatob et al. 2024; Gerstgrasser et al. 2024, Sec. 2).

OLS on a fixed design X of T rows, relabelled each generation from the last
fit plus fresh noise sigma. Closed forms (theory.py): replace
E||w_g - w*||^2 = sigma^2 d/(T-d-1) (g+1); accumulate
sigma^2 d/(T-d-1) sum_{i<=g+1} 1/i^2 < sigma^2 d/(T-d-1) pi^2/6.
Tolerance as in test_theory.py: |z| < 4 over >= 1,000 chains.
"""

import numpy as np
import pytest

from model_collapse import contracts
from model_collapse.config import dump, validate
from model_collapse.errors import ConfigError
from model_collapse.loop import build, run_generations
from model_collapse.store import RunStore, read_metrics
from model_collapse.theory import bound, expected, linreg_accumulate_bound, linreg_test_error

Z = 4.0
D, T, SIGMA = 5, 20, 1.5


def z_score(samples: np.ndarray, expected_value: float) -> float:
    """(mean - expected) / standard error."""
    return (samples.mean() - expected_value) / (samples.std(ddof=1) / np.sqrt(len(samples)))


def linreg(regime="replace", chains=2000, generations=31, seed=1, **model):
    """An experiment on x ~ N(0, I_D), y = x.w* + N(0, SIGMA^2), T rows per generation."""
    return {"seed": seed, "chains": chains, "generations": generations,
            "source": {"kind": "linreg", "dim": D, "noise": SIGMA},
            "model": {"kind": "linreg", **model}, "regime": {"kind": regime, "n": T},
            "metrics": ["params", "test_error"]}


@pytest.mark.parametrize("regime", ["replace", "accumulate"])
def test_test_error_follows_closed_form(run, regime):
    """Fixed design, true noise: the papers' closed forms at several generations."""
    m = run(linreg(regime))
    for g in (0, 1, 5, 15, 30):
        assert abs(z_score(m["test_error"][g], linreg_test_error(SIGMA, D, T, g, regime))) < Z, g
    if regime == "replace":   # linear growth: 31 times generation 0's error
        assert m["test_error"][30].mean() > 20 * m["test_error"][0].mean()
    else:                     # bounded by pi^2/6 times generation 0's error
        assert m["test_error"][30].mean() < linreg_accumulate_bound(SIGMA, D, T)
        assert m["test_error"][30].mean() > 1.3 * m["test_error"][0].mean()


@pytest.mark.parametrize("regime, design, noise", [("replace", "fresh", "source"), ("replace", "fixed", 0.5),
                                                   ("accumulate", "fixed", 3.0)])
def test_other_settings_follow_closed_form(run, regime, design, noise):
    """A fresh design each generation (replace) and synthetic noise s != sigma: (sigma^2 + s^2 ...) d/(T-d-1)."""
    m = run(linreg(regime, chains=1500, generations=11, design=design, noise=noise))
    s = SIGMA if noise == "source" else noise
    for g in (0, 3, 10):
        assert abs(z_score(m["test_error"][g], linreg_test_error(SIGMA, D, T, g, regime, s))) < Z, g
    assert abs(z_score(m["test_error"][10], linreg_test_error(SIGMA, D, T, 10, regime))) > 8 or s == SIGMA


def test_ols_matches_lstsq_and_fitted_noise():
    """Each chain's w is numpy's least-squares solution; 'fitted' noise is sqrt(RSS / (N - d))."""
    exp = validate(linreg(chains=4, noise="fitted"))
    source, fam, _, _ = build(exp)
    data = source.real(T, np.random.default_rng(0))
    fam.fit(data)
    for c in range(4):
        x, y = data[c, :, :D], data[c, :, D]
        w, rss, _, _ = np.linalg.lstsq(x, y, rcond=None)
        assert np.allclose(fam.w[c], w, rtol=1e-10, atol=1e-12)
        assert np.isclose(fam.sigma[c], np.sqrt(rss[0] / (T - D)))
    pairs = fam.sample(T, np.random.default_rng(1))
    assert np.array_equal(pairs[:, :, :D], data[:, :, :D])   # the fixed design is relabelled, not redrawn
    assert not np.array_equal(pairs[:, :, D], data[:, :, D])


def test_contracts():
    """The family (each design and noise mode), the source and the metrics pass the registry contracts."""
    for model in ({"kind": "linreg"}, {"kind": "linreg", "design": "fresh"}, {"kind": "linreg", "noise": "fitted"}):
        contracts.check_family(model)
    contracts.check_source({"kind": "linreg"})
    for name in ("test_error", "params", "nll"):
        contracts.check_metric(name, {"kind": "linreg"}, {"kind": "linreg", "dim": 4})


def test_resume_is_exact(tmp_path):
    """A run stopped after generation 3 and resumed gives the numbers of an uninterrupted run (design kept)."""
    for regime in ("replace", "accumulate"):
        raw = linreg(regime, chains=20, generations=8)
        whole = tmp_path / f"{regime}-whole"
        exp = validate(raw)
        run_generations(exp, RunStore.create(whole, dump(exp)), progress=False)
        part = tmp_path / f"{regime}-part"
        short = validate({**raw, "generations": 4})
        store = RunStore.create(part, dump(short))
        run_generations(short, store, progress=False)
        run_generations(exp, store, progress=False)
        assert np.array_equal(read_metrics(whole)[1], read_metrics(part)[1]), regime


@pytest.mark.parametrize("change, needle", [
    ({"regime": {"kind": "replace", "n": 6}},
     "regime.n: linear regression in 5 dimensions needs more than dim + 1 = 6 rows per generation"),
    ({"source": {"kind": "gaussian"}}, "model.kind: family linreg fits pairs data; source gaussian yields vector data"),
    ({"model": {"kind": "gaussian"}}, "model.kind: family gaussian fits vector data; source linreg yields pairs data"),
    ({"source": {"kind": "gaussian"}, "model": {"kind": "gaussian"}},
     "metrics.1: metric test_error needs pairs data; source gaussian yields vector data"),
    ({"source": {"kind": "linreg", "dim": 3, "weights": [1.0, 2.0]}}, "source.weights: needs 3 entries"),
    ({"model": {"kind": "linreg", "noise": -1.0}}, "model.noise: must be > 0"),
    ({"source": {"kind": "linreg", "noise": 0}}, "source.noise: Input should be greater than 0"),
])
def test_bad_configs_are_refused(change, needle):
    """Each bad setting is one message with its dotted path."""
    with pytest.raises(ConfigError) as e:
        validate({**linreg(chains=2), **change})
    assert needle in str(e.value)


def test_theory_curves_for_figures():
    """The figure draws the replace line, the accumulate curve and its pi^2/6 bound; none where none holds."""
    c = SIGMA ** 2 * D / (T - D - 1)
    rep, acc = validate(linreg("replace")), validate(linreg("accumulate"))
    assert np.allclose(expected(rep, "test_error")(np.array([0, 4])), [c, 5 * c])
    assert np.allclose(expected(acc, "test_error")(np.array([0, 1, 2])), [c, c * 1.25, c * (1.25 + 1 / 9)])
    assert np.isclose(bound(acc, "test_error"), c * np.pi ** 2 / 6) and bound(rep, "test_error") is None
    assert expected(validate(linreg("accumulate", design="fresh")), "test_error") is None
    assert expected(validate(linreg(noise="fitted")), "test_error") is None
    assert expected(rep, "w_norm") is None
