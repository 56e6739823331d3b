"""Contract checks for every kind of component: built-in entries and plugins alike.

model_collapse.testing wraps them as test base classes (FamilyContract, ...) that
tests/test_contracts.py subclasses for every registry entry and a plugin's tests subclass
for its own components. Each raises AssertionError with a message saying which rule failed.
"""

from __future__ import annotations

import numpy as np

from .config import validate
from .kinds import CAPABILITIES, CAPABILITY_METHODS, DATA_KINDS
from .loop import build, build_metrics
from .metrics import Context

# A small source of each data kind, and settings that make a family quick to fit on it.
SOURCE_FOR = {
    "vector": {"kind": "gmm", "weights": [0.3, 0.7], "means": [[-2.0, 0.0], [2.0, 1.0]],
               "stds": [[1.0, 0.5], [0.7, 1.0]]},
    "category": {"kind": "categorical", "k": 6, "dist": "zipf"},
    "image": {"kind": "digits"},
    "text": {"kind": "zipf-markov", "vocab": 40, "block": 16, "train_tokens": 16 * 300},
    "pairs": {"kind": "linreg", "dim": 3},
}
N = {"vector": 400, "category": 400, "image": 300, "text": 300}


def experiment(model: dict, source: dict | None = None, chains: int = 3, regime: dict | None = None, **extra):
    """A validated experiment for a family config on a suitable (or the given) source."""
    from .plugins import find
    cls = find("families", model["kind"])
    assert cls is not None, f"no family '{model['kind']}'"
    kinds = sorted(cls.data_kinds)
    assert kinds and set(kinds) <= set(DATA_KINDS), f"{model['kind']}: data_kinds {kinds} not in {list(DATA_KINDS)}"
    source = source or SOURCE_FOR[next(k for k in kinds if k in SOURCE_FOR)]
    data_kind = find("sources", source["kind"])(**source).declare().data_kind
    raw = {"chains": chains, "generations": 3, "source": source,
           "model": {**cls.example, **model},   # the family's own quick example, then what was asked
           "regime": regime or {"kind": "replace", "n": N.get(data_kind, 300)}, **extra}
    return validate(raw)


# Sources a metric may be tried on, cheapest first (the image one with the small reference classifier).
METRIC_SOURCES = [{"kind": "gaussian"}, {"kind": "gmm"}, {"kind": "categorical", "k": 5}, {"kind": "linreg"},
                  SOURCE_FOR["text"], {"kind": "digits", "classifier": "mlp"}, {"kind": "toy", "shape": "ring"}]


def metric_example(entry) -> tuple[dict, dict]:
    """(model, source) to run a metric on: the first registered family and METRIC_SOURCES source whose
    declarations the metric's needs fit, found by validation (so a new metric needs no table)."""
    from .errors import ConfigError
    from .plugins import registry
    for source in METRIC_SOURCES:
        for kind in registry("families"):
            try:
                experiment({"kind": kind}, source, metrics=[entry])
            except (ConfigError, AssertionError):
                continue
            return {"kind": kind}, source
    raise AssertionError(f"no registered family and source fit the needs of metric {entry!r}")


def _same(a, b) -> bool:
    """Equal arrays, NaN equal to NaN (a metric may have no value yet, e.g. at generation 0)."""
    a, b = np.asarray(a), np.asarray(b)
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc")


