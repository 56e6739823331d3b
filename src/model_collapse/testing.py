"""Contract test suites that every component inherits: built-in entries and plugins alike.

One base class per component type, as `optuna.testing` does for samplers and storages. A test
class subclasses one and names its component; pytest collects the inherited `test_*` methods:

    from model_collapse.testing import MetricContract

    class TestSpread(MetricContract):
        metric = {"name": "mypkg:spread", "q": 0.75}     # a family and source are found for it

tests/test_contracts.py makes one such class per registry entry, so registering a family,
filter, metric, regime or source is enough for it to be tested: each config declares its own quick
example (`example`, a ClassVar of extra fields; regimes also `example_sizes`), and a metric is run
on the first family and source whose declarations it fits. The rules themselves are the
`check_*` functions of model_collapse.contracts; each failure says which rule broke.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from . import contracts


class _Isolated:
    """Every contract test gets its own cache directory (reference classifiers, data)."""

    @pytest.fixture(autouse=True)
    def _own_cache(self, tmp_path, monkeypatch):
        monkeypatch.setenv("MODEL_COLLAPSE_CACHE", str(tmp_path / "cache"))


class FamilyContract(_Isolated):
    """fit/sample shapes, finite (S,) params, deterministic sampling, a state round trip, and every
    declared capability's methods (contracts.check_family)."""

    family: ClassVar[dict] = {}           # {"kind": ..., fields...}; the config's `example` is added
    source: ClassVar[dict | None] = None  # default: a small source of the family's data kind
    chains: ClassVar[int] = 3

    def test_family_contract(self):
        contracts.check_family(self.family, self.source, self.chains)


class FilterContract(_Isolated):
    """A (S, n) boolean keep mask, determined by its rng, filling a generation through the stage;
    a stateful filter keeps the same after a state round trip (contracts.check_filter)."""

    filter: ClassVar[dict] = {}
    model: ClassVar[dict | None] = None
    source: ClassVar[dict | None] = None

    def test_filter_contract(self):
        if self.filter.get("kind") == "none":
            from .filters import FILTERS
            assert FILTERS["none"]().build(None) is None   # no stage at all: the loop skips it
            return
        contracts.check_filter(self.filter, self.model, source=self.source)


class MetricContract(_Isolated):
    """(S,) columns, the same ones at every generation, deterministic (contracts.check_metric); run on
    the given model and source, or on the first built-in pair its declared needs fit."""

    metric: ClassVar[str | dict] = ""
    model: ClassVar[dict | None] = None
    source: ClassVar[dict | None] = None

    def test_metric_contract(self):
        model, source = (self.model, self.source) if self.model else contracts.metric_example(self.metric)
        contracts.check_metric(self.metric, model, source, chains=2 if model.get("kind") == "vae" else 3)


class RegimeContract(_Isolated):
    """Non-empty training sets, one per chain, real data never modified (contracts.check_regime), and the
    sizes the regime declares for its example (`example_sizes`)."""

    regime: ClassVar[dict] = {}

    def test_regime_contract(self):
        from .plugins import find
        cls = find("regimes", self.regime["kind"])
        sizes = contracts.check_regime({**cls.example, **self.regime})
        expected = cls.example_sizes
        if expected and set(self.regime) == {"kind"}:
            assert sizes == list(expected), f"training-set sizes {sizes}, the regime declares {list(expected)}"


class SourceContract(_Isolated):
    """A known data kind and capabilities; (S, n, ...) real and fresh data, (M, ...) reference data
    (contracts.check_source)."""

    source: ClassVar[dict] = {}

    def test_source_contract(self):
        contracts.check_source(self.source)


__all__ = ["FamilyContract", "FilterContract", "MetricContract", "RegimeContract", "SourceContract"]
