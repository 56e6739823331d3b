"""Bookkeeping after the work: the bootstrap's shortcuts give the numbers of sorting every resample,
figures evaluate only what they draw, --no-figures draws nothing, and plots use public helpers."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from model_collapse.cli import main
from model_collapse.families.kde import KDEFamily
from model_collapse.plots import plot_run
from model_collapse.plots.density import chain_state, resolution
from model_collapse.sweeps import bootstrap as B

SRC = Path(__file__).resolve().parents[1] / "src" / "model_collapse"


def reference(values: np.ndarray, resamples: int, seed: int) -> dict:
    """The plain bootstrap: gather every resample, take its mean and median, then the percentiles."""
    idx = B.resample_indices(values.shape[0], resamples, seed)
    sample = values[idx]                                   # (resamples, k, C)
    out = {}
    for name, fn in (("mean", B.nanmean), ("median", B.nanmedian)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a column with no value: NaN
            lo, hi = np.nanquantile(fn(sample, 1), [0.025, 0.975], axis=0, method="inverted_cdf")
        out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5, 12])
def test_bootstrap_equals_sorting_every_resample(k):
    """Ties, NaN, +-inf and -0.0 (a mean): the intervals are identical bit for bit, signs of zero too."""
    rng = np.random.default_rng(k)
    v = rng.normal(size=(k, 900))
    v[:, :300] = np.round(v[:, :300]) + 0.0               # ties
    m = rng.random(v.shape)
    v[m < 0.08] = np.nan
    v[(m > 0.08) & (m < 0.11)] = np.inf
    v[(m > 0.11) & (m < 0.13)] = -np.inf
    v[:, 5] = np.nan                                       # a column with no value
    v[:, 6] = -0.0
    for resamples in (200, 37):
        got, want = B.bootstrap(v, resamples, seed=k), reference(v, resamples, k)
        for key, ref in want.items():
            assert np.array_equal(got[key], ref, equal_nan=True), key
            assert np.array_equal(np.signbit(got[key]), np.signbit(ref)), key


def test_many_seeds_take_the_plain_path_and_agree():
    """40 seeds: nearly every column sorts its own way; the numbers are still the plain bootstrap's."""
    v = np.random.default_rng(0).gamma(2.0, size=(40, 120))
    got, want = B.bootstrap(v, 300, seed=3), reference(v, 300, 3)
    assert all(np.array_equal(got[key], want[key]) for key in want)


KDE2D = {"name": "kde2d", "chains": 6, "generations": 4, "reference_n": 100,
         "source": {"kind": "gaussian", "mean": [0.0, 0.0], "std": [1.0, 1.0]},
         "model": {"kind": "kde"}, "regime": {"kind": "accumulate", "n": 150}, "metrics": ["params"],
         "snapshots": [0, 3]}


def test_density_evaluates_chain_zero_only_on_a_grid_sized_by_the_state(tmp_path, monkeypatch, run):
    """A 2-D KDE run's density.png: every log_prob call holds one chain, and the grid shrinks as
    the KDE's points grow (the pool of 600 points here, and one of 10,000 per chain)."""
    run(KDE2D)
    path = tmp_path / "run0"   # where the conftest fixture puts its first run
    calls = []
    original = KDEFamily.log_prob

    def spy(self, x, *a, **kw):
        calls.append((self.chains, self.points.shape[0], len(x)))
        return original(self, x, *a, **kw)

    monkeypatch.setattr(KDEFamily, "log_prob", spy)
    written = plot_run(path)
    assert path / "figures" / "density.png" in written
    assert len(calls) == 2 and all(c[0] == 1 and c[1] == 1 for c in calls), calls
    small = {0: {"points": np.zeros((6, 600, 2)), "kcov": np.zeros((6, 2, 2))}}
    large = {0: {"points": np.zeros((50, 10_000, 2)), "kcov": np.zeros((50, 2, 2))}}
    assert resolution(small, 6, (40, 120), 2) == 120 > resolution(large, 50, (40, 120), 2) >= 40
    part = chain_state({"points": np.arange(12).reshape(6, 2), "scale": np.array(3.0)}, 6, 1)
    assert part["points"].tolist() == [[0, 1]] and float(part["scale"]) == 3.0


def test_sweep_no_figures_writes_stats_but_no_png(tmp_path):
    """`collapse sweep --no-figures`: stats.csv, and no figures directory's sweep.png."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**KDE2D, "name": "tiny", "chains": 2, "generations": 3,
                                   "source": {"kind": "gaussian"}, "model": {"kind": "gaussian"},
                                   "regime": {"kind": "replace", "n": 10}, "snapshots": []}))
    out = tmp_path / "sweep"
    assert main(["sweep", str(cfg), "--grid", "regime.n=10,20", "--out", str(out), "--quiet", "--no-figures"]) == 0
    assert (out / "stats.csv").read_text().startswith("point,regime.n,metric,generation")
    assert not (out / "figures" / "sweep.png").exists()
    assert not list(out.rglob("*.png"))


def test_plots_use_no_private_name_of_another_module():
    """plots/ and sweeps/figures.py import only public names from each other (issue 13, part 6)."""
    files = [*sorted((SRC / "plots").glob("*.py")), SRC / "sweeps" / "figures.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__all__"]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_large_tables_parse_to_the_same_floats(tmp_path, monkeypatch):
    """read_metrics' pandas path for large CSVs gives the very floats of the exact path (NaN, +-inf,
    -0.0, 1e-300 included), and a row with a missing field is still a CorruptRunError naming its line."""
    from model_collapse import store
    from model_collapse.errors import CorruptRunError
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(3000, 5)) * 10.0 ** rng.integers(-300, 300, size=(3000, 5))
    vals[::7, 1], vals[::11, 2], vals[::13, 3], vals[::17, 4] = np.nan, np.inf, -np.inf, -0.0
    rows = [("%d,%d" + ",%.10g" * 5) % (i // 100, i % 100, *r) for i, r in enumerate(vals.tolist())]
    (tmp_path / "metrics.csv").write_text("\n".join(["generation,chain,a,b,c,d,e", *rows]) + "\n")
    monkeypatch.setattr(store, "LARGE_CSV", 1 << 60)
    cols, exact = store.read_metrics(tmp_path)
    monkeypatch.setattr(store, "LARGE_CSV", 0)
    cols2, fast = store.read_metrics(tmp_path)
    assert cols == cols2 and fast.shape == exact.shape == (3000, 7)
    assert np.array_equal(fast, exact, equal_nan=True) and np.array_equal(np.signbit(fast), np.signbit(exact))
    rows[1234] = rows[1234].rsplit(",", 1)[0]
    (tmp_path / "metrics.csv").write_text("\n".join(["generation,chain,a,b,c,d,e", *rows]) + "\n")
    with pytest.raises(CorruptRunError, match="line 1236"):
        store.read_metrics(tmp_path)
