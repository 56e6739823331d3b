"""The engine against closed forms, across many chains.

Tolerance: each check is a z-test of a Monte-Carlo mean over S >= 1,000
independent chains against its exact expectation, |z| < 4 (a false alarm
rate of ~6e-5 per check).
"""

import numpy as np
import pytest

Z = 4.0


def z_score(samples: np.ndarray, expected: float) -> float:
    """(mean - expected) / standard error."""
    return (samples.mean() - expected) / (samples.std(ddof=1) / np.sqrt(len(samples)))


def gaussian(n, ddof=0, chains=4000, generations=31, summary=False, dim=1, seed=1):
    """A replace experiment on N(0, I_d)."""
    src = {"kind": "gaussian", "mean": [0.0] * dim}
    if dim > 1:
        src["cov"] = (np.diag(np.arange(1, dim + 1.0)) + 0.3).tolist()
    return {"seed": seed, "chains": chains, "generations": generations, "source": src,
            "model": {"kind": "gaussian", "ddof": ddof, "summary": summary},
            "regime": {"kind": "replace", "n": n}, "metrics": ["params"]}


@pytest.mark.parametrize("summary", [False, True])
def test_mle_variance_shrinks_as_theory(run, summary):
    """Replace, MLE: E[var_t / var_0] = ((N-1)/N)^t and E[(m_t - m_0)^2 / var_0] = 1 - ((N-1)/N)^t."""
    n = 10
    m = run(gaussian(n, summary=summary))
    r = (n - 1) / n
    for t in (1, 5, 15, 30):
        assert abs(z_score(m["var"][t] / m["var"][0], r ** t)) < Z, t
        drift = (m["mean"][t] - m["mean"][0]) ** 2 / m["var"][0]
        assert abs(z_score(drift, 1 - r ** t)) < Z, t
    # The signal is large compared with the tolerance: the test could fail.
    assert m["var"][30].mean() < 0.1


@pytest.mark.parametrize("summary", [False, True])
def test_unbiased_variance_is_constant_in_expectation(run, summary):
    """Replace, unbiased (ddof=1): E[var_t] = var for every t, while the median falls."""
    m = run(gaussian(10, ddof=1, summary=summary, chains=6000, generations=21))
    for t in (0, 5, 20):
        assert abs(z_score(m["var"][t], 1.0)) < Z, t
    assert np.median(m["var"][20]) < 0.6  # single chains still collapse


@pytest.mark.parametrize("summary", [False, True])
def test_multivariate_trace_shrinks(run, summary):
    """d-dim replace, MLE: E[tr Cov_t / tr Cov_0] = ((N-1)/N)^t."""
    n = 12
    m = run(gaussian(n, dim=3, summary=summary, chains=3000, generations=21))
    r = (n - 1) / n
    for t in (1, 10, 20):
        assert abs(z_score(m["trace"][t] / m["trace"][0], r ** t)) < Z, t


@pytest.mark.parametrize("summary", [False, True])
def test_categorical_gini_decays(run, summary):
    """Categorical replace: E[1 - sum p^2]_g = (1 - 1/K)(1 - 1/N)^(g+1) (uniform truth)."""
    k, n = 5, 20
    m = run({"seed": 3, "chains": 4000, "generations": 41,
             "source": {"kind": "categorical", "k": k},
             "model": {"kind": "categorical", "summary": summary},
             "regime": {"kind": "replace", "n": n}, "metrics": ["params"]})
    for g in (0, 10, 40):
        assert abs(z_score(m["gini"][g], (1 - 1 / k) * (1 - 1 / n) ** (g + 1))) < Z, g
    assert (m["surviving"][40] < k).mean() > 0.5  # categories are really being lost


def test_accumulate_keeps_variance(run):
    """Accumulate (Gerstgrasser et al. 2024): the pool grows, variance stays near truth; replace collapses."""
    base = gaussian(10, chains=2000, generations=31)
    acc = run({**base, "regime": {"kind": "accumulate", "n": 10}})
    rep = run(base)
    assert acc["var"][30].mean() > 0.7
    assert rep["var"][30].mean() < 0.1


def test_schedule_share_follows_shape():
    """The linear schedule goes from start to end over `over` generations."""
    from model_collapse.regimes.basic import ScheduleConfig
    s = ScheduleConfig(start=0.0, end=1.0, over=10)
    assert [s.synthetic_share(g) for g in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