def check_family(model: dict, source: dict | None = None, chains: int = 3) -> None:
    """fit/sample shapes, (S,) finite params, deterministic sampling, state round trip, declared capabilities."""
    exp = experiment(model, source, chains)
    src_decl = exp.source.declare()
    caps = exp.model.capabilities(src_decl)
    assert set(caps) <= set(CAPABILITIES), f"unknown capabilities {set(caps) - set(CAPABILITIES)}"
    source, fam, regime, _ = build(exp)
    for cap in caps:   # a declared capability promises every method and attribute it implies
        for attr in CAPABILITY_METHODS.get(cap, ()):
            obj = fam
            for part in attr.split("."):
                assert hasattr(obj, part), f"capability {cap!r} needs {attr!r}, which the fitted family lacks"
                obj = getattr(obj, part)
    n = regime.size(0)
    fam.fit(source.real(n, np.random.default_rng(0)), np.random.default_rng(1))
    s = fam.sample(50, np.random.default_rng(2))
    if "items" in caps:
        assert np.asarray(s).shape[:2] == (chains, 50), f"sample(50) gave shape {np.shape(s)}"
        assert _same(s, fam.sample(50, np.random.default_rng(2))), "sampling is not determined by the rng"
    for name, col in fam.params().items():
        assert np.shape(col) == (chains,), f"params()[{name!r}] has shape {np.shape(col)}, expected ({chains},)"
        assert np.all(np.isfinite(col)), f"params()[{name!r}] is not finite after a fit on true data"
    state = {k: np.array(v) for k, v in fam.state_dict().items()}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    other = build(exp)[1]
    other.load_state_dict(state)
    if "items" in caps:
        assert _same(other.sample(50, np.random.default_rng(2)), s), "a loaded state samples differently"
    ref = source.reference(30, np.random.default_rng(3))
    if "log_prob" in caps:
        lp = fam.log_prob(ref)
        assert lp.shape == (chains, 30) and np.all(np.isfinite(lp)), "log_prob must give finite (S, M)"
    if "cdf" in caps:
        f = fam.cdf(np.linspace(-5, 5, 11))
        assert f.shape == (chains, 11) and np.all(np.diff(f, axis=1) >= -1e-12), "cdf must be (S, G), rising"
    if "moments" in caps:
        m, c = fam.moments()
        assert m.shape[0] == c.shape[0] == chains
    if "encode" in caps:
        z = fam.encode_mean(ref[None])
        assert z.shape[:2] == (chains, 30)
    if "decode" in caps:
        assert fam.decode(np.zeros((chains, 5, fam.latent_dim))).shape[:2] == (chains, 5)


# A model and source for filters that judge images (the reference classifier of the 8x8 digits).
FILTER_ON = {"image": ({"kind": "vae"}, {"kind": "digits", "classifier": "mlp"})}


def check_filter(filt: dict, model: dict | None = None, chains: int = 3, source: dict | None = None) -> None:
    """A filter returns a (S, n) boolean keep mask, determined by its rng, and fills a generation;
    one with state (state_dict/load_state_dict) filters a later generation the same after a round trip.
    A filter with begin() is called as the stage calls it: begin() first."""
    from .filters.stage import filtered_sample
    from .plugins import find
    cls = find("filters", filt["kind"])
    filt = {**cls.example, **filt}   # the filter's own quick example, then what was asked
    kinds = cls.needs.kinds
    if model is None and kinds and "vector" not in kinds and kinds[0] in FILTER_ON:
        model, source = FILTER_ON[kinds[0]][0], source or FILTER_ON[kinds[0]][1]
    if source is None and cls.needs.source:   # a filter that needs more of its source: the first that fits
        from .errors import ConfigError
        for candidate in METRIC_SOURCES:
            try:
                experiment(model or {"kind": "gaussian"}, candidate, chains=chains, filter=filt)
            except (ConfigError, AssertionError):
                continue
            source = candidate
            break
    exp = experiment(model or {"kind": "gaussian"}, source, chains=chains, filter=filt)
    source, fam, regime, f = build(exp)
    fresh = getattr(f, "begin", lambda: None)
    fam.fit(source.real(regime.size(0), np.random.default_rng(0)), np.random.default_rng(1))
    x = fam.sample(200, np.random.default_rng(2))
    fresh()
    keep = np.asarray(f(x, fam, np.random.default_rng(3)))
    assert keep.shape == (chains, 200) and keep.dtype == bool, f"keep mask {keep.shape} {keep.dtype}"
    fresh()
    assert _same(keep, f(x, fam, np.random.default_rng(3))), "the keep mask is not determined by the rng"
    out, rate = filtered_sample(fam, f, 100, np.random.default_rng(4), np.random.default_rng(5), 20)
    assert out.shape[:2] == (chains, 100) and rate.shape == (chains,) and np.all((rate > 0) & (rate <= 1))
    if hasattr(f, "state_dict"):   # a resumed run rebuilds the filter and loads its checkpointed state
        state = {k: np.array(v) for k, v in f.state_dict().items()}
        assert all(isinstance(k, str) for k in state), "state_dict keys must be strings"
        fam.fit(out, np.random.default_rng(6))   # a later generation
        x = fam.sample(200, np.random.default_rng(7))
        other = build(exp)[3]
        other.load_state_dict(state)
        fresh()
        getattr(other, "begin", lambda: None)()
        assert _same(f(x, fam, np.random.default_rng(8)), other(x, fam, np.random.default_rng(8))), \
            "a filter restored from its state_dict keeps differently: a resumed run would differ"


