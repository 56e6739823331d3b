"""Contract tests run over every registry entry: a new entry is tested the moment it is registered."""

import numpy as np
import pytest

from model_collapse.config import validate
from model_collapse.families import FAMILIES
from model_collapse.loop import build
from model_collapse.regimes import REGIMES
from model_collapse.sources import SOURCES

VECTOR_SOURCE = {"kind": "gmm", "weights": [0.3, 0.7], "means": [[-2.0, 0.0], [2.0, 1.0]],
                 "stds": [[1.0, 0.5], [0.7, 1.0]]}
GAUSS_SOURCE = {"kind": "gaussian", "mean": [1.0, -1.0], "cov": [[2.0, 0.6], [0.6, 1.0]]}
SOURCE_FOR = {"vector": VECTOR_SOURCE, "category": {"kind": "categorical", "k": 6, "dist": "zipf"}}
# A well-specified truth per family (the likelihood test needs the family to contain the truth).
TRUTH_FOR = {"gaussian": GAUSS_SOURCE, "kde": GAUSS_SOURCE}
DIST_FAMILIES = [k for k, v in FAMILIES.items() if v[2] in SOURCE_FOR]


def make(kind: str, chains: int = 3, regime=None):
    """Build (source, model, regime) for a family on a suitable source."""
    exp = validate({"chains": chains, "generations": 3,
                    "source": TRUTH_FOR.get(kind, SOURCE_FOR[FAMILIES[kind][2]]),
                    "model": {"kind": kind}, "regime": regime or {"kind": "replace", "n": 400}})
    return exp, *build(exp)[:3]


@pytest.mark.parametrize("kind", DIST_FAMILIES)
def test_family_contract(kind):
    """fit/sample shapes, finite params with (S,) columns, deterministic sampling, state round trip."""
    exp, source, model, _ = make(kind)
    rng = np.random.default_rng(0)
    data = source.real(400, rng)
    model.fit(data, np.random.default_rng(1))
    s = model.sample(50, np.random.default_rng(2))
    assert np.asarray(s).shape[:2] == (3, 50)
    for name, col in model.params().items():
        assert np.shape(col) == (3,), name
        assert np.all(np.isfinite(col)), name
    again = model.sample(50, np.random.default_rng(2))
    assert np.array_equal(s, again)
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    _, _, other, _ = make(kind)
    other.load_state_dict(state)
    assert np.array_equal(other.sample(50, np.random.default_rng(2)), s)
    ref = source.reference(30, rng)
    lp = model.log_prob(ref)
    assert lp.shape == (3, 30) and np.all(np.isfinite(lp))


@pytest.mark.parametrize("kind", DIST_FAMILIES)
def test_family_fits_truth_with_much_data(kind):
    """With plenty of true data, the held-out log-likelihood is close to the truth's own."""
    exp, source, model, _ = make(kind, chains=2)
    rng = np.random.default_rng(0)
    n = 3000 if kind == "kde" else 20000  # a KDE's log_prob costs O(N M)
    model.fit(source.real(n, rng), np.random.default_rng(1))
    ref = source.reference(2000, rng)
    gap = source.truth.log_prob(ref)[0].mean() - model.log_prob(ref).mean(axis=1)
    assert np.all(np.abs(gap) < 0.1), gap


@pytest.mark.parametrize("kind", list(REGIMES))
def test_regime_contract(kind):
    """Training-set sizes follow the regime's rule; nothing is modified in place."""
    regime_cfg = {"kind": kind, "n": 40}
    if kind == "mix":
        regime_cfg.update(truth=0.25, real=0.25, previous=0.25, fitted=0.25, grow=10)
    exp, source, model, regime = make("gaussian" if "gaussian" in FAMILIES else DIST_FAMILIES[0],
                                      regime=regime_cfg)
    rng = np.random.default_rng(0)
    real = source.real(regime.size(0), rng)
    frozen = real.copy()
    regime.first(real)
    model.fit(real)
    sizes = []
    for g in range(1, 5):
        samples = model.sample(regime.samples_needed(g - 1), rng)
        train = regime.next(g, samples, real, source, rng)
        sizes.append(train.shape[1])
        model.fit(train)
    assert np.array_equal(real, frozen)
    expected = {"replace": [40] * 4, "accumulate": [80, 120, 160, 200], "accumulate-subsample": [40] * 4,
                "mix": [50, 60, 70, 80], "schedule": [40] * 4}[kind]
    assert sizes == expected


def test_sources_registered():
    """Distribution sources build from defaults with a truth; image sources give the label-last layout."""
    for kind, (cfg_cls, ctor) in SOURCES.items():
        if kind in ("gaussian", "gmm", "categorical"):
            assert ctor(cfg_cls(), 2).truth is not None
    src = SOURCES["digits"][1](SOURCES["digits"][0](kind="digits"), 2)
    real = src.real(100, np.random.default_rng(0))
    assert real.shape == (2, 100, 65) and real.dtype == np.uint8
    assert set(np.unique(real[..., -1])) <= set(range(10))
    assert src.reference(50, np.random.default_rng(0)).shape == (50, 65)
