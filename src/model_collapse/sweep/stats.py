"""Statistics across seeds: per grid point, metric and generation, the mean and the median over
seeds with percentile-bootstrap confidence intervals (95%, 1,000 resamples, a fixed seed, so
stats.csv is the same file every time it is computed from the same runs).

The unit is the seed (independent runs); a seed's value at a generation is its run's mean over
chains (with chains: 1, the run's value). Seeds are resampled jointly across generations and
metrics. Only complete runs count; `n` is how many seeds had a value. NaN is missing, +-inf is
a value (a median may be inf, e.g. a collapse that never happened).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..store import atomic_write, read_metrics, save_npz
from .index import read_index

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
SKIP = {"generation", "chain"}


def resample_indices(k: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, k) indices of seeds drawn with replacement: the bootstrap's resamples."""
    return np.random.default_rng(seed).integers(0, k, size=(resamples, k))


def nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean over axis ignoring NaN (NaN where nothing is left), without numpy's warnings."""
    keep = ~np.isnan(x)
    n = keep.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(keep, x, 0.0).sum(axis=axis) / np.maximum(n, 1), np.nan)


def nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    """Median over axis ignoring NaN, vectorised (numpy's nanmedian loops in Python over short rows)."""
    s = np.sort(np.moveaxis(x, axis, -1), axis=-1)   # NaN sorts last
    n = (~np.isnan(s)).sum(axis=-1)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(s, np.maximum(n // 2, 0)[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore"):
        mid = np.where(lo == hi, lo, (lo + hi) / 2)   # inf stays inf
    return np.where(n > 0, mid, np.nan)


def _quantiles(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap statistics (resamples, C); no interpolation, so inf stays inf."""
    tail = round((1 - level) / 2, 12)   # 0.025, not 0.025000000000000022 (one resample off at B = 200)
    q = [tail, 1 - tail]
    fn = np.nanquantile if np.isnan(boot).any() else np.quantile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # columns with no value at all: NaN
        lo, hi = fn(boot, q, axis=0, method="inverted_cdf")
    return lo, hi


def bootstrap(values: np.ndarray, resamples: int = RESAMPLES, level: float = LEVEL,
              seed: int = SEED) -> dict[str, np.ndarray]:
    """Mean and median of each column of values (seeds, columns) with bootstrap intervals.

    Returns arrays (columns,): n, mean, mean_lo, mean_hi, median, median_lo, median_hi."""
    values = np.asarray(values, float)
    if values.ndim == 1:
        values = values[:, None]
    k, c = values.shape
    out = {"n": (~np.isnan(values)).sum(axis=0), "mean": nanmean(values, 0), "median": nanmedian(values, 0)}
    for key in ("mean_lo", "mean_hi", "median_lo", "median_hi"):
        out[key] = np.full(c, np.nan)
    if k == 0 or c == 0:
        return out
    idx = resample_indices(k, resamples, seed)
    step = max(1, int(4e6 // (resamples * k)))   # columns per chunk: ~32 MB of resampled values
    for a in range(0, c, step):
        sample = values[:, a:a + step][idx]        # (resamples, k, chunk)
        for name, fn in (("mean", nanmean), ("median", nanmedian)):
            lo, hi = _quantiles(fn(sample, 1), level)
            out[f"{name}_lo"][a:a + step], out[f"{name}_hi"][a:a + step] = lo, hi
    return out


def seed_table(run: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(metric names, generations (G,), values (G, M)): a run's metrics averaged over its chains."""
    cols, rows = read_metrics(run)
    names = [c for c in cols if c not in SKIP]
    if not len(rows):
        return names, np.zeros(0), np.zeros((0, len(names)))
    g = rows[:, cols.index("generation")]
    data = rows[:, [cols.index(c) for c in names]]
    gens, inv, counts = np.unique(g, return_inverse=True, return_counts=True)
    if (counts == counts[0]).all() and (np.diff(inv) >= 0).all():   # the usual layout: every chain each time
        return names, gens, nanmean(data.reshape(len(gens), int(counts[0]), len(names)), 1)
    sums = np.zeros((len(gens), len(names)))
    seen = np.zeros((len(gens), len(names)))
    finite = ~np.isnan(data)
    np.add.at(sums, inv, np.where(finite, data, 0.0))
    np.add.at(seen, inv, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return names, gens, np.where(seen > 0, sums / np.maximum(seen, 1), np.nan)


def summary_path(sweep: Path, label: str, variant: str | None = None) -> Path:
    """Where a run's chain means are cached: SWEEP/.cache/<point>--seed-<s>[--<variant>].npz."""
    name = label.replace("/", "--") + (f"--{variant}" if variant else "")
    return Path(sweep) / ".cache" / f"{name}.npz"


def summary(run: Path, cache: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """seed_table(run), from its cache when the cache was made from this very metrics.csv.

    Workers write the cache as each run completes, so the statistics of a sweep of large runs
    read a few kilobytes per run instead of re-parsing every metrics.csv (a 1,000-chain run of
    1,000 generations is a 50 MB file)."""
    csv_path = Path(run) / "metrics.csv"
    stamp = f"{csv_path.stat().st_size}:{csv_path.stat().st_mtime_ns}" if csv_path.exists() else ""
    try:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["stamp"]) == stamp:
                return json.loads(str(z["names"])), z["gens"], z["values"]
    except Exception:  # noqa: BLE001 - absent, stale, truncated, not an npz: recompute
        pass
    names, gens, values = seed_table(run)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_npz(cache, {"stamp": np.array(stamp), "names": np.array(json.dumps(names)), "gens": gens,
                         "values": values}, durable=False)
    except OSError:
        pass   # a cache only
    return names, gens, values


@dataclass
class Group:
    """The complete runs of one grid point (and variant): per-seed tables on shared generations."""

    point: str
    values: dict                 # swept key -> value
    variant: str | None
    runs: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    gens: np.ndarray = None
    table: np.ndarray = None     # (seeds, G, M)

    @property
    def label(self) -> str:
        """point, or point/variant."""
        return self.point if self.variant is None else f"{self.point}/{self.variant}"


def _parse(text: str):
    """A swept value back from its text in sweep.csv."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def groups(sweep: Path) -> list[Group]:
    """Every point (x variant) of a sweep with its complete runs loaded, in index order."""
    sweep = Path(sweep)
    rows = read_index(sweep)
    spec = yaml.safe_load((sweep / "sweep.yaml").read_text()) or {}
    keys = [k for key in (spec.get("grid") or {}) for k in str(key).split(",")]
    out: dict[tuple, Group] = {}
    caches: dict[Path, Path] = {}
    for row in rows:
        run = sweep / row["run_dir"]
        variants = sorted(p.name for p in run.iterdir() if (p / "status.json").exists()) \
            if run.is_dir() and not (run / "metrics.csv").exists() else []
        for variant in variants or [None]:
            g = out.setdefault((row["point"], variant), Group(row["point"], {k: _parse(row[k]) for k in keys},
                                                              variant))
            if row["status"] == "complete":
                g.runs.append(run if variant is None else run / variant)
                g.seeds.append(int(row["seed"]))
                caches[g.runs[-1]] = summary_path(sweep, row["run_dir"], variant)
    for g in out.values():
        tables = [summary(r, caches[r]) for r in g.runs]
        if not tables:
            g.gens, g.table = np.zeros(0), np.zeros((0, 0, 0))
            continue
        g.names = tables[0][0]
        g.gens = np.unique(np.concatenate([t[1] for t in tables]))
        g.table = np.full((len(tables), len(g.gens), len(g.names)), np.nan)
        for i, (names, gens, vals) in enumerate(tables):
            cols = [names.index(n) if n in names else None for n in g.names]
            at = np.searchsorted(g.gens, gens)
            for j, c in enumerate(cols):
                if c is not None:
                    g.table[i, at, j] = vals[:, c]
    return list(out.values())


def _fmt(v) -> str:
    """A number as stats.csv writes it."""
    return f"{v:.10g}"


def write_stats(sweep: Path, found: list[Group] | None = None) -> Path:
    """SWEEP/stats.csv: point, swept values, [variant], metric, generation, n, mean (CI), median (CI)."""
    from .spec import show
    sweep = Path(sweep)
    found = groups(sweep) if found is None else found
    keys = list(found[0].values) if found else []
    with_variant = any(g.variant is not None for g in found)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["point", *keys, *(["variant"] if with_variant else []), "metric", "generation", "n",
                "mean", "mean_lo", "mean_hi", "median", "median_lo", "median_hi"])
    stats = ("n", "mean", "mean_lo", "mean_hi", "median", "median_lo", "median_hi")
    for g in found:
        if not g.runs:
            continue
        k, n_gen, n_met = g.table.shape
        res = bootstrap(g.table.reshape(k, n_gen * n_met))
        cols = {s: res[s].reshape(n_gen, n_met) for s in stats}
        head = [g.point, *(show(g.values[key]) for key in keys), *([g.variant or ""] if with_variant else [])]
        for m, name in enumerate(g.names):
            for i, gen in enumerate(g.gens):
                w.writerow([*head, name, int(gen), int(cols["n"][i, m]),
                            *(_fmt(cols[s][i, m]) for s in stats[1:])])
    path = sweep / "stats.csv"
    atomic_write(path, buf.getvalue().encode(), durable=False)
    return path