def check_metric(entry, model: dict, source: dict | None = None, chains: int = 3) -> None:
    """A metric gives (S,) columns, the same ones at every generation, determined by its inputs."""
    exp = experiment(model, source, chains, metrics=[entry])
    source_obj, fam, regime, _ = build(exp)
    real = source_obj.real(regime.size(0), np.random.default_rng(0))
    ref = source_obj.reference(200, np.random.default_rng(1))
    states, samples = [], []
    for g in range(2):   # two generations of the model, kept to replay
        fam.fit(real, np.random.default_rng(10 + g))
        states.append(fam.state_dict())
        samples.append(fam.sample(regime.samples_needed(g), np.random.default_rng(20 + g)))
    runs = []
    for _ in range(2):   # twice, with fresh metric instances: the same numbers
        (fn,) = build_metrics(exp).values()
        store, out = _ScratchStore(), []
        for g in range(2):
            fam.load_state_dict(states[g])
            store.generation = g
            out.append(fn(Context(g, fam, samples[g], real, source_obj, ref, np.random.default_rng(30), store, exp)))
        runs.append(out)
    for a, b in zip(*runs):
        assert list(a) == list(b) and all(_same(a[k], b[k]) for k in a), "the metric is not deterministic"
        for k, v in a.items():
            assert np.shape(v) == (chains,), f"column {k} has shape {np.shape(v)}, expected ({chains},)"
    assert list(runs[0][0]) == list(runs[0][1]), "columns changed between generations"


class _ScratchStore:
    """What a metric may call on a store (tables and arrays), kept in memory."""

    def __init__(self):
        self.generation, self.tables, self.saved = 0, [], {}

    def add_table(self, name, rows, generation=None):
        self.tables.append((name, rows))

    def save_array(self, name, generation, array):
        self.saved[(name, generation)] = array


def check_regime(regime: dict, model: dict | None = None) -> list[int]:
    """Training sets are non-empty, one per chain, and real data is never modified; returns the sizes."""
    exp = experiment(model or {"kind": "gaussian"}, regime=regime)
    source, fam, reg, _ = build(exp)
    rng = np.random.default_rng(0)
    real = source.real(reg.size(0), rng)
    frozen = np.array(real, copy=True)
    reg.first(real)
    fam.fit(real, rng)
    sizes = []
    for g in range(1, 5):
        train = reg.next(g, fam.sample(reg.samples_needed(g - 1), rng), real, source, rng)
        assert train.shape[0] == fam.chains and train.shape[1] > 0, f"generation {g}: training set {train.shape}"
        sizes.append(train.shape[1])
        fam.fit(train, rng)
    assert _same(real, frozen), "the regime modified the real data in place"
    return sizes


def check_source(cfg: dict, chains: int = 2) -> None:
    """A source declares a known data kind and gives (S, n, ...) real, fresh and (M, ...) reference data."""
    from .plugins import find
    cls = find("sources", cfg["kind"])
    conf = cls(**cfg)
    decl = conf.declare()
    assert decl.data_kind in DATA_KINDS and set(decl.caps) <= set(CAPABILITIES)
    src = conf.build(chains)
    real = src.real(40, np.random.default_rng(0))
    assert np.shape(real)[:2] == (chains, 40)
    assert np.shape(src.fresh(10, np.random.default_rng(1)))[:2] == (chains, 10)
    ref = src.reference(30, np.random.default_rng(2))
    assert np.shape(ref)[0] == 30 and np.shape(ref)[1:] == np.shape(real)[2:]
    if "truth" in decl.caps:
        assert src.truth is not None
